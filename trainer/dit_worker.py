"""The DiT training worker: one process per GPU (or CPU slot), started by ``torchrun`` locally or by a
Kubeflow Trainer TrainJob on the cluster. ``python -m trainer.dit_worker --job <uri>``.

The job file (written by the t2i / t2vi / t2v component) names the resolved config, the latent shards,
the checkpoint to start from, where to write the new checkpoint and the MLflow run to log into. Rank 0
logs metrics and writes the checkpoint and ``result.json``; every rank trains under DDP (gloo on CPU,
NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from t2v import checkpoints, storage
from t2v.config import DiTStageConfig, ProjectConfig
from t2v.progress import Progress
from t2v.shards import LatentSample, load_latents, load_negative

log = logging.getLogger("t2v.train_dit")


@dataclass
class Batch:
    latents: torch.Tensor  # [B, F, C, h, w]
    llm_states: torch.Tensor
    llm_mask: torch.Tensor
    clip_states: torch.Tensor
    clip_mask: torch.Tensor


def select_samples(samples: list[LatentSample], stage_cfg: DiTStageConfig) -> list[LatentSample]:
    """The stage's share of the data: t2v fine-tunes on clips whose curation quality is high enough."""
    return [s for s in samples if float(s.meta.get("quality", 1.0)) >= stage_cfg.min_quality]


class BatchSampler:
    """Draws image or video batches. The kind of each step is drawn from a generator seeded identically on
    every rank (so all ranks take the same shape bucket), the indices from a per-rank generator."""

    def __init__(self, samples, stage_cfg: DiTStageConfig, negative: dict[str, np.ndarray], rank: int):
        self.samples, self.cfg, self.negative = samples, stage_cfg, negative
        self.shared = np.random.default_rng(stage_cfg.seed)
        self.local = np.random.default_rng(stage_cfg.seed * 1000 + rank + 1)

    def kind(self) -> str:
        if self.cfg.data == "images":
            return "image"
        if self.cfg.data == "videos":
            return "video"
        return "video" if self.shared.random() < self.cfg.video_fraction else "image"

    def next(self) -> Batch:
        kind = self.kind()
        size = self.cfg.batch_size
        index = self.local.choice(len(self.samples), size=size, replace=len(self.samples) < size)
        picked = [self.samples[i] for i in index]
        drop = self.local.random(size) < self.cfg.caption_dropout

        def text(name: str) -> torch.Tensor:
            rows = [self.negative[name] if d else getattr(s, name) for s, d in zip(picked, drop)]
            return torch.from_numpy(np.stack(rows))

        latents = torch.from_numpy(np.stack([s.video if kind == "video" else s.image for s in picked]))
        return Batch(
            latents.float(),
            text("llm_states").float(),
            text("llm_mask").bool(),
            text("clip_states").float(),
            text("clip_mask").bool(),
        )


def lr_at(step: int, stage_cfg: DiTStageConfig) -> float:
    if stage_cfg.warmup_steps and step <= stage_cfg.warmup_steps:
        return stage_cfg.lr * step / stage_cfg.warmup_steps
    return stage_cfg.lr


def training_loss(dit, batch: Batch, stage_cfg: DiTStageConfig, generator: torch.Generator) -> torch.Tensor:
    from model import flow_matching as fm

    data = batch.latents
    noise = torch.randn(data.shape, generator=generator)
    t = fm.sample_training_timesteps(
        data.shape[0],
        generator=generator,
        distribution=stage_cfg.timestep_sampling,
        logit_mean=stage_cfg.logit_mean,
        logit_std=stage_cfg.logit_std,
    )
    noisy = fm.noisy_latents(data, noise, t)
    # bf16: the forward (and so the backward) under autocast; weights, gradients and the loss stay fp32
    with torch.autocast(data.device.type, dtype=torch.bfloat16, enabled=stage_cfg.precision == "bf16"):
        prediction = dit(
            noisy,
            fm.model_timestep(t),
            llm_states=batch.llm_states,
            llm_mask=batch.llm_mask,
            clip_states=batch.clip_states,
            clip_mask=batch.clip_mask,
        )
    return fm.flow_matching_loss(prediction, fm.velocity_target(data, noise))


