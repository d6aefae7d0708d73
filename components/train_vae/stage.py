"""train-vae: train the causal Video-VAE on curated clips (reconstruction + KL).

Starts from ``vae.train.init_from`` when given (for example released weights), else from scratch. Logs
the loss curve, held-out reconstruction PSNR and side-by-side reconstruction videos to MLflow, and
writes a checkpoint folder (see :mod:`t2v.checkpoints`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from t2v import checkpoints, tracking
from t2v.data import fit_clip, from_model_video, iter_clips, to_model_video
from t2v.stage import (
    Progress,
    StageContext,
    StageError,
    child_run,
    fingerprint,
    publish_manifest,
    stage_outputs,
)

log = logging.getLogger(__name__)
STAGE = "train-vae"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _latent_normalisation(vae, videos: np.ndarray, batch: int = 8):
    """Shift and scale that give the training clips' posterior means zero mean and unit variance, so the
    DiT's data has the scale of its noise (the role of the release's latent scale, 1.0 for its VAE)."""
    import torch

    means = []
    with torch.no_grad():
        for start in range(0, len(videos), batch):
            chunk = torch.stack([to_model_video(v) for v in videos[start : start + batch]])
            means.append(vae.encode_distribution(chunk)[0])
    z = torch.cat(means)
    shift, std = float(z.mean()), float(z.std())
    log.info("train-vae: latent mean %.4f std %.4f -> shift_factor, scaling_factor %.4f", shift, std, 1.0 / std)
    return vae.cfg.model_copy(update={"shift_factor": shift, "scaling_factor": 1.0 / max(std, 1e-6)})


def run(ctx: StageContext, clips: dict[str, Any]) -> dict[str, Any]:
    import mlflow
    import torch

    from model.losses import vae_loss
    from model.vae import CausalVideoVAE

    cfg = ctx.config.vae
    settings = ctx.config.section("vae")
    fp = fingerprint(STAGE, settings, {"clips": clips})
    with stage_outputs(ctx, STAGE, fp) as done, child_run(ctx, STAGE, params=settings) as run_:
        if done is not None:
            mlflow.set_tag("t2v.skipped", "up-to-date")
            return done
        train = cfg.train
        torch.manual_seed(train.seed)
        clip_list = list(iter_clips(clips))
        videos = np.stack([fit_clip(c.frames, train.num_frames, train.resolution) for c in clip_list])
        if len(videos) < 2:
            raise StageError(f"train-vae needs at least 2 curated clips, got {len(videos)}")
        n_eval = min(train.num_eval_clips, max(1, len(videos) // 5))
        eval_videos, train_videos = videos[:n_eval], videos[n_eval:]
        log.info("train-vae: %d training clips, %d held out, frames %s", len(train_videos), n_eval, videos.shape[1:])
        mlflow.log_params({"data.train_clips": len(train_videos), "data.eval_clips": n_eval})

        vae = CausalVideoVAE(cfg.model)
        if train.init_from:
            vae.load_state_dict(checkpoints.load_state_dict(train.init_from, checkpoints.VAE_WEIGHTS))
        optimizer = torch.optim.AdamW(vae.parameters(), lr=train.lr)
        generator = np.random.default_rng(train.seed)
        progress = Progress(STAGE, train.steps)
        start = time.monotonic()
        for step in range(1, train.steps + 1):
            index = generator.choice(len(train_videos), size=min(train.batch_size, len(train_videos)), replace=False)
            batch = torch.stack([to_model_video(train_videos[i]) for i in index])
            mean, logvar = vae.encode_distribution(batch)
            latents = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if train.sample_posterior else mean
            recon = vae.decode(latents)
            loss, parts = vae_loss(recon, batch, mean, logvar, kl_weight=train.kl_weight, mse_weight=train.mse_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            if step % train.log_every == 0 or step == train.steps:
                elapsed = time.monotonic() - start
                metrics = {f"train/{k}": float(v) for k, v in parts.items()}
                metrics["train/loss"] = float(loss)
                metrics["train/clips_per_s"] = step * len(index) / elapsed
                mlflow.log_metrics(metrics, step=step)
            progress.update(step, loss=float(loss))

        vae.eval()
        if train.normalize_latents:
            vae.cfg = _latent_normalisation(vae, train_videos)
            mlflow.log_params({"latent.shift_factor": vae.cfg.shift_factor, "latent.scaling_factor": vae.cfg.scaling_factor})
        with torch.no_grad():
            eval_batch = torch.stack([to_model_video(v) for v in eval_videos])
            recon = vae.decode(vae.encode(eval_batch, sample=False))
        recon_frames = [from_model_video(r) for r in recon]
        scores = [psnr(a, b) for a, b in zip(eval_videos, recon_frames)]
        summary = {
            "steps": train.steps,
            "final_loss": float(loss),
            "eval_psnr": float(np.mean(scores)),
            "train_clips": len(train_videos),
            "train_seconds": round(time.monotonic() - start, 1),
        }
        mlflow.log_metrics({"eval/psnr": summary["eval_psnr"]})
        specs = [c.meta.get("spec") for c in clip_list[:n_eval]]
        if all(specs):  # synthetic data: does the reconstruction keep what the checker looks at?
            from t2v.world import SceneSpec, score_batch

            recon_scores = score_batch(recon_frames, [SceneSpec.from_dict(spec) for spec in specs])
            summary["eval_recon_checker"] = {k: float(v) for k, v in recon_scores.items() if k != "n"}
            mlflow.log_metrics({f"eval/recon_checker_{k}": v for k, v in summary["eval_recon_checker"].items()})
        for i in range(min(2, len(eval_videos))):
            side_by_side = np.concatenate([eval_videos[i], recon_frames[i]], axis=2)
            tracking.log_video_sample(side_by_side, f"reconstruction-{i}", artifact_path="reconstructions")
        ckpt_uri = ctx.stage_uri(STAGE) + "/checkpoint"
        files = checkpoints.save(
            vae, vae.cfg.model_dump(mode="json"), ckpt_uri, checkpoints.VAE_WEIGHTS, state={"step": train.steps}
        )
        log.info("train-vae: eval PSNR %.2f dB, checkpoint %s", summary["eval_psnr"], ckpt_uri)
        return publish_manifest(
            ctx,
            STAGE,
            fp,
            files={f"checkpoint/{k}": v for k, v in files.items()},
            summary=summary,
            inputs={"clips": clips},
            mlflow_run_id=run_.info.run_id,
            extra={"checkpoint_uri": ckpt_uri, "mirror": ["eval_psnr", "final_loss"]},
        )
