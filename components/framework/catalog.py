"""The one list of the pipeline's stages.

``STAGE_MODULES`` names, in pipeline order, the modules whose ``STAGES`` tuples declare the stages (see
:class:`~components.framework.skeleton.Stage`). The runtime, the local runner, ``t2v stage`` and the
pipeline's DiT cascade take their stages from here; a test checks that the compiled pipeline's tasks are
exactly these stages.

The modules are imported on demand (by name), so this floor of the framework never imports a stage
folder statically; each stage module keeps its heavy imports (torch, OpenCV) inside its body.
"""

from __future__ import annotations

import functools
import importlib

from components.framework.skeleton import Stage

STAGE_MODULES = (
    "components.prepare_data.stage",
    "components.curate.component_stage",  # curate-shard (fan-out), curate (merge)
    "components.train_vae.stage",
    "components.encode.stage",
    "components.base_model.stage",  # the model a fine-tune or an evaluation starts from
    "components.train_dit.stage",  # t2i, t2vi, t2v, finetune
    "components.dpo.stage",  # Video-DPO (passes the t2v checkpoint through without a dpo section)
    "components.evaluate.stage",
    "components.register.stage",
)


@functools.cache
def stages() -> dict[str, Stage]:
    """Every stage by name, in pipeline order."""
    out: dict[str, Stage] = {}
    for module_name in STAGE_MODULES:
        for stage in importlib.import_module(module_name).STAGES:
            if stage.name in out:
                raise ValueError(f"stage {stage.name!r} is declared twice")
            out[stage.name] = stage
    return out


def names() -> tuple[str, ...]:
    return tuple(stages())


def get(name: str) -> Stage:
    try:
        return stages()[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(stages())}") from None


def producing(kind: str) -> tuple[str, ...]:
    """The stages whose manifest serves ``kind`` (as their output or one of their views)."""
    return tuple(name for name, stage in stages().items() if stage.serves(kind))


def candidates(name: str, input_name: str, among: tuple[str, ...] | None = None) -> list[Stage]:
    """The stages that can feed input ``input_name`` of stage ``name``: those before it (in ``among``, a
    pipeline's stages; default every stage) whose manifest serves the input's kind, nearest first."""
    order = tuple(among) if among is not None else names()
    if name not in order:
        raise ValueError(f"stage {name!r} is not among {', '.join(order)}")
    kind = get(name).inputs[input_name]
    earlier = [stages()[s] for s in order[: order.index(name)] if stages()[s].serves(kind)]
    if not earlier:
        raise ValueError(f"no stage before {name!r} produces {kind!r} (input {input_name!r})")
    return earlier[::-1]


def feeding(name: str, input_name: str, among: tuple[str, ...] | None = None) -> Stage:
    """The stage that feeds input ``input_name`` of stage ``name`` in a pipeline of the stages ``among``:
    the nearest earlier one serving that input's kind."""
    return candidates(name, input_name, among)[0]
