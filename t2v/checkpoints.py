"""Checkpoints in the object store: a folder with the weights as safetensors and the network config.

Layout (close to the release's folders, so the model issue can make them loadable by its code):

    <uri>/config.json                         the network's config (DiTConfig / VAEConfig fields)
    <uri>/<weights name>.safetensors          the state dict
    <uri>/training_state.json                 step, stage, lineage (optional)

Saving writes into a local staging folder and publishes it (the weights before the small files) so a
reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from t2v import storage
from t2v.stage import file_entry

DIT_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_WEIGHTS = "vae.safetensors"


def save(
    model, config: dict[str, Any], uri: str, weights_name: str, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Save ``model`` (a torch module) to ``uri``; returns manifest file entries keyed by file name."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="t2v-ckpt-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, str(tmp / weights_name), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        files = [weights_name, "config.json"]
        if state is not None:
            (tmp / "training_state.json").write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
            files.append("training_state.json")
        entries = {}
        for name in files:
            target = storage.join(uri, name)
            storage.upload_file(tmp / name, target)
            entries[name] = file_entry(tmp / name, target)
    return entries


def load_config(uri: str) -> dict[str, Any]:
    return storage.read_json(storage.join(uri, "config.json"))


def load_state_dict(uri: str, weights_name: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    with storage.local_file_for(storage.join(uri, weights_name)) as path:
        return load_file(str(path))


def load_dit(uri: str, device: str = "cpu"):
    from model.config import DiTConfig
    from model.dit import StepVideoDiT

    cfg = DiTConfig.model_validate(load_config(uri))
    net = StepVideoDiT(cfg)
    net.load_state_dict(load_state_dict(uri, DIT_WEIGHTS))
    return net.to(device).eval()


def load_vae(uri: str, device: str = "cpu"):
    from model.config import VAEConfig
    from model.vae import CausalVideoVAE

    cfg = VAEConfig.model_validate(load_config(uri))
    net = CausalVideoVAE(cfg)
    net.load_state_dict(load_state_dict(uri, VAE_WEIGHTS))
    return net.to(device).eval()
