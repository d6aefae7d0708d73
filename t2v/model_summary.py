"""Parameter names, shapes and counts of a profile's DiT and VAE, built on the meta device (no weights
are allocated), so a user can check a checkpoint against a configuration before loading it."""

from __future__ import annotations

from typing import Any

from t2v.config import ProjectConfig


def _describe(module) -> dict[str, Any]:
    state = module.state_dict()
    return {
        "parameters": sum(p.numel() for p in module.parameters()),
        "tensors": len(state),
        "shapes": {name: list(tensor.shape) for name, tensor in state.items()},
    }


def model_summary(cfg: ProjectConfig) -> dict[str, Any]:
    """``{"dit": {name: shape}, "vae": {name: shape}, "counts": {...}}`` for ``cfg``'s networks."""
    import torch

    from model.dit import StepVideoDiT
    from model.vae import CausalVideoVAE

    with torch.device("meta"):
        dit, vae = _describe(StepVideoDiT(cfg.dit)), _describe(CausalVideoVAE(cfg.vae.model))
    return {
        "profile": cfg.profile,
        "dit": dit["shapes"],
        "vae": vae["shapes"],
        "counts": {
            "dit": {"parameters": dit["parameters"], "tensors": dit["tensors"]},
            "vae": {"parameters": vae["parameters"], "tensors": vae["tensors"]},
        },
    }
