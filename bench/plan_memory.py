"""Re-measure the planner's activation constants (``trainer.planner.ACTIVATION_UNITS``): the peak resident
memory of one DiT forward + backward on the CPU at two depths, per activation-checkpointing mode, fitted to
``peak = b s D a (L k + r)``. Prints the fitted (k, r) beside the planner's.

    .venv/bin/python bench/plan_memory.py

Each measurement is a fresh process with glibc's mmap threshold fixed (freed tensors leave the resident
set), SDPA attention, fp32, batch 4, 3 x 32 x 32 latent tokens, D = 256.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE = r'''
import json, sys, psutil
from trainer.train import resident_peak, torch
from model.dit import StepVideoDiT
from t2v.config import load_config
from trainer.parallel import apply_activation_checkpointing
torch.set_num_threads(1)
mode, layers = sys.argv[1], int(sys.argv[2])
cfg = load_config("tiny", [f"dit.num_layers={layers}", "dit.num_attention_heads=4", "dit.attention_head_dim=64", "dit.rope_split=[32,16,16]"]).dit
dit = StepVideoDiT(cfg, attention_backend="sdpa").train()
apply_activation_checkpointing(dit, mode)
b, f, h, w = 4, 3, 32, 32
args = (torch.randn(b, f, 8, h, w), torch.rand(b), torch.randn(b, 16, 64), torch.ones(b, 16, dtype=torch.bool), torch.randn(b, 8, 32))
base = psutil.Process().memory_info().rss
dit(*args).pow(2).mean().backward()
peak = resident_peak()
print(json.dumps({"units": (peak - base) / (b * f * h * w * cfg.hidden_size * 4)}))
'''


def measure(mode: str, layers: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", ONE, mode, str(layers)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["units"]


def main() -> None:
    sys.path.insert(0, str(REPO))
    from trainer.planner import ACTIVATION_UNITS

    low, high = 2, 6
    for mode in ("none", "full", "selective"):
        a, b = measure(mode, low), measure(mode, high)
        k = (b - a) / (high - low)
        r = a - low * k
        print(f"{mode:<10} measured k={k:5.1f} r={r:5.1f}   planner k={ACTIVATION_UNITS[mode][0]:5.1f} r={ACTIVATION_UNITS[mode][1]:5.1f}")


if __name__ == "__main__":
    main()
