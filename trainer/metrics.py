"""What a training step measured, reduced over the ranks, and where rank 0 reports it.

Every step: a line in the job's ``metrics_jsonl`` (when the job names one) and the progress log. Every
``log_every`` steps, to the stage's MLflow child run: ``train/loss`` (mean over the window), the loss per
timestep bucket, ``grad_norm``, ``lr``, ``samples_per_s``, ``tokens_per_s``, ``data_wait_share`` (time
waiting for batches / step time), memory, ``mfu`` (model FLOPs of :mod:`model.flops` per second over the
devices' peak, when the device's peak is known) and ``loss_spikes``. MLflow's system metrics (CPU, memory,
GPU) are sampled on the same run while the trainer runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from model.flops import training_flops

log = logging.getLogger("t2v.trainer")

TIMESTEP_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)  # t: 0 pure noise .. 1 clean data

# dense bf16 peak FLOP/s per device, by the start of torch.cuda.get_device_name()
PEAK_BF16_FLOPS = {
    "NVIDIA H200": 989e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H800": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA A800": 312e12,
    "NVIDIA L40S": 362e12,
}


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak (``T2V_PEAK_FLOPS`` overrides; None when unknown, e.g. a CPU)."""
    if os.environ.get("T2V_PEAK_FLOPS"):
        return float(os.environ["T2V_PEAK_FLOPS"])
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for prefix, peak in PEAK_BF16_FLOPS.items() if name.startswith(prefix)), None)


def local_bytes(tensors) -> int:
    """Bytes this rank holds of ``tensors`` (a DTensor counts its local shard only)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def held_bytes(model, optimizer) -> dict[str, int]:
    """Parameter and optimizer-state bytes on this rank, measured from the (sharded) tensors."""
    states = [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
    return {"params": local_bytes(model.parameters()), "optimizer": local_bytes(states)}


class StepMetrics:
    """One optimizer step's figures; :meth:`reduce` makes them global (the same on every rank)."""

    def __init__(self, step: int):
        self.step = step
        self.started = time.monotonic()
        self.seconds = 0.0  # the step's wall time, set when it is logged
        self.data_seconds = 0.0
        self.grad_norm: torch.Tensor | float = 0.0
        self.lr = 0.0
        self._sums = torch.zeros(3 + 2 * (len(TIMESTEP_BUCKETS) - 1), dtype=torch.float64)
        self.loss = math.nan
        self.samples = self.tokens = self.flops = 0.0
        self.bucket_loss: dict[str, float] = {}
        self._extra_sums: dict[str, float] = {}  # the objective's per-sample figures, summed
        self.extras: dict[str, float] = {}  # ... and their means over the step, once reduced

    def add(self, per_sample: torch.Tensor, timesteps: torch.Tensor, tokens: int, flops: float,
            extras: dict[str, torch.Tensor] | None = None) -> None:
        for name, values in (extras or {}).items():
            self._extra_sums[name] = self._extra_sums.get(name, 0.0) + float(values.double().sum())
        losses, t = per_sample.double().cpu(), timesteps.double().cpu()
        self._sums[0] += losses.sum()
        self._sums[1] += losses.numel()
        self._sums[2] += tokens
        n = len(TIMESTEP_BUCKETS) - 1
        index = torch.bucketize(t, torch.tensor(TIMESTEP_BUCKETS[1:-1], dtype=torch.float64))
        self._sums[3 : 3 + n] += torch.zeros(n, dtype=torch.float64).index_add_(0, index, losses)
        self._sums[3 + n :] += torch.bincount(index, minlength=n).double()
        self.flops += flops

    def reduce(self, world) -> None:
        sums = self._sums.clone()
        flops = torch.tensor([self.flops], dtype=torch.float64)
        names = sorted(self._extra_sums)  # the same objective on every rank: the same names
        extras = torch.tensor([self._extra_sums[n] for n in names], dtype=torch.float64)
        if world.distributed:
            packed = torch.cat([sums, flops, extras]).to(world.device)
            dist.all_reduce(packed)
            packed = packed.cpu()
            # the ranks of one sequence-parallel group hold the same samples: count them once
            packed = packed / world.sp
            sums, flops, extras = packed[: len(sums)], packed[len(sums) : len(sums) + 1], packed[len(sums) + 1 :]
        self.loss = float(sums[0] / sums[1])
        self.extras = {name: float(extras[i] / sums[1]) for i, name in enumerate(names)}
        self.samples, self.tokens, self.flops = float(sums[1]), float(sums[2]), float(flops[0])
        n = len(TIMESTEP_BUCKETS) - 1
        for i in range(n):
            count = float(sums[3 + n + i])
            if count:
                lo, hi = TIMESTEP_BUCKETS[i], TIMESTEP_BUCKETS[i + 1]
                self.bucket_loss[f"train/loss_t{lo:.2f}-{hi:.2f}"] = float(sums[3 + i]) / count

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(float(self.grad_norm))


