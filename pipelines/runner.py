"""Compile, run locally, and submit a job's pipeline (``pretrain``, ``finetune``, ``curation``, ``evaluate``:
:data:`pipelines.pipeline.PIPELINES`).

* :func:`compile_pipeline` writes the KFP IR YAML, stamped with the pipeline version (package version +
  git sha) and the job in its description and in the ``pipeline_version`` parameter's default.
* :func:`run_local` runs the same pipeline function under ``kfp.local`` (subprocess runner, this Python
  environment) after opening the MLflow parent run — the embedded default and the tests.
* :func:`submit` uploads a pipeline version to a KFP host and starts a run with a fresh parent run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.framework import catalog
from components.framework.context import CONTEXT_KEYS
from components.framework.manifests import MANIFEST_NAME
from t2v import __version__, storage, tracking
from t2v.config import ProjectConfig

log = logging.getLogger(__name__)


def pipeline_version(sha: str | None = None) -> str:
    sha = sha or tracking.git_sha()
    clean = sha.removesuffix("-dirty")
    local = f"g{clean[:12]}" if clean != "unknown" else "gunknown"
    return f"{__version__}+{local}{'.dirty' if sha.endswith('-dirty') else ''}"


def default_run_name(cfg: ProjectConfig) -> str:
    return f"{cfg.profile}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def parent_tags(
    cfg: ProjectConfig, run_name: str, sha: str, version: str, run_root: str, orchestrator: str, job: str = "pretrain"
) -> dict[str, str]:
    """The lineage tags of a pipeline's MLflow parent run (its child runs carry the same first five)."""
    return {
        **tracking.lineage_tags(cfg, run_name, sha, version),
        "t2v.run_root": run_root,
        "t2v.orchestrator": orchestrator,
        "t2v.pipeline": job,
    }


def open_parent_run(
    cfg: ProjectConfig,
    run_name: str,
    tracking_uri: str,
    run_root: str,
    sha: str,
    version: str,
    orchestrator: str,
    params: dict[str, Any] | None = None,
    mlflow_run_name: str | None = None,
    job: str = "pretrain",
) -> str:
    """Open a pipeline's MLflow parent run (with its lineage tags); returns its id. A local tracking store
    keeps artifacts under ``tracking.default_artifact_root``; a server decides for itself."""
    artifact_location = None if tracking_uri.startswith("http") else storage.to_uri(cfg.tracking.default_artifact_root)
    return tracking.start_parent_run(
        tracking_uri,
        cfg.tracking.experiment,
        mlflow_run_name or run_name,
        parent_tags(cfg, run_name, sha, version, run_root=run_root, orchestrator=orchestrator, job=job),
        params=params,
        artifact_location=artifact_location,
    )


def run_parameters(
    cfg: ProjectConfig, run_root: str, tracking_uri: str, parent_run_id: str, run_name: str, version: str, sha: str
) -> dict[str, Any]:
    """The pipeline parameters of one run: the run context every task receives (``CONTEXT_KEYS``) and the
    curation fan-out."""
    context = {
        "config_json": cfg.to_json(),
        "run_root": run_root,
        "tracking_uri": tracking_uri,
        "parent_run_id": parent_run_id,
        "run_name": run_name,
        "pipeline_version": version,
        "git_sha": sha,
    }
    assert set(context) == set(CONTEXT_KEYS)
    return {**context, "curate_shards": list(range(cfg.curate.num_shards))}


def compile_pipeline(cfg: ProjectConfig, out: str | Path, job: str = "pretrain") -> dict[str, Any]:
    """Write ``job``'s pipeline IR YAML for ``cfg``'s cluster placement; returns what was stamped."""
    from kfp import compiler

    from pipelines.pipeline import build_pipeline, get_pipeline

    sha = tracking.git_sha()
    version = pipeline_version(sha)
    func = build_pipeline(cfg.cluster, job)
    func.description = f"{func.description} | version {version} | profile {cfg.profile} | pipeline {job}"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(
        func,
        package_path=str(out),
        pipeline_parameters={
            "config_json": cfg.to_json(),
            "pipeline_version": version,
            "git_sha": sha,
            "curate_shards": list(range(cfg.curate.num_shards)),
        },
    )
    return {"path": str(out), "pipeline_version": version, "git_sha": sha, "profile": cfg.profile, "pipeline": job,
            "pipeline_name": get_pipeline(job).kfp_name}


