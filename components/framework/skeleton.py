"""The one stage skeleton.

A stage declares what it is -- its name, the inputs it takes, the settings its outputs depend on and its
body -- as a :class:`Stage`; :func:`run_stage` does the rest, the same way for every stage:

1. fingerprint the settings and the inputs' fingerprints;
2. look for the stage's manifest: when it exists with this fingerprint the work is done (skip);
3. open the stage's MLflow child run (its params are the settings; FAILED if the body raises);
4. run the body, which publishes its bulk files and returns a :class:`StageOutput`;
5. write the manifest last, and log it to the child run.

A stage object is the stage function: ``STAGE(ctx, **inputs)`` returns the manifest. The component body
(:func:`components.runtime.invoke`) and ``t2v stage <name>`` both call it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from components.framework.context import StageContext
from components.framework.manifests import MANIFEST_NAME, fingerprint, up_to_date, write_manifest
from t2v import storage, tracking
from t2v.errors import StageError

SKIPPED_TAG = "t2v.skipped"


@dataclass
class StageOutput:
    """What a body returns: the files it published (manifest entries), its summary, fields the manifest
    carries beside them (a checkpoint URI, say), and the summary keys to mirror into the KFP artifact's
    metadata."""

    files: Mapping[str, Mapping[str, Any]]
    summary: Mapping[str, Any]
    extra: Mapping[str, Any] = field(default_factory=dict)
    mirror: tuple[str, ...] = ()
    views: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class StageRun:
    """What a body is handed besides its inputs."""

    ctx: StageContext
    name: str  # the child run's name: the stage's, or one fan-out task's (curate-shard-0)
    uri: str  # where the manifest goes; a stage's own outputs go here too
    run_id: str  # the MLflow child run


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline.

    * ``output``: the kind of artifact it produces (``raw``, ``clips``, ``vae``, ``latents``, ``dit``, ...);
    * ``inputs``: input name -> the kind of artifact that feeds it (``{"init": "dit"}``); an input fed by
      a fan-out stage is the list of its tasks' manifests;
    * ``settings(ctx, **arguments)``: the configuration the outputs depend on (fingerprinted, and logged as
      the child run's params);
    * ``body(run, **inputs, **options)`` -> :class:`StageOutput`;
    * ``instance(ctx, **options)`` -> (child run name, manifest folder), for a stage that fans out into
      several tasks; ``fan_out_root(ctx)`` is the folder holding those tasks' manifest folders;
    * ``views``: further kinds one manifest serves (``base-model`` is a ``dit``, a ``vae`` and the text
      encoders' ``raw``): the body's :attr:`StageOutput.views` gives, per kind, the fields that differ
      (each view's ``checkpoint_uri``), and :func:`manifest_as` reads the manifest as that kind.
    """

    name: str
    output: str
    inputs: Mapping[str, str]
    settings: Callable[..., dict[str, Any]]
    body: Callable[..., StageOutput]
    optional_inputs: tuple[str, ...] = ()
    instance: Callable[..., tuple[str, str]] | None = None
    fan_out_root: Callable[[StageContext], str] | None = None
    views: tuple[str, ...] = ()

    def serves(self, kind: str) -> bool:
        return kind == self.output or kind in self.views

    def __call__(self, ctx: StageContext, **arguments: Any) -> dict[str, Any]:
        return run_stage(self, ctx, arguments)


def run_stage(stage: Stage, ctx: StageContext, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``stage`` with ``arguments`` (its input manifests and plain options); returns its manifest."""
    import mlflow

    missing = [k for k in stage.inputs if arguments.get(k) is None and k not in stage.optional_inputs]
    if missing:
        raise StageError(f"{stage.name}: missing input manifest(s) {', '.join(missing)}")
    inputs = {k: arguments.get(k) for k in stage.inputs}
    options = {k: v for k, v in arguments.items() if k not in stage.inputs}
    settings = stage.settings(ctx, **inputs, **options)
    name, where = stage.instance(ctx, **options) if stage.instance else (stage.name, ctx.stage_uri(stage.name))
    fingerprint_ = fingerprint(stage.name, settings, inputs)
    done = up_to_date(storage.join(where, MANIFEST_NAME), fingerprint_, name)
    with tracking.stage_run(ctx.tracking_uri, ctx.parent_run_id, name, ctx.tags, settings) as child:
        if done is not None:
            mlflow.set_tag(SKIPPED_TAG, "up-to-date")
            return done
        run = StageRun(ctx, name, where, child.info.run_id)
        output = stage.body(run, **inputs, **options)
        extra = {**output.extra, **({"mirror": list(output.mirror)} if output.mirror else {})}
        if output.views:
            extra["views"] = {kind: dict(fields) for kind, fields in output.views.items()}
        manifest = write_manifest(
            ctx, name, where, fingerprint_, inputs, run.run_id, output.files, output.summary, extra
        )
        mlflow.log_dict(manifest, MANIFEST_NAME)  # the hand-off manifest is one of the child run's artifacts
        return manifest


def manifest_as(manifest: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``manifest`` read as an input of ``kind``: its fields with the view of that kind laid over them
    (a manifest without views is every kind it is read as)."""
    view = (manifest.get("views") or {}).get(kind) or {}
    return {**manifest, **view}
