"""The glue between a KFP component body and a stage: the stage framework's entry point from KFP.

Every component body is one call: ``invoke(stage, arguments, outputs)`` (the compiled pipeline names this
module, so it stays here). It rebuilds the :class:`~components.framework.context.StageContext` from the
pipeline parameters, reads the input artifacts' manifests, runs the stage from the catalog (the same
stage ``t2v stage <name>`` runs), and writes the returned manifest into the output artifact. Errors a
user can act on (:class:`t2v.errors.UserError`: bad config, unreadable URI, bad input) are printed as one
line and the task fails without a long traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from components.framework import catalog
from components.framework.context import CONTEXT_KEYS, StageContext
from components.framework.manifests import read_manifest, write_artifact
from components.framework.skeleton import manifest_as
from t2v.errors import UserError


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
    from t2v.secrets import install_log_redaction

    install_log_redaction()  # no credential in a log line (a URI's password, a signed URL, a key)


def _read_input(artifact: Any) -> Any:
    """A KFP input artifact -> its manifest; a list of artifacts (``dsl.Collected``) -> a list; None stays."""
    if artifact is None:
        return None
    if isinstance(artifact, (list, tuple)):
        return [read_manifest(item.path) for item in artifact]
    return read_manifest(artifact.path)


def _as_kind(manifest: Any, kind: str | None) -> Any:
    """An input manifest read as the kind the stage declares for it (a stage with views serves several)."""
    if kind is None or manifest is None or isinstance(manifest, list):
        return manifest
    return manifest_as(manifest, kind)


def invoke(stage: str, arguments: Mapping[str, Any], outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``stage`` for a KFP component body::

        arguments = dict(locals())          # first statement: the component's parameters only
        from components.runtime import invoke
        invoke("train-vae", arguments, outputs=("vae",))

    ``arguments`` are the component's parameters: the context keys, the input artifacts (objects with
    ``.path``, or lists of them from ``dsl.Collected``), the output artifacts named in ``outputs``, and
    plain options passed on to the stage function."""
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
        declared = catalog.get(stage).inputs
        manifests = {name: _as_kind(_read_input(artifact), declared.get(name)) for name, artifact in inputs.items()}
        manifest = catalog.get(stage)(ctx, **manifests, **options)
    except UserError as exc:
        print(f"ERROR [{stage}] {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    for name, artifact in out_artifacts.items():
        if getattr(artifact, "schema_title", "") == "system.Metrics":
            # KFP's UI shows a Metrics artifact's scalar metadata: numbers only.
            for key, value in manifest.get("summary", {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    artifact.log_metric(key, float(value))
        else:  # a stage serving several kinds writes each output as its kind (skeleton.Stage.views)
            write_artifact(artifact, manifest_as(manifest, name), mirror=tuple(manifest.get("mirror", ())))
    return manifest
