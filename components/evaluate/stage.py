"""evaluate: generate videos for evaluation prompts, score them, and decide the promotion gate.

With the synthetic world the prompts are held-out scenes and every video is scored exactly by the
world's checker (right colour? right background? moving the right way?). A randomly initialised DiT of
the same shape is scored the same way as a floor, and the current ``champion`` (if any) is compared. The
Step-Video-T2V-Eval prompts (128 prompts, 11 categories) are generated and logged for human review when
``evaluate.prompts`` is ``step-video-t2v-eval``; they carry no automatic score here.

The gate (:func:`components.evaluate.gate.decide`) passes when the mean checker score reaches
``evaluate.gate_min_score``, beats the untrained floor and does not fall more than
``evaluate.gate_max_regression`` below the champion's; ``register`` sets the ``challenger`` alias only then.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluate import compare, gate, report
from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, registry, storage, tracking
from t2v.errors import StageError
from t2v.generate import conditioning, sample_videos, text_encoders_of
from t2v.progress import Progress
from t2v.shards import from_model_video, load_negative

log = logging.getLogger(__name__)
STAGE = "evaluate"
MODEL_ORDER = ("challenger", "champion", "start", "untrained")  # columns of the report
#: package data (the ``configs`` package), so the installed project finds it wherever it is installed
EVAL_PROMPTS = ("configs", "eval/step-video-t2v-eval-prompts.txt")
# Table 7 of the report: the prompts stand in contiguous blocks in this order and count.
EVAL_CATEGORIES = (
    ("Sports", 12),
    ("Food", 11),
    ("Scenery", 12),
    ("Animals", 12),
    ("Festivals", 11),
    ("Combined Concepts", 12),
    ("Surreal", 11),
    ("People", 12),
    ("3D Animation", 12),
    ("Cinematography", 11),
    ("Style", 12),
)


def step_video_eval_prompts() -> list[tuple[str, str]]:
    """(category, prompt) for the 128 Step-Video-T2V-Eval prompts."""
    package, name = EVAL_PROMPTS
    text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    categories = [name for name, count in EVAL_CATEGORIES for _ in range(count)]
    if len(prompts) != len(categories):
        raise ValueError(f"{package}/{name}: expected {len(categories)} prompts, found {len(prompts)}")
    return list(zip(categories, prompts))


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return ctx.config.section("evaluate")


def evaluation_prompts(ctx) -> tuple[list | None, list[str], list[str]]:
    """(scene specs or None, categories, prompts) of ``evaluate.prompts``: held-out scenes of the synthetic
    world, the 128 Step-Video-T2V-Eval prompts, or a prompt file (one prompt a line, or
    ``category<TAB>prompt``); the first ``num_prompts``."""
    cfg = ctx.config.evaluate
    if cfg.prompts == "heldout":
        from t2v.world import heldout_prompts

        specs = heldout_prompts(ctx.config.world, cfg.num_prompts)
        return specs, ["heldout"] * len(specs), [spec.caption() for spec in specs]
    if cfg.prompts == "step-video-t2v-eval":
        pairs = step_video_eval_prompts()[: cfg.num_prompts]
    else:
        lines = [line.strip() for line in storage.read_text(cfg.prompt_file).splitlines() if line.strip()]
        pairs = [tuple(line.split("\t", 1)) if "\t" in line else ("prompts", line) for line in lines][: cfg.num_prompts]
        if not pairs:
            raise StageError(f"evaluate.prompt_file {cfg.prompt_file}: no prompts")
    return None, [c for c, _ in pairs], [p for _, p in pairs]


def _champion_checkpoint(ctx) -> tuple[str, str] | None:
    """(version, checkpoint URI) of the registered champion DiT; None when there is none yet."""
    from mlflow.exceptions import MlflowException

    reg = ctx.config.registry
    try:
        version = registry.version_by_alias(ctx.tracking_uri, reg.dit_model_name, reg.champion_alias)
    except MlflowException as exc:
        raise StageError(f"looking up {reg.dit_model_name}@{reg.champion_alias}: {exc.message}") from None
    if version is None:
        return None
    uri = (version.tags or {}).get(registry.TAG_CHECKPOINT)
    if not uri:
        raise StageError(f"{reg.dit_model_name} v{version.version} ({reg.champion_alias}) has no {registry.TAG_CHECKPOINT} tag")
    return str(version.version), uri


def _score_videos(videos, prompts, specs, clip, aesthetic) -> list[dict[str, float]]:
    from t2v.video_metrics import video_metrics

    rows = video_metrics(videos, prompts, clip=clip, aesthetic=aesthetic)
    if specs is not None:
        from t2v.world import score_video

        for row, video, spec in zip(rows, videos, specs):
            row.update({f"checker_{k}": v for k, v in score_video(video, spec).items()})
    return rows


def _evaluate(
    run: StageRun, dit: dict[str, Any], vae: dict[str, Any], latents: dict[str, Any], raw: dict[str, Any]
) -> StageOutput:
    import mlflow
    import torch

    from model.dit import StepVideoDiT
    from t2v.video_metrics import ClipSimilarity, load_plugin

    ctx = run.ctx
    cfg = ctx.config.evaluate
    start = time.monotonic()
    specs, categories, prompts = evaluation_prompts(ctx)
    with ExitStack() as stack:
        text = conditioning(text_encoders_of(raw, ctx.config.text_encoders, stack), prompts)
    negative = {k: v[None] for k, v in load_negative(latents).items()}  # a batch of one prompt
    autoencoder = checkpoints.load_vae(vae["checkpoint_uri"])
    latent_shape = list(latents["summary"]["video_latent_shape"])
    latent_shape[0] = autoencoder.cfg.latent_frames(cfg.num_frames)
    clip = ClipSimilarity(cfg.clip_model_uri) if cfg.clip_model_uri else None
    aesthetic = load_plugin(cfg.aesthetic_plugin) if cfg.aesthetic_plugin else None
    score_metric = "checker_total" if specs is not None else "clip_similarity" if clip is not None else None

    models: dict[str, Any] = {"challenger": dit["checkpoint_uri"]}
    champion = _champion_checkpoint(ctx) if cfg.compare_champion else None
    if champion is not None and champion[1] != dit["checkpoint_uri"]:
        models["champion"] = champion[1]
    start_uri = dit.get("init_checkpoint_uri")
    if cfg.compare_start and start_uri and start_uri not in models.values():
        models["start"] = start_uri  # what the last training stage started from (t2v, before dpo)
    if cfg.compare_untrained and specs is not None:
        models["untrained"] = None
    results: dict[str, dict[str, Any]] = {}
    progress = Progress(STAGE, len(models))
    for done, (name, uri) in enumerate(models.items(), start=1):
        if uri is None:
            torch.manual_seed(cfg.seed)
            net = StepVideoDiT(ctx.config.dit, attention_backend=cfg.attention_backend).eval()
        else:
            net = checkpoints.load_dit(uri)
            net.set_attention_backend(cfg.attention_backend)
        videos = sample_videos(net, autoencoder, text, negative, latent_shape, cfg.num_steps, cfg.guidance_scale, cfg.shift, cfg.seed)
        del net
        scores = _score_videos(videos, prompts, specs, clip, aesthetic)
        results[name] = {"videos": videos, "scores": scores,
                         "mean": {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}}
        progress.update(done)
    if clip is not None:
        clip.close()

    sampler = {"num_steps": cfg.num_steps, "guidance_scale": cfg.guidance_scale, "shift": cfg.shift,
               "seed": cfg.seed, "num_frames": cfg.num_frames, "negative_prompt": cfg.negative_prompt}
    summary: dict[str, Any] = {"prompts": len(prompts), "prompt_set": cfg.prompts, "sampler": sampler,
                               "score_metric": score_metric, "model_means": {m: r["mean"] for m, r in results.items()}}
    if specs is not None:
        summary["vae_ceiling_scores"] = _vae_ceiling(ctx, autoencoder, specs)
        summary["vae_ceiling_total"] = summary["vae_ceiling_scores"]["total"]
    metrics = {f"{name}/{key}": value for name, result in results.items() for key, value in result["mean"].items()}
    metrics.update({f"vae_ceiling/{k}": v for k, v in summary.get("vae_ceiling_scores", {}).items()})
    mlflow.log_metrics(metrics)

    def mean_score(name: str) -> float | None:
        return results[name]["mean"].get(score_metric) if name in results and score_metric else None

    summary["score_total"] = mean_score("challenger")
    summary["scores"] = results["challenger"]["mean"]
    if "untrained" in results:
        summary["untrained_score_total"] = mean_score("untrained")
    if "start" in results:
        summary["start_checkpoint_uri"] = models["start"]
        summary["start_score_total"] = mean_score("start")
    summary["champion_version"] = champion[0] if champion else None
    summary["champion_score_total"] = mean_score("champion") if "champion" in results else (
        summary["score_total"] if champion else None  # the champion is this very checkpoint
    )
    if "champion" in results and score_metric:
        summary["champion_comparison"] = compare.compare(
            categories, [s[score_metric] for s in results["challenger"]["scores"]],
            [s[score_metric] for s in results["champion"]["scores"]], cfg.tie_tolerance, cfg.bootstrap_samples, cfg.seed,
        )
        versus = summary["champion_comparison"]
        mlflow.log_metrics({"champion/win_rate": versus["win_rate"], "champion/wins": versus["wins"],
                            "champion/ties": versus["ties"], "champion/losses": versus["losses"]})
    decision = gate.decide(
        summary["score_total"], cfg.gate_min_score, cfg.gate_max_regression,
        untrained_score=summary.get("untrained_score_total"), champion_score=summary["champion_score_total"],
    )
    summary["gate_passed"] = decision.passed
    summary["gate_reason"] = decision.reason
    summary["gate_notes"] = decision.notes
    mlflow.log_metric("gate_passed", float(decision.passed))
    mlflow.set_tag("t2v.gate", decision.reason)
    tracking.log_to_parent(ctx.tracking_uri, ctx.parent_run_id, metrics={
        "eval/score": summary["score_total"], "eval/start_score": summary.get("start_score_total"),
        "eval/champion_score": summary["champion_score_total"] if "champion" in results else None,
        "eval/win_rate_vs_champion": (summary.get("champion_comparison") or {}).get("win_rate"),
        "eval/untrained_score": summary.get("untrained_score_total"), "eval/vae_ceiling": summary.get("vae_ceiling_total"),
        "eval/gate_passed": float(decision.passed),
    }, tags={"t2v.gate": decision.reason, "t2v.eval_run_id": run.run_id, "t2v.eval_report": "evaluation/report.html"})

    rows = []
    for i, prompt in enumerate(prompts):
        row = {"index": i, "category": categories[i], "prompt": prompt}
        for name, result in results.items():
            row.update({f"{name}.{k}": v for k, v in result["scores"][i].items()})
        rows.append(row)
    mlflow.log_table({"prompt": [r["prompt"] for r in rows], **_columns(rows)}, artifact_file="eval/per_prompt.json")
    for i in range(min(cfg.num_sample_videos, len(prompts))):
        tracking.log_video_sample(results["challenger"]["videos"][i], f"sample-{i:02d}", artifact_path="samples")
    if ctx.parent_run_id and prompts:  # the first one on the pipeline's run too, where a reviewer lands
        tracking.log_video_sample(results["challenger"]["videos"][0], "sample-00", fps=ctx.config.world.fps,
                                  artifact_path="samples", run_id=ctx.parent_run_id)
    files = _write_outputs(run, ctx, cfg, summary, rows, results, categories, prompts)
    summary["seconds"] = round(time.monotonic() - start, 1)
    log.info("evaluate: %s %s vs untrained %s, champion %s; gate %s", score_metric, summary["score_total"],
             summary.get("untrained_score_total"), summary["champion_score_total"], decision.reason)
    return StageOutput(
        files=files,
        summary=summary,
        extra={"text_encoders": latents.get("text_encoders")},
        mirror=("score_total", "start_score_total", "untrained_score_total", "vae_ceiling_total", "gate_passed"),
    )


def _vbench_name(prompt: str, index: int) -> str:
    """VBench's file name for a prompt's ``index``-th video: the prompt itself (path separators replaced)."""
    return f"{prompt.replace('/', ' ').strip()[:200]}-{index}.mp4"


def _write_outputs(run, ctx, cfg, summary, rows, results, categories, prompts) -> dict[str, Any]:
    """The report (page + GIFs), the per-prompt table and the challenger's videos in VBench's layout,
    uploaded under the stage's folder and logged to MLflow."""
    import mlflow

    from t2v.video import write_gif, write_mp4

    fps = ctx.config.world.fps
    with tempfile.TemporaryDirectory(prefix="t2v-evaluate-") as tmp_name:
        tmp = Path(tmp_name)
        grid = []
        for i in range(min(cfg.report_videos, len(prompts))):
            videos = {}
            for name in MODEL_ORDER:
                if name in results:
                    relative = f"videos/{i:03d}-{name}.gif"
                    if write_gif(tmp / "report" / relative, results[name]["videos"][i], fps):
                        videos[name] = relative
            grid.append({"prompt": prompts[i], "category": categories[i], "videos": videos})
        page = report.render(summary, rows, [m for m in MODEL_ORDER if m in results], grid)
        (tmp / "report" / "index.html").write_text(page, encoding="utf-8")
        (tmp / "per_prompt.json").write_text(json.dumps(rows, indent=1, default=float))
        if cfg.vbench_layout:
            seen: dict[str, int] = {}
            for i, prompt in enumerate(prompts):  # a repeated prompt's videos are <prompt>-0, -1, ...
                seen[prompt] = seen.get(prompt, -1) + 1
                write_mp4(tmp / "vbench" / _vbench_name(prompt, seen[prompt]), results["challenger"]["videos"][i], fps)
        names = [str(f.relative_to(tmp)) for f in sorted(tmp.rglob("*")) if f.is_file()]
        files = storage.upload_files(tmp, names, run.uri)
        mlflow.log_artifacts(str(tmp / "report"), "eval/report")
        # one self-contained page (its GIFs inline) for the MLflow UI, here and on the parent run
        inline = tmp / "inline" / "report.html"
        inline.parent.mkdir()
        inline.write_text(report.self_contained(page, tmp / "report"), encoding="utf-8")
        mlflow.log_artifact(str(inline), "eval")
        if ctx.parent_run_id:
            client = mlflow.MlflowClient()
            client.log_artifact(ctx.parent_run_id, str(inline), "evaluation")
    mlflow.set_tag("t2v.eval_report", "eval/report.html")
    return {"report/index.html": files["report/index.html"], "per_prompt.json": files["per_prompt.json"],
            **{k: v for k, v in files.items() if k.startswith("vbench/")}}


def _vae_ceiling(ctx, autoencoder, specs) -> dict[str, float]:
    """The checker's score of the prompts' true videos after a VAE round trip: the best any DiT can do
    with this VAE, next to the untrained floor."""
    import torch

    from t2v.shards import fit_clip, to_model_video
    from t2v.world import render_scene, score_batch

    world, cfg = ctx.config.world, ctx.config.evaluate
    resolution = tuple(ctx.config.encode.resolution)
    truth = [fit_clip(render_scene(s, cfg.num_frames, world.height, world.width, seed=i), cfg.num_frames, resolution) for i, s in enumerate(specs)]
    with torch.no_grad():
        recon = autoencoder.decode(autoencoder.encode(torch.stack([to_model_video(v) for v in truth]), sample=False))
    scores = score_batch([from_model_video(v) for v in recon], specs)
    return {k: float(v) for k, v in scores.items() if k != "n"}


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = [k for k in rows[0] if k != "prompt"]
    return {k: [r.get(k) for r in rows] for k in keys}


STAGES = (
    Stage(
        STAGE,
        output="evaluation",
        inputs={"dit": "dit", "vae": "vae", "latents": "latents", "raw": "raw"},
        settings=_settings,
        body=_evaluate,
    ),
)