@dataclass
class LocalRun:
    run_name: str
    run_root: str
    tracking_uri: str
    parent_run_id: str
    pipeline_version: str
    seconds: float
    job: str = "pretrain"
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)


def run_local(
    cfg: ProjectConfig,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    root: str | None = None,
    pipeline_root: str | Path = ".runs/kfp",
    job: str = "pretrain",
) -> LocalRun:
    """Run ``job``'s pipeline with the KFP local runner; raises ``RuntimeError`` naming the failed task."""
    from kfp import local

    from pipelines.pipeline import build_pipeline, get_pipeline

    get_pipeline(job)  # an unknown job fails before any run is opened
    start = time.monotonic()
    run_name = run_name or default_run_name(cfg)
    tracking_uri = tracking.absolute_tracking_uri(tracking_uri or cfg.tracking.default_tracking_uri)
    run_root = storage.join(storage.to_uri(root or cfg.storage.root), run_name)
    sha = tracking.git_sha()
    version = pipeline_version(sha)
    parent_run_id = open_parent_run(
        cfg, run_name, tracking_uri, run_root, sha, version, "kfp.local", params=cfg.model_dump(mode="json"), job=job
    )
    log.info("run %s: parent MLflow run %s, data under %s", run_name, parent_run_id, run_root)
    pipeline_root = Path(pipeline_root).resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    pipeline = build_pipeline(cfg.cluster, job)
    try:
        pipeline(**run_parameters(cfg, run_root, tracking_uri, parent_run_id, run_name, version, sha))
    except RuntimeError as exc:
        # The exit handler has closed the parent run as FAILED; make sure even if it could not run.
        run = tracking._mlflow(tracking_uri).MlflowClient().get_run(parent_run_id)
        if run.info.status == "RUNNING":
            tracking.finish_run(tracking_uri, parent_run_id, "FAILED")
        causes = tracking.failed_stage_errors(tracking_uri, parent_run_id)
        message = _one_line(str(exc)) + "".join(f"\n  {cause}" for cause in causes)
        raise RuntimeError(message) from None
    result = LocalRun(run_name, run_root, tracking_uri, parent_run_id, version, time.monotonic() - start, job=job)
    for stage in catalog.stages().values():
        if stage.fan_out_root is not None:  # a fan-out task's manifest is not the stage's
            continue
        uri = storage.join(run_root, stage.name, MANIFEST_NAME)
        if storage.exists(uri):
            result.manifests[stage.name] = storage.read_json(uri)
    return result


def _one_line(text: str) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return " ".join(text.split())


def submit(
    cfg: ProjectConfig,
    host: str,
    package: str | Path,
    tracking_uri: str,
    run_name: str | None = None,
    upload_only: bool = False,
    experiment: str = "step-video-t2v",
    job: str = "pretrain",
    ui_host: str | None = None,
) -> dict[str, Any]:
    """Upload ``job``'s compiled pipeline as a version named by the pipeline version (reusing one already
    uploaded under that name) and start a run of it in ``experiment`` (``pipelines.kfp_submit``)."""
    from pipelines import kfp_submit

    client = kfp_submit.client(host, ui_host=ui_host)
    stamped = compile_pipeline(cfg, package, job)
    version_name = stamped["pipeline_version"]
    published = kfp_submit.publish(
        client, host, package, stamped["pipeline_name"], version_name,
        description=f"{job} pipeline, profile {cfg.profile}, git {stamped['git_sha']}",
    )
    out = {
        "pipeline": job,
        "pipeline_name": published.pipeline_name,
        "pipeline_id": published.pipeline_id,
        "pipeline_version": version_name,
        "version_id": published.version_id,
        "version_reused": published.reused_version,
        "pipeline_url": published.url,
    }
    if upload_only:
        return out
    run_name = run_name or default_run_name(cfg)
    run_root = storage.join(cfg.storage.root, run_name)
    sha = stamped["git_sha"]
    parent_run_id = open_parent_run(
        cfg, run_name, tracking_uri, run_root, sha, version_name, host, params=cfg.model_dump(mode="json"), job=job
    )
    started = kfp_submit.start_run(
        client, host, published, experiment, run_name,
        params=run_parameters(cfg, run_root, tracking_uri, parent_run_id, run_name, version_name, sha),
        service_account=cfg.cluster.service_account,
    )
    out.update({
        "run_id": started.run_id, "run_name": run_name, "experiment": experiment, "experiment_id": started.experiment_id,
        "run_url": started.url, "parent_run_id": parent_run_id,
    })
    return out