def init_distributed() -> tuple[int, int]:
    if "RANK" not in os.environ:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def train(job: dict[str, Any]) -> dict[str, Any]:
    from model.dit import StepVideoDiT

    config = ProjectConfig.from_json(job["config_json"])
    stage = job["stage"]
    stage_cfg: DiTStageConfig = getattr(config, stage)
    rank, world = init_distributed()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(stage_cfg.seed)
    client = None
    if rank == 0:
        import mlflow

        mlflow.set_tracking_uri(job["tracking_uri"])
        client = mlflow.MlflowClient()

    samples = select_samples(load_latents(job["latents"]), stage_cfg)
    if not samples:
        raise SystemExit(f"{stage}: no latent samples pass min_quality={stage_cfg.min_quality}")
    negative = load_negative(job["latents"])
    dit = StepVideoDiT(
        config.dit,
        attention_backend=stage_cfg.attention_backend,
        activation_checkpointing=stage_cfg.activation_checkpointing,
    )
    if job.get("init_checkpoint_uri"):
        dit.load_state_dict(checkpoints.load_state_dict(job["init_checkpoint_uri"], checkpoints.DIT_WEIGHTS))
        if rank == 0:
            log.info("%s: starting from %s", stage, job["init_checkpoint_uri"])
    model = torch.nn.parallel.DistributedDataParallel(dit) if world > 1 else dit
    optimizer = torch.optim.AdamW(
        dit.parameters(), lr=stage_cfg.lr, betas=stage_cfg.betas, weight_decay=stage_cfg.weight_decay
    )
    sampler = BatchSampler(samples, stage_cfg, negative, rank)
    generator = torch.Generator().manual_seed(stage_cfg.seed * 7919 + rank)
    progress = Progress(f"{stage} rank {rank}", stage_cfg.steps)
    start = time.monotonic()
    window: list[float] = []
    tokens = 0
    first_loss = last_loss = math.nan
    for step in range(1, stage_cfg.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, stage_cfg)
        batch = sampler.next()
        loss = training_loss(model, batch, stage_cfg, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(dit.parameters(), stage_cfg.grad_clip)
        optimizer.step()
        tokens += batch.latents[0, :, 0].numel() * batch.latents.shape[0] * world
        window.append(float(loss))
        if step == 1:
            first_loss = float(loss)
        if step % stage_cfg.log_every == 0 or step == stage_cfg.steps:
            mean_loss = float(np.mean(window))
            if world > 1:
                value = torch.tensor([mean_loss])
                dist.all_reduce(value)
                mean_loss = float(value) / world
            window.clear()
            last_loss = mean_loss
            if client is not None:
                elapsed = time.monotonic() - start
                client.log_batch(
                    job["mlflow_run_id"],
                    metrics=_metrics(
                        {
                            "train/loss": mean_loss,
                            "train/grad_norm": float(grad_norm),
                            "train/lr": lr_at(step, stage_cfg),
                            "train/tokens_per_s": tokens / elapsed,
                            "train/steps_per_s": step / elapsed,
                        },
                        step,
                    ),
                )
        if rank == 0:
            progress.update(step, loss=float(loss))
    seconds = time.monotonic() - start
    result = {
        "stage": stage,
        "steps": stage_cfg.steps,
        "world_size": world,
        "samples": len(samples),
        "first_loss": first_loss,
        "final_loss": last_loss,
        "train_seconds": round(seconds, 1),
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }
    if rank == 0:
        entries = checkpoints.save_dit(
            dit,
            job["checkpoint_uri"],
            state={"stage": stage, "step": stage_cfg.steps, "init": job.get("init_checkpoint_uri")},
        )
        result["files"] = {f"checkpoint/{k}": v for k, v in entries.items()}
        storage.write_json(job["result_uri"], result)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _metrics(values: dict[str, float], step: int):
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="URI of the job JSON written by the component")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    train(storage.read_json(args.job))


if __name__ == "__main__":
    main()
