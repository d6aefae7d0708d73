"""train-vae: train the causal Video-VAE on curated clips (reconstruction + KL, optional video LPIPS and GAN).

Starts from ``vae.train.init_from`` when given (for example released weights), else from scratch. Logs
the loss curve, held-out reconstruction PSNR and side-by-side reconstruction videos to MLflow, and
writes a checkpoint folder (see :mod:`t2v.checkpoints`).

With ``perceptual_weight > 0`` the frozen LPIPS network is loaded from ``perceptual_weights_uri`` (and
``perceptual_vgg_uri``), never downloaded. With ``adversarial_weight > 0`` a 3D PatchGAN discriminator trains
beside the VAE from ``disc_start_step`` on (one VAE update, then one discriminator update, each step); its
weights are saved as ``discriminator.safetensors`` in the checkpoint folder and loaded back from
``init_from`` when that folder has them. The maths is in :mod:`model.losses`.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, storage, tracking
from t2v.errors import StageError
from t2v.progress import Progress
from t2v.shards import fit_clip, from_model_video, iter_clips, to_model_video

log = logging.getLogger(__name__)
STAGE = "train-vae"
DISC_WEIGHTS = "discriminator.safetensors"


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
    log.info(
        "train-vae: latent mean %.4f std %.4f -> shift_factor, scaling_factor %.4f", shift, std, 1.0 / std
    )
    return vae.cfg.model_copy(update={"shift_factor": shift, "scaling_factor": 1.0 / max(std, 1e-6)})


def read_state_dict(uri: str) -> dict[str, Any]:
    """A state dict from one weights file at a local path or URI (safetensors or a torch ``.pth``)."""
    with storage.local_file_for(uri) as path:
        try:
            return checkpoints.read_weights_file(path)
        except checkpoints.CheckpointError as exc:
            raise StageError(f"{uri}: {str(exc).split(': ', 1)[-1]}") from None


def load_perceptual(train):
    """The frozen LPIPS network with the weights the config names."""
    from model.perceptual import LPIPS

    net = LPIPS()
    uris = [u for u in (train.perceptual_weights_uri, train.perceptual_vgg_uri) if u]
    try:
        net.load_weights(*(read_state_dict(u) for u in uris))
    except ValueError as exc:
        raise StageError(f"{', '.join(uris)}: {exc}") from None
    log.info("train-vae: video LPIPS weights from %s", ", ".join(uris))
    return net


def build_discriminator(train):
    """The 3D PatchGAN discriminator, with the weights saved beside ``init_from``'s VAE when there are any."""
    from model.discriminator import PatchDiscriminator3D

    disc = PatchDiscriminator3D(channels=train.disc_channels, layers=train.disc_layers)
    uri = storage.join(train.init_from, DISC_WEIGHTS) if train.init_from else None
    if uri and storage.exists(uri):
        try:
            disc.load_state_dict(read_state_dict(uri))
        except RuntimeError as exc:
            raise StageError(
                f"{uri}: does not fit disc_channels={train.disc_channels}, disc_layers={train.disc_layers} "
                f"({' '.join(str(exc).split())[:300]})"
            ) from None
        log.info("train-vae: discriminator continues from %s", train.init_from)
    return disc


