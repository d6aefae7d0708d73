"""A synthetic latent data set in the encode stage's format, for trainer tests and benchmarks: shards of
``video.npy`` / ``image.npy`` / text states and a ``negative.npz``, with a manifest as encode publishes.
Each latent is a smooth pattern set by its caption's tokens, so a DiT has something to learn."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from t2v import storage
from t2v.shards import LATENT_INDEX, index_latent_shards, npy_bytes, write_shards


def write_synthetic_latents(
    root: Path,
    *,
    samples: int,
    frames: int,
    channels: int,
    height: int,
    width: int,
    llm_tokens: int,
    llm_channels: int,
    clip_tokens: int,
    clip_channels: int,
    shard_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``samples`` latent samples under ``root``; returns the manifest the trainer reads."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij"))

    def one(index: int) -> dict[str, Any]:
        code = rng.normal(size=(channels, 3)).astype(np.float32)
        phase = np.linspace(0, np.pi, frames, dtype=np.float32)[:, None, None, None]
        video = code[None, :, 0, None, None] * np.sin(3 * grid[0] + phase) + code[None, :, 1, None, None] * grid[1]
        video = (video + 0.1 * code[None, :, 2, None, None]).astype(np.float32)
        llm = np.zeros((llm_tokens, llm_channels), np.float32)
        llm[: min(llm_tokens, 3), : min(llm_channels, channels * 3)] = np.resize(code.ravel(), (min(llm_tokens, 3), min(llm_channels, channels * 3)))
        clip = np.resize(code.ravel(), (clip_tokens, clip_channels)).astype(np.float32)
        return {
            "__key__": f"sample_{index:06d}",
            "video.npy": npy_bytes(video),
            "image.npy": npy_bytes(video[:1]),
            "llm_states.npy": npy_bytes(llm),
            "llm_mask.npy": npy_bytes(np.arange(llm_tokens) < 3),
            "clip_states.npy": npy_bytes(clip),
            "clip_mask.npy": npy_bytes(np.ones(clip_tokens, bool)),
            "json": json.dumps({"clip_id": f"sample.{index}", "quality": float(rng.uniform(0.5, 1.0))}).encode(),
        }

    paths = write_shards((one(i) for i in range(samples)), root / "shards", "latents", shard_size)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        llm_states=np.zeros((llm_tokens, llm_channels), np.float32),
        llm_mask=np.arange(llm_tokens) < 1,
        clip_states=np.zeros((clip_tokens, clip_channels), np.float32),
        clip_mask=np.ones(clip_tokens, bool),
    )
    (root / "negative.npz").write_bytes(buffer.getvalue())
    (root / LATENT_INDEX).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in index_latent_shards(paths)))
    files = {f"shards/{p.name}": {"uri": storage.to_uri(p)} for p in paths}
    return {
        "stage": "encode",
        "files": files,
        "negative_uri": storage.to_uri(root / "negative.npz"),
        "index_uri": storage.to_uri(root / LATENT_INDEX),
        "samples": samples,
    }


def write_tiny_latents(root: Path, config, samples: int = 16, frames: int = 2, size: int = 4, seed: int = 0):
    """Synthetic latents shaped for ``config`` (a ProjectConfig): its DiT's channels and text encoders'."""
    te = config.text_encoders
    return write_synthetic_latents(
        root, samples=samples, frames=frames, channels=config.dit.in_channels, height=size, width=size,
        llm_tokens=te.llm_max_length, llm_channels=config.dit.caption_channels,
        clip_tokens=te.clip_max_length, clip_channels=config.dit.clip_channels, seed=seed,
    )
