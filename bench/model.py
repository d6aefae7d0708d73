"""DiT throughput and memory, side by side: tokens/s for forward and forward+backward, and the peak memory
of each variant (CUDA: torch's peak allocation; CPU: the process's peak resident set, each variant in its
own process), at the tiny profile and a small configuration, with and without activation checkpointing,
with PyTorch SDPA and with the plain math reference attention.

    .venv/bin/python bench/model.py [--steps 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would hide the `model` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# name -> (DiTConfig overrides on the tiny profile, latent frames, latent height, latent width, batch)
SIZES = {
    "tiny": ({}, 3, 4, 4, 8),
    "small": (
        {"num_layers": 4, "num_attention_heads": 8, "attention_head_dim": 32, "rope_split": [16, 8, 8]},
        6,
        16,
        16,
        2,
    ),
}


def measure(size: str, backend: str, checkpointing: bool, steps: int, device: str) -> dict:
    import resource

    import torch

    from model.dit import StepVideoDiT
    from t2v.config import load_config

    cfg = load_config("tiny")
    overrides, frames, height, width, batch = SIZES[size]
    dit_cfg = cfg.dit.model_copy(update=overrides)
    torch.manual_seed(0)
    dit = StepVideoDiT(dit_cfg, attention_backend=backend, activation_checkpointing=checkpointing).to(device)
    te = cfg.text_encoders
    latents = torch.randn(batch, frames, dit_cfg.in_channels, height, width, device=device)
    inputs = dict(
        llm_states=torch.randn(batch, te.llm_max_length, dit_cfg.caption_channels, device=device),
        llm_mask=torch.ones(batch, te.llm_max_length, dtype=torch.bool, device=device),
        clip_states=torch.randn(batch, te.clip_max_length, dit_cfg.clip_channels, device=device),
        clip_mask=torch.ones(batch, te.clip_max_length, dtype=torch.bool, device=device),
    )
    t = torch.rand(batch, device=device)
    tokens = batch * frames * height * width

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad():
            dit(latents, t, **inputs)

    def train_step():
        dit(latents, t, **inputs).float().pow(2).mean().backward()

    out = {"size": size, "backend": backend, "checkpointing": checkpointing, "tokens_per_sample": frames * height * width}
    for name, fn in (("forward", forward), ("forward_backward", train_step)):
        fn()
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        out[f"{name}_tokens_per_s"] = tokens * steps / (time.perf_counter() - start)
    if device == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--one", help=argparse.SUPPRESS)  # size,backend,checkpointing: run one variant
    args = parser.parse_args()
    if args.one:
        size, backend, ckpt = args.one.split(",")
        print(json.dumps(measure(size, backend, ckpt == "1", args.steps, args.device)))
        return
    rows = []
    for size in SIZES:
        for backend in ("sdpa", "math"):
            for ckpt in ("0", "1"):
                result = subprocess.run(
                    [sys.executable, __file__, "--one", f"{size},{backend},{ckpt}", "--steps", str(args.steps), "--device", args.device],
                    capture_output=True, text=True, check=True, cwd=REPO,
                )
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"{'size':6} {'attention':9} {'ckpt':4} {'fwd tok/s':>11} {'fwd+bwd tok/s':>14} {'peak MiB':>9}")
    for r in rows:
        print(
            f"{r['size']:6} {r['backend']:9} {'yes' if r['checkpointing'] else 'no':4} "
            f"{r['forward_tokens_per_s']:11.0f} {r['forward_backward_tokens_per_s']:14.0f} {r['peak_mib']:9.0f}"
        )
    by = {(r["size"], r["backend"], r["checkpointing"]): r for r in rows}
    for size in SIZES:
        sdpa, math_ = by[(size, "sdpa", False)], by[(size, "math", False)]
        plain, ckpt = by[(size, "sdpa", False)], by[(size, "sdpa", True)]
        print(
            f"{size}: SDPA / math fwd+bwd throughput {sdpa['forward_backward_tokens_per_s'] / math_['forward_backward_tokens_per_s']:.2f}x; "
            f"checkpointing: throughput {ckpt['forward_backward_tokens_per_s'] / plain['forward_backward_tokens_per_s']:.2f}x, "
            f"peak memory {ckpt['peak_mib'] / plain['peak_mib']:.2f}x"
        )


if __name__ == "__main__":
    main()
