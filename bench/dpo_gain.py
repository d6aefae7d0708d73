"""Does Video-DPO help, by more than the seed-to-seed spread? On a pipeline run whose stages up to t2v
are done (``make demo`` leaves one), side by side in one run:

* the t2v model's checker score on the held-out prompts at each evaluation seed (the spread);
* for each DPO seed: the dpo stage from that t2v model, then the same evaluations of its result.

Prints every score, the spread (max - min over evaluation seeds) of each model, the mean gain, and the
DPO figures (K, pairs, beta, the preference-accuracy curve from the trainer's metrics).

    .venv/bin/python bench/dpo_gain.py --run-name tiny-20261201-143613 --root file://$PWD/.runs/data \
        --tracking-uri sqlite:///$PWD/.runs/mlflow.db [--eval-seeds 1234 1 2] [--dpo-seeds 5 6]

The demo's t2v model scores within ~0.03 of its VAE's round-trip ceiling, which leaves DPO no room to show
itself; ``--start t2vi`` starts DPO from the t2vi model instead (a model with headroom: 0.575 against a
ceiling of 0.835). The figures in docs/TRAINING.md ("Video-DPO") came from

    --start t2vi --set evaluate.num_prompts=96 --set evaluate.compare_untrained=false \
    --set evaluate.compare_start=false --set evaluate.compare_champion=false --set dpo.num_prompts=96 \
    --set dpo.samples_per_prompt=8 --set dpo.pairs_per_prompt=4 --set dpo.steps=160 --set dpo.lr=1e-4 \
    --set dpo.beta=50 --set dpo.batch_size=8 --set dpo.warmup_steps=10 --dpo-seeds 5 6 7 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T2V = [sys.executable, "-m", "t2v_cli"]


def stage(name: str, args, overrides: list[str], inputs: list[str] = ()) -> dict:
    cmd = [*T2V, "stage", name, "--profile", args.profile, "--run-name", args.run_name, "--root", args.root,
           "--tracking-uri", args.tracking_uri]
    for item in overrides:
        cmd += ["--set", item]
    for item in inputs:
        cmd += ["--input", item]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout[proc.stdout.index("{\n"):])


def accuracy_curve(metrics_jsonl: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in metrics_jsonl.read_text().splitlines()] if metrics_jsonl.is_file() else []
    return [(r["step"], r["dpo/accuracy"]) for r in rows if "dpo/accuracy" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-name", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--start", default="t2v", help="the stage whose DiT DPO starts from (t2v, or t2vi for a model with headroom)")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[1234, 1, 2])
    parser.add_argument("--dpo-seeds", type=int, nargs="+", default=[5, 6])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra overrides (dpo.beta=...)")
    args = parser.parse_args()
    t2v_manifest = f"{args.root.rstrip('/')}/{args.run_name}/{args.start}/manifest.json"

    def scores(inputs: list[str]) -> list[float]:
        return [stage("evaluate", args, [f"evaluate.seed={s}", *args.overrides], inputs)["summary"]["score_total"] for s in args.eval_seeds]

    table = {args.start: scores([f"dit={t2v_manifest}"])}
    runs, curves = {}, {}
    metrics = Path(args.root.removeprefix("file://"), args.run_name, "dpo", "round-0", "metrics.jsonl")
    for seed in args.dpo_seeds:
        seen = len(metrics.read_text().splitlines()) if metrics.is_file() else 0
        out = stage("dpo", args, [f"dpo.seed={seed}", *args.overrides], [f"dit={t2v_manifest}"])
        runs[seed] = out["summary"]
        curves[seed] = accuracy_curve(metrics)[seen:]
        table[f"dpo seed {seed}"] = scores([f"dit={out['manifest_uri']}"])
    print(f"checker score on the held-out prompts, evaluation seeds {args.eval_seeds}:")
    for name, values in table.items():
        print(f"  {name:<12} " + " ".join(f"{v:.3f}" for v in values)
              + f"   mean {statistics.mean(values):.3f}  spread {max(values) - min(values):.3f}")
    base = statistics.mean(table[args.start])
    gains = [statistics.mean(v) - base for k, v in table.items() if k != args.start]
    print(f"mean gain over {args.start}: {statistics.mean(gains):+.3f} (per DPO seed: {', '.join(f'{g:+.3f}' for g in gains)}); "
          f"largest spread of any model over evaluation seeds: {max(max(v) - min(v) for v in table.values()):.3f}")
    start_spread = max(table[args.start]) - min(table[args.start])
    for name, values in table.items():
        if name == args.start:
            continue
        fixed = [after - before for after, before in zip(values, table[args.start], strict=True)]
        print(f"  {name}: gain at each evaluation seed " + " ".join(f"{g:+.3f}" for g in fixed)
              + f"; smallest {min(fixed):+.3f} {'>' if min(fixed) > start_spread else '<='} the start's spread {start_spread:.3f}")
    for seed, summary in runs.items():
        print(f"dpo seed {seed}: K={summary['samples_per_prompt']} prompts={summary['prompts']} pairs={summary['pairs']} "
              f"beta={summary['beta']} training-prompt reward {summary['reward_before']:.3f} -> {summary['reward_after']:.3f}")
        curve = curves[seed][:: max(1, len(curves[seed]) // 10)]
        print("  preference accuracy by step: " + " ".join(f"{step}:{value:.2f}" for step, value in curve))


if __name__ == "__main__":
    main()
