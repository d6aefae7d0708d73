"""What a stage knows besides its inputs: the resolved configuration, where the run's data lives, the
MLflow parent run and the lineage (git sha, pipeline version, run name). Built from the pipeline
parameters every component receives."""

from __future__ import annotations

from dataclasses import dataclass

from t2v import storage, tracking
from t2v.config import ProjectConfig

#: the run context: the pipeline parameters every task of a run receives
CONTEXT_KEYS = ("config_json", "run_root", "tracking_uri", "parent_run_id", "pipeline_version", "git_sha", "run_name")


@dataclass
class StageContext:
    config: ProjectConfig
    run_root: str
    tracking_uri: str
    parent_run_id: str
    pipeline_version: str = "dev"
    git_sha: str = "unknown"
    run_name: str = "local"

    @classmethod
    def from_params(cls, config_json: str, **params: str) -> StageContext:
        """From the pipeline parameters every task receives (:data:`CONTEXT_KEYS`)."""
        unknown = set(params) - set(CONTEXT_KEYS)
        if unknown:
            raise TypeError(f"unknown run context parameter(s): {', '.join(sorted(unknown))}")
        if params.get("tracking_uri"):  # a password inside the URI moves to MLFLOW_TRACKING_PASSWORD (t2v.secrets)
            from t2v.secrets import adopt_uri_credentials

            params["tracking_uri"] = adopt_uri_credentials(params["tracking_uri"])
        return cls(config=ProjectConfig.from_json(config_json), **params)

    def stage_uri(self, stage: str) -> str:
        """``<run root>/<stage>``: where a stage writes its bulk outputs and its manifest."""
        return storage.join(self.run_root, stage)

    @property
    def tags(self) -> dict[str, str]:
        """The lineage tags every child run carries (the parent run carries the same)."""
        return tracking.lineage_tags(self.config, self.run_name, self.git_sha, self.pipeline_version)
