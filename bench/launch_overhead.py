"""Tiny-profile DiT training throughput: one process with all cores vs torchrun with two processes (gloo,
one thread each). Prints tokens/s for both and the ratio. Decides how the tiny profile launches t2i.

    .venv/bin/python bench/launch_overhead.py [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r'''
import json, os, sys, time, torch, torch.distributed as dist
from model import flow_matching as fm
from model.dit import StepVideoDiT
from t2v.config import load_config
steps = int(sys.argv[1]); out = sys.argv[2]
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
world = 1
if "RANK" in os.environ:
    dist.init_process_group("gloo"); world = dist.get_world_size()
cfg = load_config("tiny")
torch.manual_seed(0)
dit = StepVideoDiT(cfg.dit)
model = torch.nn.parallel.DistributedDataParallel(dit) if world > 1 else dit
opt = torch.optim.AdamW(dit.parameters(), lr=1e-3)
per_rank = cfg.t2vi.batch_size * 2 // world  # the same global batch either way
te = cfg.text_encoders
g = torch.Generator().manual_seed(1)
data = torch.randn(per_rank, 3, cfg.dit.in_channels, 4, 4, generator=g)
llm = torch.randn(per_rank, te.llm_max_length, te.llm_dim, generator=g)
clip = torch.randn(per_rank, te.clip_max_length, te.clip_dim, generator=g)
llm_mask = torch.ones(per_rank, te.llm_max_length, dtype=torch.bool)
clip_mask = torch.ones(per_rank, te.clip_max_length, dtype=torch.bool)
def step():
    noise = torch.randn(data.shape, generator=g)
    t = fm.sample_training_timesteps(per_rank, generator=g)
    pred = model(fm.noisy_latents(data, noise, t), fm.model_timestep(t), llm_states=llm, llm_mask=llm_mask, clip_states=clip, clip_mask=clip_mask)
    loss = fm.flow_matching_loss(pred, fm.velocity_target(data, noise))
    opt.zero_grad(); loss.backward(); opt.step()
for _ in range(5): step()
start = time.perf_counter()
for _ in range(steps): step()
seconds = time.perf_counter() - start
if world == 1 or dist.get_rank() == 0:
    tokens = steps * per_rank * world * data[0, :, 0].numel()
    json.dump({"world": world, "seconds": seconds, "tokens_per_s": tokens / seconds}, open(out, "w"))
'''


def run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, check=True, env={**os.environ, **env}, cwd=Path(__file__).resolve().parents[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(WORKER)
        single, double = Path(tmp) / "single.json", Path(tmp) / "double.json"
        run([sys.executable, str(script), str(args.steps), str(single)], {"OMP_NUM_THREADS": str(cores)})
        torchrun = str(Path(sys.executable).parent / "torchrun")
        run([torchrun, "--standalone", "--nproc-per-node", "2", str(script), str(args.steps), str(double)],
            {"OMP_NUM_THREADS": str(max(1, cores // 2))})
        a, b = json.loads(single.read_text()), json.loads(double.read_text())
    print(f"one process, {cores} threads:      {a['tokens_per_s']:10.0f} tokens/s ({a['seconds']:.1f} s)")
    print(f"torchrun, 2 processes (gloo):  {b['tokens_per_s']:10.0f} tokens/s ({b['seconds']:.1f} s)")
    print(f"ratio torchrun / single:        {b['tokens_per_s'] / a['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
