"""The released Step-Video-T2V checkpoint layout at full size, written as headers over holes: every
safetensors file has its real header and length but no data blocks, so tests can check 30B-parameter
layouts against configurations on the meta device without writing or reading 60 GB."""

from __future__ import annotations

import json
import math

import torch

from model.config import DiTConfig
from model.dit import StepVideoDiT
from t2v import checkpoints

_BYTES = {torch.bfloat16: 2, torch.float32: 4}
_SAFETENSORS_DTYPE = {torch.bfloat16: "BF16", torch.float32: "F32"}


def write_header_only(path, tensors: dict[str, torch.Tensor]) -> None:
    """A safetensors file whose header describes ``tensors`` (meta tensors) and whose data region is a hole:
    the file has its full length but occupies no disk blocks and is never read."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in tensors.items():
        size = math.prod(t.shape) * _BYTES[t.dtype]
        header[name] = {
            "dtype": _SAFETENSORS_DTYPE[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        f.truncate(8 + len(blob) + offset)


def fake_release_dit_folder(folder, cfg: DiTConfig) -> None:
    """The released transformer/ folder for ``cfg``: diffusers config.json, bf16 shards of at most 10GB and
    their index, as ``StepVideoModel.save_pretrained`` writes them."""
    from huggingface_hub import split_torch_state_dict_into_shards

    with torch.device("meta"):
        state = StepVideoDiT(cfg).to(torch.bfloat16).state_dict()
    split = split_torch_state_dict_into_shards(
        state, filename_pattern="diffusion_pytorch_model{suffix}.safetensors", max_shard_size="10GB"
    )
    folder.mkdir(parents=True)
    for filename, names in split.filename_to_tensors.items():
        write_header_only(folder / filename, {n: state[n] for n in names})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": split.metadata, "weight_map": split.tensor_to_filename})
    )
    keys = checkpoints.release_dit_config(cfg)
    keys.pop("_t2v_config")
    (folder / "config.json").write_text(json.dumps(keys))


def tiny_release_folder(root, work) -> None:
    """The released model folder's layout (transformer/, vae/, hunyuan_clip/, step_llm/) with the tiny
    profile's networks, randomly initialised; ``work`` is a scratch folder for the text encoders."""
    import shutil

    from model.vae import CausalVideoVAE
    from t2v import storage
    from t2v.config import load_config
    from t2v.world import vocabulary
    from t2v.world.text_encoders import create_tiny_step_llm, create_tiny_text_encoders

    cfg = load_config("tiny")
    torch.manual_seed(0)
    checkpoints.save_dit(StepVideoDiT(cfg.dit), storage.to_uri(root / "transformer"))
    checkpoints.save_vae(CausalVideoVAE(cfg.vae.model), storage.to_uri(root / "vae"))
    clip, _ = create_tiny_text_encoders(work / "text", vocabulary(cfg.world), cfg.text_encoders)
    shutil.copytree(clip, root / "hunyuan_clip")
    create_tiny_step_llm(root, vocabulary(cfg.world), cfg.text_encoders)