def save_discriminator(disc, uri: str) -> dict[str, Any]:
    """Write ``<uri>/discriminator.safetensors``; returns its manifest entry keyed by file name."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in disc.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="t2v-disc-") as tmp:
        save_file(tensors, str(Path(tmp) / DISC_WEIGHTS), metadata={"format": "pt"})
        return storage.upload_files(tmp, [DISC_WEIGHTS], uri)


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return ctx.config.section("vae")


def _train_vae(run: StageRun, clips: dict[str, Any]) -> StageOutput:
    import mlflow
    import torch

    from model.losses import VideoVAELoss
    from model.vae import CausalVideoVAE

    cfg = run.ctx.config.vae
    train = cfg.train
    torch.manual_seed(train.seed)
    perceptual = (
        load_perceptual(train) if train.perceptual_weight > 0 else None
    )  # fails early on bad weights
    discriminator = build_discriminator(train) if train.adversarial_weight > 0 else None
    torch.manual_seed(train.seed)  # the VAE's initialisation does not depend on the optional terms
    clip_list = list(iter_clips(clips))
    videos = np.stack([fit_clip(c.frames, train.num_frames, train.resolution) for c in clip_list])
    if len(videos) < 2:
        raise StageError(f"train-vae needs at least 2 curated clips, got {len(videos)}")
    n_eval = min(train.num_eval_clips, max(1, len(videos) // 5))
    eval_videos, train_videos = videos[:n_eval], videos[n_eval:]
    log.info(
        "train-vae: %d training clips, %d held out, frames %s",
        len(train_videos),
        n_eval,
        videos.shape[1:],
    )
    mlflow.log_params({"data.train_clips": len(train_videos), "data.eval_clips": n_eval})

    vae = CausalVideoVAE(cfg.model)
    if train.init_from:
        vae.load_state_dict(checkpoints.load_state_dict(train.init_from, checkpoints.VAE_WEIGHTS))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=train.lr)
    criterion = VideoVAELoss(
        kl_weight=train.kl_weight,
        mse_weight=train.mse_weight,
        perceptual=perceptual,
        perceptual_weight=train.perceptual_weight,
        discriminator=discriminator,
        adversarial_weight=train.adversarial_weight,
        disc_start_step=train.disc_start_step,
        adaptive_weight_max=train.adaptive_weight_max,
    )
    disc_optimizer = None
    if discriminator is not None:
        disc_optimizer = torch.optim.AdamW(
            discriminator.parameters(), lr=train.disc_lr or train.lr, betas=tuple(train.disc_betas)
        )
    last_layer = vae.decoder.conv_out.weight  # VQGAN's "last layer" for the adaptive weight
    generator = np.random.default_rng(train.seed)
    progress = Progress(STAGE, train.steps)
    start = time.monotonic()
    for step in range(1, train.steps + 1):
        index = generator.choice(
            len(train_videos), size=min(train.batch_size, len(train_videos)), replace=False
        )
        batch = torch.stack([to_model_video(train_videos[i]) for i in index])
        mean, logvar = vae.encode_distribution(batch)
        latents = (
            mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if train.sample_posterior else mean
        )
        recon = vae.decode(latents)
        loss, parts = criterion.generator_loss(recon, batch, mean, logvar, step, last_layer=last_layer)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        disc_loss, disc_parts = criterion.discriminator_loss(recon, batch, step)
        if disc_loss is not None:
            disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            torch.nn.utils.clip_grad_norm_(discriminator.parameters(), 1.0)
            disc_optimizer.step()
            parts.update(disc_parts)
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
        mlflow.log_params(
            {"latent.shift_factor": vae.cfg.shift_factor, "latent.scaling_factor": vae.cfg.scaling_factor}
        )
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
        mlflow.log_metrics(
            {f"eval/recon_checker_{k}": v for k, v in summary["eval_recon_checker"].items()}
        )
    for i in range(min(2, len(eval_videos))):
        side_by_side = np.concatenate([eval_videos[i], recon_frames[i]], axis=2)
        tracking.log_video_sample(side_by_side, f"reconstruction-{i}", artifact_path="reconstructions")
    ckpt_uri = storage.join(run.uri, "checkpoint")
    state: dict[str, Any] = {"step": train.steps}
    disc_files: dict[str, Any] = {}
    if discriminator is not None:  # before the VAE files, so a checkpoint with a config.json is whole
        disc_files = save_discriminator(discriminator, ckpt_uri)
        state["discriminator"] = {"channels": train.disc_channels, "layers": train.disc_layers}
    files = checkpoints.save(
        vae, vae.cfg.model_dump(mode="json"), ckpt_uri, checkpoints.VAE_WEIGHTS, state=state
    )
    files.update(disc_files)
    log.info("train-vae: eval PSNR %.2f dB, checkpoint %s", summary["eval_psnr"], ckpt_uri)
    return StageOutput(
        files={f"checkpoint/{k}": v for k, v in files.items()},
        summary=summary,
        extra={"checkpoint_uri": ckpt_uri},
        mirror=("eval_psnr", "final_loss"),
    )


STAGES = (Stage(STAGE, output="vae", inputs={"clips": "clips"}, settings=_settings, body=_train_vae),)
