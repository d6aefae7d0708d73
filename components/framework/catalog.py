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
    "components.train_dit.stage",  # t2i, t2vi, t2v
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
    """The stages whose output is of ``kind`` (``dit``: the training cascade t2i, t2vi, t2v, then dpo)."""
    return tuple(name for name, stage in stages().items() if stage.output == kind)


def feeding(name: str, input_name: str) -> Stage:
    """The stage that feeds input ``input_name`` of stage ``name`` when it runs alone: the nearest
    earlier stage producing that input's kind."""
    order = names()
    kind = get(name).inputs[input_name]
    earlier = [s for s in order[: order.index(name)] if stages()[s].output == kind]
    if not earlier:
        raise ValueError(f"no stage before {name!r} produces {kind!r} (input {input_name!r})")
    return stages()[earlier[-1]]
