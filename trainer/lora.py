"""LoRA on the DiT with peft, applied as a function over the unchanged network (before the parallelisms).

:func:`apply_lora` injects peft's LoRA layers into the attention and feed-forward projections a
:class:`~t2v.config.LoRAConfig` names and freezes every other weight; FSDP2, activation checkpointing and
``torch.compile`` then wrap the adapted network as they wrap the plain one. Names follow peft: a wrapped
projection's weight becomes ``<module>.base_layer.weight`` and its adapters ``<module>.lora_A.default.weight``
and ``<module>.lora_B.default.weight``; :func:`base_name` maps the former back to the release's name and
:func:`adapter_slot` says which adapter half the latter is.

The adapters start as peft starts them (``lora_A`` Kaiming-uniform, ``lora_B`` zero, so the adapted
network begins equal to its base), drawn from the stage's seed, or from an adapter folder when a stage
goes on training one (a DPO after a LoRA fine-tune). The export writes peft's format
(:func:`t2v.checkpoints.write_adapter`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ADAPTER_NAME = "default"


def peft_config(cfg, base_uri: str | None = None):
    """The peft ``LoraConfig`` of a :class:`~t2v.config.LoRAConfig` (``base_uri``: the base checkpoint)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        use_rslora=cfg.use_rslora,
        target_modules=list(cfg.target_modules),
        bias="none",
        base_model_name_or_path=base_uri,
    )


def apply_lora(dit: nn.Module, cfg) -> list[str]:
    """Inject LoRA adapters into ``dit`` in place (on whatever device it is built, meta included) and
    freeze everything else; returns the adapted modules' names. A target that matches no module is an
    error naming it."""
    from peft import inject_adapter_in_model

    names = [name for name, module in dit.named_modules() if isinstance(module, nn.Linear)]
    unmatched = [t for t in cfg.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:
        raise ValueError(f"lora.target_modules: {unmatched} match no linear layer of the DiT")
    inject_adapter_in_model(peft_config(cfg), dit, adapter_name=ADAPTER_NAME, low_cpu_mem_usage=True)
    for name, param in dit.named_parameters():
        param.requires_grad_(adapter_slot(name) is not None)
    return sorted({name.split(".lora_A.")[0] for name, _ in dit.named_parameters() if ".lora_A." in name})


def lora_parameters(dit_config, cfg) -> int:
    """How many parameters ``cfg``'s adapters add to a DiT of ``dit_config``: r x (in + out) per adapted
    projection (counted on the meta device, nothing allocated)."""
    from model.dit import StepVideoDiT

    with torch.device("meta"):
        dit = StepVideoDiT(dit_config)
    total = 0
    for name, module in dit.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith(f".{t}") for t in cfg.target_modules):
            total += cfg.rank * (module.in_features + module.out_features)
    return total


def adapter_slot(name: str) -> tuple[str, str] | None:
    """``(module, "lora_A" | "lora_B")`` for an adapter parameter's name, None for any other parameter."""
    for half in ("lora_A", "lora_B"):
        marker = f".{half}.{ADAPTER_NAME}."
        if marker in name:
            return name.split(marker)[0], half
    return None


def base_name(name: str) -> str:
    """A frozen base weight's name as the release (and the base checkpoint) spells it."""
    return name.replace(".base_layer.", ".")


def initial_adapter_value(half: str, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """peft's start: ``lora_A`` Kaiming-uniform (a = sqrt(5), as nn.Linear), ``lora_B`` zero."""
    out = torch.empty(shape)
    if half == "lora_B":
        return out.zero_()
    bound = 1.0 / math.sqrt(shape[1])  # kaiming_uniform_(a=sqrt(5)) on an (r, in) weight
    return out.uniform_(-bound, bound, generator=generator)


def trainable_parameters(dit: nn.Module) -> tuple[int, int]:
    """(trainable, all) parameter counts of the whole network (sharded tensors count whole)."""

    def whole(p: torch.Tensor) -> int:
        shape = getattr(p, "ds_shape", None) or p.shape
        return int(torch.Size(shape).numel())

    params = list(dit.parameters())
    return sum(whole(p) for p in params if p.requires_grad), sum(whole(p) for p in params)


def lora_settings_of(adapter):
    """The :class:`~t2v.config.LoRAConfig` an adapter folder was trained with (its adapter_config.json)."""
    from t2v.config import LoRAConfig

    config = adapter.config
    targets = config.get("target_modules") or []
    return LoRAConfig(
        rank=int(config["r"]),
        alpha=float(config["lora_alpha"]),
        dropout=float(config.get("lora_dropout") or 0.0),
        use_rslora=bool(config.get("use_rslora")),
        target_modules=sorted(targets) if isinstance(targets, (list, set, tuple)) else [targets],
    )


def adapter_lineage(stage: str, step: int, base_uri: str, job: dict[str, Any]) -> dict[str, Any]:
    """What ``t2v_adapter.json`` records beside peft's files."""
    return {
        "base_checkpoint_uri": base_uri,
        "base_model_version": job.get("base_model_version"),
        "stage": stage,
        "step": step,
    }
