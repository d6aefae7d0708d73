"""The trainer on 2 processes (real torchrun, gloo, fp32 on CPU): DDP vs FSDP2, each with and without
activation checkpointing, side by side in one run. Prints tokens/s (steps after the warm-up), rank 0's
peak memory above its start, and the share of step time spent waiting for data; then the ratios.

    .venv/bin/python bench/train.py [--steps 12] [--layers 4] [--batch 2]

CPU peak memory is the peak resident set (glibc's mmap threshold fixed so freed tensors leave it), which
is what FSDP's sharding and checkpointing change here; on GPUs the trainer logs CUDA's peak instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from t2v.config import load_config  # noqa: E402
from t2v.world.latents import write_synthetic_latents  # noqa: E402
from tests.trainer_runs import make_job, run  # noqa: E402 - the same job builder the tests use

WARMUP = 2


def variant(root: Path, name: str, overrides: list[str], latents: dict) -> dict:
    job = make_job(root / name, overrides, latents=latents)
    run(job, 2, timeout=1800, env={"MALLOC_MMAP_THRESHOLD_": "65536"})
    records = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > WARMUP]
    seconds = sum(r["seconds"] for r in timed)
    result = json.loads((root / name / "result.json").read_text())
    memory = result["memory"]
    return {
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds,
        "peak_mib": (memory["peak_bytes"] - memory["base_bytes"]) / 2**20,
        "data_wait_share": sum(r["data_seconds"] for r in timed) / seconds,
        "param_opt_mib": (result["bytes_per_rank"][0]["params"] + result["bytes_per_rank"][0]["optimizer"]) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2, help="samples per rank")
    args = parser.parse_args()
    model = [f"dit.num_layers={args.layers}", "dit.num_attention_heads=4", "dit.attention_head_dim=64", "dit.rope_split=[32,16,16]"]
    common = [*model, f"t2i.steps={args.steps}", f"t2i.batch_size={args.batch}", "t2i.nproc_per_node=2", "t2i.data=videos", "t2i.warmup_steps=1"]
    config = load_config("tiny", ["t2i.data=images+videos", *common])
    te = config.text_encoders
    with tempfile.TemporaryDirectory(prefix="t2v-bench-train-") as tmp:
        root = Path(tmp)
        latents = write_synthetic_latents(
            root / "latents", samples=16, frames=3, channels=config.dit.in_channels, height=16, width=16,
            llm_tokens=te.llm_max_length, llm_channels=config.dit.caption_channels,
            clip_tokens=te.clip_max_length, clip_channels=config.dit.clip_channels,
        )
        results = {}
        for dp in ("ddp", "fsdp"):
            for ac in ("none", "full"):
                name = f"{dp}-ac_{ac}"
                results[name] = variant(root, name, [*common, f"t2i.parallel.data_parallel={dp}", f"t2i.activation_checkpointing={ac}"], latents)
                print(name, json.dumps({k: round(v, 4) for k, v in results[name].items()}), flush=True)
    print(f"\n{'variant':<14} {'tokens/s':>10} {'peak MiB':>10} {'params+opt MiB':>15} {'data wait':>10}")
    for name, r in results.items():
        print(f"{name:<14} {r['tokens_per_s']:>10.0f} {r['peak_mib']:>10.1f} {r['param_opt_mib']:>15.1f} {r['data_wait_share']:>10.2%}")
    for ac in ("none", "full"):
        f, d = results[f"fsdp-ac_{ac}"], results[f"ddp-ac_{ac}"]
        print(f"AC {ac}: FSDP2 / DDP tokens/s {f['tokens_per_s'] / d['tokens_per_s']:.3f}, peak memory {f['peak_mib'] / d['peak_mib']:.3f}, "
              f"params+optimizer {f['param_opt_mib'] / d['param_opt_mib']:.3f}")
    for dp in ("ddp", "fsdp"):
        on, off = results[f"{dp}-ac_full"], results[f"{dp}-ac_none"]
        print(f"{dp}: checkpointing / none tokens/s {on['tokens_per_s'] / off['tokens_per_s']:.3f}, peak memory {on['peak_mib'] / off['peak_mib']:.3f}")


if __name__ == "__main__":
    main()
