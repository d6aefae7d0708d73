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

import html
import json
import logging
import time
from contextlib import ExitStack
from importlib import resources
from typing import Any

import numpy as np

from components.evaluate import gate
from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, registry, storage, tracking
from t2v.errors import StageError
from t2v.generate import conditioning, sample_videos, text_encoders_of
from t2v.progress import Progress
from t2v.shards import from_model_video, load_negative

log = logging.getLogger(__name__)
STAGE = "evaluate"
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


def _evaluate(
    run: StageRun, dit: dict[str, Any], vae: dict[str, Any], latents: dict[str, Any], raw: dict[str, Any]
) -> StageOutput:
    import mlflow
    import torch

    from model.dit import StepVideoDiT

    ctx = run.ctx
    cfg = ctx.config.evaluate
    with ExitStack() as stack:
        start = time.monotonic()
        if cfg.prompts == "heldout":
            from t2v.world import heldout_prompts

            specs = heldout_prompts(ctx.config.world, cfg.num_prompts)
            prompts = [spec.caption() for spec in specs]
            categories = ["heldout"] * len(prompts)
        else:
            specs = None
            pairs = step_video_eval_prompts()[: cfg.num_prompts]
            categories, prompts = [c for c, _ in pairs], [p for _, p in pairs]
        text = conditioning(text_encoders_of(raw, ctx.config.text_encoders, stack), prompts)
        negative = {k: v[None] for k, v in load_negative(latents).items()}  # a batch of one prompt
        autoencoder = checkpoints.load_vae(vae["checkpoint_uri"])
        latent_shape = list(latents["summary"]["video_latent_shape"])
        latent_shape[0] = autoencoder.cfg.latent_frames(cfg.num_frames)

        models = {"trained": checkpoints.load_dit(dit["checkpoint_uri"])}
        models["trained"].set_attention_backend(cfg.attention_backend)
        if cfg.compare_untrained and specs is not None:
            torch.manual_seed(cfg.seed)
            models["untrained"] = StepVideoDiT(ctx.config.dit, attention_backend=cfg.attention_backend).eval()
        results: dict[str, dict[str, Any]] = {}
        progress = Progress(STAGE, len(models))
        for done_count, (name, net) in enumerate(models.items(), start=1):
            videos = sample_videos(
                net, autoencoder, text, negative, latent_shape, cfg.num_steps, cfg.guidance_scale, cfg.shift, cfg.seed
            )
            results[name] = {"videos": videos}
            if specs is not None:
                from t2v.world import score_video

                scores = [score_video(v, s) for v, s in zip(videos, specs)]
                results[name]["scores"] = scores
                results[name]["mean"] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
            progress.update(done_count)

        summary: dict[str, Any] = {"prompts": len(prompts), "prompt_set": cfg.prompts}
        if specs is not None:
            summary["vae_ceiling_scores"] = _vae_ceiling(ctx, autoencoder, specs)
            summary["vae_ceiling_total"] = summary["vae_ceiling_scores"]["total"]
        metrics: dict[str, float] = {}
        for name, result in results.items():
            for key, value in result.get("mean", {}).items():
                metrics[f"{name}/{key}"] = value
        for key, value in summary.get("vae_ceiling_scores", {}).items():
            metrics[f"vae_ceiling/{key}"] = value
        mlflow.log_metrics(metrics)
        trained_mean = results["trained"].get("mean", {})
        summary["score_total"] = trained_mean.get("total")
        summary["scores"] = trained_mean
        if "untrained" in results:
            summary["untrained_score_total"] = results["untrained"]["mean"]["total"]
            summary["untrained_scores"] = results["untrained"]["mean"]
        champion = _champion_score(ctx)
        summary["champion_score_total"] = champion
        decision = gate.decide(
            summary["score_total"], cfg.gate_min_score, cfg.gate_max_regression,
            untrained_score=summary.get("untrained_score_total"), champion_score=champion,
        )
        summary["gate_passed"] = decision.passed
        summary["gate_reason"] = decision.reason
        summary["gate_notes"] = decision.notes
        mlflow.log_metric("gate_passed", float(summary["gate_passed"]))
        mlflow.set_tag("t2v.gate", summary["gate_reason"])

        rows = []
        for i, prompt in enumerate(prompts):
            row = {"index": i, "category": categories[i], "prompt": prompt}
            for name, result in results.items():
                if "scores" in result:
                    row.update({f"{name}.{k}": v for k, v in result["scores"][i].items()})
            rows.append(row)
        mlflow.log_table({"prompt": [r["prompt"] for r in rows], **_columns(rows)}, artifact_file="eval/per_prompt.json")
        for i in range(min(cfg.num_sample_videos, len(prompts))):
            tracking.log_video_sample(results["trained"]["videos"][i], f"sample-{i:02d}", artifact_path="samples")
        report = _report_html(prompts, categories, results, summary)
        mlflow.log_text(report, "eval/report.html")
        storage.write_text(storage.join(run.uri, "report.html"), report)
        storage.write_json(storage.join(run.uri, "per_prompt.json"), rows)
        summary["seconds"] = round(time.monotonic() - start, 1)
        log.info(
            "evaluate: trained %.3f vs untrained %s; gate %s",
            summary["score_total"] or float("nan"),
            summary.get("untrained_score_total"),
            summary["gate_reason"],
        )
        return StageOutput(
            files={"report.html": {"uri": storage.join(run.uri, "report.html")}},
            summary=summary,
            extra={"text_encoders": latents.get("text_encoders")},
            mirror=("score_total", "untrained_score_total", "vae_ceiling_total", "gate_passed"),
        )


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


def _champion_score(ctx) -> float | None:
    """The champion DiT's evaluation score from its model-version tags; None when there is no champion
    yet (no such registered model, or no such alias). Any other failure (the tracking server is down,
    permissions) fails the stage with its reason rather than pass for "no champion"."""
    from mlflow.exceptions import MlflowException

    reg = ctx.config.registry
    try:
        version = registry.version_by_alias(ctx.tracking_uri, reg.dit_model_name, reg.champion_alias)
    except MlflowException as exc:
        raise StageError(f"looking up {reg.dit_model_name}@{reg.champion_alias}: {exc.message}") from None
    if version is None:
        return None
    value = version.tags.get("eval.score_total")
    return float(value) if value not in (None, "", "None") else None


def _report_html(prompts, categories, results, summary) -> str:
    head = "".join(f"<th>{html.escape(name)} total</th>" for name in results if "scores" in results[name])
    body = []
    for i, prompt in enumerate(prompts):
        cells = "".join(
            f"<td>{results[name]['scores'][i]['total']:.2f}</td>" for name in results if "scores" in results[name]
        )
        body.append(f"<tr><td>{i}</td><td>{html.escape(categories[i])}</td><td>{html.escape(prompt)}</td>{cells}</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>Evaluation</h1><pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>"
        f"<table><tr><th>#</th><th>category</th><th>prompt</th>{head}</tr>{''.join(body)}</table></body></html>"
    )


STAGES = (
    Stage(
        STAGE,
        output="evaluation",
        inputs={"dit": "dit", "vae": "vae", "latents": "latents", "raw": "raw"},
        settings=_settings,
        body=_evaluate,
    ),
)
