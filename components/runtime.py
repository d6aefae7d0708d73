"""The glue between a KFP component body and a stage function.

Every component body is one call: ``invoke(stage, arguments, outputs)``. It rebuilds the
:class:`~t2v.stage.StageContext` from the pipeline parameters, reads the input artifacts' manifests, runs
the stage function (the same function ``t2v stage <name>`` calls), and writes the returned manifest into
the output artifact. Errors a user can act on (bad config, unreadable URI, bad input) are printed as one
line and the task fails without a long traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

# stage name -> (module, function, names of the input manifests it takes, in pipeline order)
STAGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "prepare-data": ("components.prepare_data.stage", "run", ()),
    "curate-shard": ("components.curate.component_stage", "run_shard", ("raw",)),
    "curate": ("components.curate.component_stage", "run_merge", ("raw", "parts")),
    "train-vae": ("components.train_vae.stage", "run", ("clips",)),
    "encode": ("components.encode.stage", "run", ("clips", "vae", "raw")),
    "t2i": ("components.train_dit.stage", "run_t2i", ("latents",)),
    "t2vi": ("components.train_dit.stage", "run_t2vi", ("latents", "init")),
    "t2v": ("components.train_dit.stage", "run_t2v", ("latents", "init")),
    "evaluate": ("components.evaluate.stage", "run", ("dit", "vae", "latents", "raw")),
    "register": ("components.register.stage", "run", ("dit", "vae", "evaluation", "clips")),
}

# Which earlier stage's manifest feeds each input when a stage runs alone (``t2v stage``).
DEFAULT_INPUT_STAGE = {
    "raw": "prepare-data",
    "clips": "curate",
    "vae": "train-vae",
    "latents": "encode",
    "evaluation": "evaluate",
    "dit": "t2v",
}
PREVIOUS_DIT_STAGE = {"t2vi": "t2i", "t2v": "t2vi"}

def _user_errors() -> tuple[type[BaseException], ...]:
    from t2v.config import ConfigError
    from t2v.launcher import LaunchError
    from t2v.stage import StageError
    from t2v.storage import StorageError

    errors: list[type[BaseException]] = [ConfigError, StageError, StorageError, LaunchError]
    try:
        from t2v.video import VideoDecodeError

        errors.append(VideoDecodeError)
    except ImportError:  # pragma: no cover - optional during bootstrap
        pass
    return tuple(errors)


def stage_function(stage: str) -> Callable[..., dict[str, Any]]:
    try:
        module_name, func_name, _ = STAGES[stage]
    except KeyError:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}") from None
    return getattr(importlib.import_module(module_name), func_name)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stdout,
        force=True,
    )
    for noisy in ("urllib3", "botocore", "alembic", "mlflow.store", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _read_input(artifact: Any, read_manifest: Callable[[Any], dict[str, Any]]) -> Any:
    """A KFP input artifact -> its manifest; a list of artifacts (``dsl.Collected``) -> a list; None stays."""
    if artifact is None:
        return None
    if isinstance(artifact, (list, tuple)):
        return [read_manifest(item.path) for item in artifact]
    return read_manifest(artifact.path)


CONTEXT_KEYS = ("config_json", "run_root", "tracking_uri", "parent_run_id", "pipeline_version", "git_sha", "run_name")


def invoke(stage: str, arguments: Mapping[str, Any], outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``stage`` for a KFP component body::

        arguments = dict(locals())          # first statement: the component's parameters only
        from components.runtime import invoke
        invoke("train-vae", arguments, outputs=("vae",))

    ``arguments`` are the component's parameters: the context keys, the input artifacts (objects with
    ``.path``, or lists of them from ``dsl.Collected``), the output artifacts named in ``outputs``, and
    plain options passed on to the stage function."""
    from t2v.stage import StageContext, read_manifest, write_artifact

    configure_logging()
    context = {k: arguments[k] for k in CONTEXT_KEYS}
    out_artifacts = {k: arguments[k] for k in outputs}
    inputs, options = {}, {}
    for key, value in arguments.items():
        if key in CONTEXT_KEYS or key in outputs:
            continue
        is_artifact = hasattr(value, "path") or (isinstance(value, (list, tuple)) and all(hasattr(v, "path") for v in value))
        (inputs if is_artifact or value is None else options)[key] = value
    try:
        ctx = StageContext.from_params(**context)
        manifests = {name: _read_input(artifact, read_manifest) for name, artifact in inputs.items()}
        manifest = stage_function(stage)(ctx, **manifests, **options)
    except _user_errors() as exc:
        print(f"ERROR [{stage}] {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    for artifact in out_artifacts.values():
        if getattr(artifact, "schema_title", "") == "system.Metrics":
            # KFP's UI shows a Metrics artifact's scalar metadata: numbers only.
            for key, value in manifest.get("summary", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    artifact.log_metric(key, float(value))
        else:
            write_artifact(artifact, manifest, mirror=tuple(manifest.get("mirror", ())))
    return manifest
