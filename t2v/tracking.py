"""MLflow tracking: one parent run per pipeline run, one child run per stage.

The parent run is created before the pipeline starts (``t2v run`` / ``t2v submit``) and its id is a
pipeline parameter; each component opens its child run under it; the pipeline's exit handler closes the
parent with the pipeline's final status. Every run carries the same lineage tags (git sha, pipeline
version, config hash, KFP run name).
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from t2v.secrets import redact

log = logging.getLogger(__name__)

TAG_GIT_SHA = "t2v.git_sha"
TAG_PIPELINE_VERSION = "t2v.pipeline_version"
TAG_CONFIG_HASH = "t2v.config_hash"
TAG_RUN_NAME = "t2v.run_name"
TAG_STAGE = "t2v.stage"
TAG_PROFILE = "t2v.profile"
TAG_KFP_RUN_ID = "t2v.kfp_run_id"


def git_sha(default: str = "unknown") -> str:
    """The commit the code runs from: ``T2V_GIT_SHA`` (baked into images) or ``git rev-parse``."""
    if os.environ.get("T2V_GIT_SHA"):
        return os.environ["T2V_GIT_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0:
            sha = out.stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return default


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db`` (components run in other folders)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///") :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def lineage_tags(config, run_name: str, sha: str, version: str) -> dict[str, str]:
    """The tags that tie an MLflow run to its code, configuration and pipeline run (a parent run and
    each of its stages' child runs carry them)."""
    return {
        TAG_GIT_SHA: sha,
        TAG_PIPELINE_VERSION: version,
        TAG_CONFIG_HASH: config.config_hash(),
        TAG_RUN_NAME: run_name,
        TAG_PROFILE: config.profile,
    }


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` with values cut to MLflow's 6000-character limit."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = redact(str(value))[:6000]
    return out


def _mlflow(tracking_uri: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow


#: the MLflow UI opens an experiment in its model-training view (runs, metrics, models), not the GenAI one
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(tracking_uri: str, name: str, artifact_location: str | None = None) -> str:
    mlflow = _mlflow(tracking_uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(
            name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    else:
        experiment_id = experiment.experiment_id
        if EXPERIMENT_KIND_TAG not in (experiment.tags or {}):  # one made before the tag, or by hand
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def start_parent_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
    artifact_location: str | None = None,
) -> str:
    """Create the pipeline's parent run (status RUNNING) and return its id."""
    mlflow = _mlflow(tracking_uri)
    client = mlflow.MlflowClient()
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    if params:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[start : start + 100])
    return run.info.run_id


def log_to_parent(
    tracking_uri: str, parent_run_id: str, metrics: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
) -> None:
    """A stage's headline figures on the pipeline's parent run, where a reviewer lands (None values are
    left out)."""
    if not parent_run_id:
        return
    import time

    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client = _mlflow(tracking_uri).MlflowClient()
    client.log_batch(
        parent_run_id,
        # four decimals: the UI prints a metric's every digit, and a headline score needs no more
        metrics=[Metric(k, round(float(v), 4), now, 0) for k, v in (metrics or {}).items() if v is not None],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items() if v is not None],
    )


#: the parent run's headline metrics (what stages log with :func:`log_to_parent`) and how the note names them
HEADLINE_METRICS = {
    "eval/score": "score (challenger)",
    "eval/start_score": "score before its last stage",
    "eval/champion_score": "champion's score, same prompts and seeds",
    "eval/win_rate_vs_champion": "win rate against the champion",
    "eval/untrained_score": "untrained DiT (floor)",
    "eval/vae_ceiling": "VAE round trip of the true videos (ceiling)",
    "dpo/reward_after": "DPO reward on its training prompts, after",
}
TAG_NOTE = "mlflow.note.content"  # the run's description in the MLflow UI


def parent_description(run, state: str) -> str:
    """The parent run's description (Markdown): the job, its state, the gate decision, the headline
    scores, the model versions it registered (linked) and where the report is."""
    tags, metrics = run.data.tags, run.data.metrics
    job = tags.get("t2v.pipeline", "pretrain")
    lines = [f"**{job}** pipeline run `{tags.get(TAG_RUN_NAME, run.info.run_name)}`: {state} "
             f"(pipeline version {tags.get(TAG_PIPELINE_VERSION, '?')}, git {tags.get(TAG_GIT_SHA, '?')[:12]})", ""]
    if tags.get("t2v.gate"):
        lines += [f"Gate: **{tags['t2v.gate']}**", ""]
    rows = [(label, metrics[key]) for key, label in HEADLINE_METRICS.items() if key in metrics]
    if rows:
        lines += ["| | |", "|---|---|", *(f"| {label} | {value:.3f} |" for label, value in rows), ""]
    versions = [v for v in tags.get("t2v.model_versions", "").split(",") if v]
    if versions:
        links = []
        for version in versions:
            name, _, number = version.rpartition("/")
            links.append(f"[{name} v{number}](#/models/{name}/versions/{number})")
        lines += ["Registered: " + ", ".join(links), ""]
    if tags.get("t2v.eval_report"):
        lines += [f"Evaluation report: Artifacts → `{tags['t2v.eval_report']}`; samples: Artifacts → `samples/`", ""]
    return "\n".join(lines).strip() + "\n"


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _mlflow(tracking_uri).MlflowClient().set_terminated(run_id, status=status)


def failed_stage_errors(tracking_uri: str, parent_run_id: str) -> list[str]:
    """``"<stage>: <one-line error>"`` for every failed child run of a pipeline run."""
    return [
        f"{run.info.run_name}: {run.data.tags.get('t2v.error', 'failed')}"
        for run in child_runs(tracking_uri, parent_run_id)
        if run.info.status == "FAILED"
    ]


def child_runs(tracking_uri: str, parent_run_id: str) -> list:
    mlflow = _mlflow(tracking_uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=1000,
    )


@contextlib.contextmanager
def stage_run(
    tracking_uri: str,
    parent_run_id: str,
    stage: str,
    tags: Mapping[str, str],
    params: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Open the child run of ``stage`` under the parent run; FAILED on exception, FINISHED otherwise."""
    mlflow = _mlflow(tracking_uri)
    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    run = mlflow.start_run(
        experiment_id=parent.info.experiment_id,
        run_name=stage,
        parent_run_id=parent_run_id,
        tags={**tags, TAG_STAGE: stage},
    )
    try:
        if params:
            mlflow.log_params(flatten(params))
        yield run
    except BaseException as exc:
        message = redact(" ".join(f"{type(exc).__name__}: {exc}".split()))[:4000]
        mlflow.set_tag("t2v.error", message)
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def log_video_sample(frames, name: str, fps: int = 25, artifact_path: str = "samples", run_id: str | None = None) -> None:
    """Log a video to the active run as H.264 mp4 plus a GIF and a PNG frame strip (the UI's video
    preview has regressed before; the GIF/PNG always show). Small videos are enlarged for viewing."""
    import tempfile

    import mlflow
    import numpy as np

    from t2v.video import frames_strip_png, write_gif, write_mp4

    factor = -(-256 // frames.shape[1])  # previews at least 256 px tall (nearest-neighbour, pixels stay honest)
    if factor > 1:
        frames = np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)
    with tempfile.TemporaryDirectory(prefix="t2v-sample-") as tmp:
        base = Path(tmp) / name
        write_mp4(base.with_suffix(".mp4"), frames, fps=fps)
        write_gif(base.with_suffix(".gif"), frames, fps=fps)
        base.with_suffix(".png").write_bytes(frames_strip_png(frames))
        if run_id:  # another run than the active one (the pipeline's parent run)
            mlflow.MlflowClient().log_artifacts(run_id, tmp, artifact_path=artifact_path)
        else:
            mlflow.log_artifacts(tmp, artifact_path=artifact_path)