class TrainLogger:
    """Rank 0's reporting: the per-step JSON lines, the log window, MLflow, the result summary."""

    def __init__(self, job, world, dit_cfg, stage_cfg):
        self.world, self.dit_cfg, self.cfg = world, dit_cfg, stage_cfg
        self.run_id = job.get("mlflow_run_id")
        self.peak = peak_flops(world.device)
        self.first_loss = math.nan
        self.final_loss = math.nan
        self.spikes = 0
        self._running: float | None = None
        self._window: list[StepMetrics] = []
        self._started = time.monotonic()
        self._steps = 0
        self._tokens = 0.0
        self.client = self.monitor = self.jsonl = None
        if world.rank != 0:
            return
        if job.get("metrics_jsonl"):
            path = Path(job["metrics_jsonl"])
            path.parent.mkdir(parents=True, exist_ok=True)
            self.jsonl = path.open("a")
        if self.run_id and job.get("tracking_uri"):
            import mlflow

            mlflow.set_tracking_uri(job["tracking_uri"])
            self.client = mlflow.MlflowClient()
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=10, samples_before_logging=1)
                self.monitor.start()
            except Exception as exc:  # noqa: BLE001 - system metrics are a nicety; training goes on
                log.warning("MLflow system metrics off: %s", exc)

    def sample_flops(self, latents_shape, llm_tokens: int, clip_tokens: int) -> float:
        b, f, _, h, w = latents_shape
        p = self.dit_cfg.patch_size
        return float(b * training_flops(self.dit_cfg, f * (h // p) * (w // p), llm_tokens, clip_tokens))

    def log(self, m: StepMetrics) -> None:
        seconds = time.monotonic() - m.started
        self._steps += 1
        self._tokens += m.tokens
        if math.isnan(self.first_loss):
            self.first_loss = m.loss
        if self._running is not None and m.loss > self.cfg.loss_spike_factor * self._running:
            self.spikes += 1
            if self.world.rank == 0:
                log.warning("step %d: loss spike %.4g (running mean %.4g)", m.step, m.loss, self._running)
        if math.isfinite(m.loss):
            self._running = m.loss if self._running is None else 0.9 * self._running + 0.1 * m.loss
        m.seconds = seconds
        self._window.append(m)
        if self.world.rank != 0:
            if m.step % self.cfg.log_every == 0 or m.step == self.cfg.steps:
                self._window.clear()
            return
        if self.jsonl is not None:
            record = {"step": m.step, "loss": m.loss, "grad_norm": float(m.grad_norm), "lr": m.lr,
                      "seconds": seconds, "data_seconds": m.data_seconds, "tokens": m.tokens, **m.extras}
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        if m.step % self.cfg.log_every == 0 or m.step == self.cfg.steps:
            self._flush_window()

    def _flush_window(self) -> None:
        window, self._window = self._window, []
        seconds = sum(m.seconds for m in window)
        finite = [m.loss for m in window if math.isfinite(m.loss)]
        self.final_loss = sum(finite) / len(finite) if finite else math.nan
        last = window[-1]
        values = {
            "train/loss": self.final_loss,
            "train/grad_norm": float(last.grad_norm),
            "train/lr": last.lr,
            "train/samples_per_s": sum(m.samples for m in window) / seconds,
            "train/tokens_per_s": sum(m.tokens for m in window) / seconds,
            "train/data_wait_share": sum(m.data_seconds for m in window) / seconds,
            "train/loss_spikes": float(self.spikes),
            **last.bucket_loss,
            # the objective's own figures (Video-DPO: accuracy, reward margin, ...), over the window
            **{name: sum(m.extras[name] for m in window) / len(window) for name in last.extras},
        }
        if self.peak:
            values["train/mfu"] = sum(m.flops for m in window) / seconds / (self.peak * self.world.size)
        if self.world.device.type == "cuda":
            values["train/memory_peak_gib"] = torch.cuda.max_memory_allocated(self.world.device) / 2**30
            torch.cuda.reset_peak_memory_stats(self.world.device)
        else:
            import psutil

            values["train/memory_rss_gib"] = psutil.Process().memory_info().rss / 2**30
        log.info("step %d/%d %s", last.step, self.cfg.steps, " ".join(f"{k.removeprefix('train/')}={v:.4g}" for k, v in values.items() if not k.startswith("train/loss_t")))
        if self.client is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, last.step) for k, v in values.items() if math.isfinite(v)])

    def state(self) -> dict[str, float]:
        return {"first_loss": self.first_loss, "final_loss": self.final_loss, "spikes": self.spikes}

    def load_state(self, state: dict[str, float]) -> None:
        self.first_loss = float(state.get("first_loss", math.nan))
        self.final_loss = float(state.get("final_loss", math.nan))
        self.spikes = int(state.get("spikes", 0))

    def result(self, data, step: int) -> dict[str, float]:
        seconds = time.monotonic() - self._started
        return {
            "steps": step,
            "world_size": self.world.size,
            "samples": len(data.samples),
            "first_loss": self.first_loss,
            "final_loss": self.final_loss,
            "train_seconds": round(seconds, 1),
            "tokens_per_s": self._tokens / seconds if seconds > 0 else 0.0,
            "loss_spikes": self.spikes,
        }

    def close(self) -> None:
        if self.monitor is not None:
            try:
                self.monitor.finish()
            except Exception:  # noqa: BLE001
                pass
            self.monitor = None
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
