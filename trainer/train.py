"""The DiT trainer: one process per GPU (or CPU slot), started by ``torchrun`` locally or by a Kubeflow
Trainer TrainJob / PyTorchJob on the cluster. ``python -m trainer.train --job <uri>``.

The job file (written by the t2i / t2vi / t2v component) names the resolved config, the latent shards,
the checkpoint to start from, where the resumable training state lives, where to export the final
checkpoint and the MLflow run to log into. :class:`Trainer` builds, in order: the world (process group and
device mesh), the model (meta device -> parallelisms -> ``to_empty`` -> initialisation or a sharded load),
the optimizer and lr schedule, the EMA, the data, the objective, the checkpointer and the metrics; then
:meth:`Trainer.train` runs the loop:

    resume from <train_state>/latest if there is one
    for each optimizer step: grad_accum_steps x (batch -> objective -> backward), clip, guard, step, EMA
        log metrics; every checkpoint.every_steps (or on SIGTERM) save the training state
    save the final state; export the weights in the released layout, gathered one tensor at a time

A restarted job (a pod evicted and rescheduled, or the same command again) continues from ``latest`` and
logs the same losses an uninterrupted run would have.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from t2v import checkpoints, storage
from t2v.config import ProjectConfig
from t2v.errors import StageError
from t2v.progress import Progress
from t2v.shards import IndexedLatents, load_latents, load_negative
from trainer.checkpoint import CheckpointManager
from trainer.data import LatentBatches, ReadAhead, mixed_seed, select_samples
from trainer.lora import lora_settings_of
from trainer.metrics import StepMetrics, TrainLogger, held_bytes
from trainer.objectives import OBJECTIVES
from trainer.optim import EMA, build_lr_scheduler, build_optimizer
from trainer.parallel import build_world, close_world, parallelize_dit

log = logging.getLogger("t2v.trainer")

WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.", "module.")


def clean_name(name: str) -> str:
    """A parameter's released name, without the prefixes wrappers add (checkpointing, compile, DDP)."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


class Preempted(SystemExit):
    """SIGTERM arrived; the state was saved and the process exits so the restarted pod resumes."""


class Trainer:
    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.config = ProjectConfig.from_json(job["config_json"])
        self.stage = job["stage"]
        self.cfg = getattr(self.config, self.stage)
        self.world = build_world(self.cfg.parallel)
        self.check_plan()
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.step = 0
        self.base_memory = _memory_now(self.world.device)
        backend = self.cfg.parallel.data_parallel
        self.fsdp = self.world.distributed and backend == "fsdp"
        self.zero = None  # the DeepSpeed engine (trainer.deepspeed_zero) with data_parallel: deepspeed
        # LoRA: the frozen base is the init checkpoint, or the base of the adapter it names (a stage that
        # goes on training an adapter starts from its weights)
        init_uri = job.get("init_checkpoint_uri")
        self.start_adapter = checkpoints.read_adapter(init_uri) if init_uri and checkpoints.is_adapter(init_uri) else None
        if self.start_adapter is not None and self.cfg.lora is None:  # an adapter goes on training as one
            self.cfg = self.cfg.model_copy(update={"lora": lora_settings_of(self.start_adapter)})
        self.base_uri = self.start_adapter.base_uri if self.start_adapter else init_uri
        if backend == "deepspeed":
            from trainer import deepspeed_zero

            deepspeed_zero.init_distributed(self.world)
        self.dit, self.model = self.build_model()
        self.optimizer = build_optimizer(self.dit, self.cfg)
        self.scheduler = build_lr_scheduler(self.optimizer, self.cfg)
        if backend == "deepspeed":
            self.zero = deepspeed_zero.ZeroEngine(self.dit, self.optimizer, self.scheduler, self.cfg, self.world)
            self.model = self.zero
        self.ema = EMA(self.dit, self.cfg.ema_decay) if self.cfg.ema_decay > 0 else None
        self.data = self.build_data()
        # bf16 autocast where the weights are fp32 (one process, DDP); FSDP2 casts them itself and the
        # DeepSpeed engine autocasts (its torch_autocast section)
        autocast = self.cfg.precision == "bf16" and not self.fsdp and self.zero is None
        self.objective = OBJECTIVES[self.cfg.objective](self.cfg, autocast_bf16=autocast)
        if getattr(self.objective, "needs_reference", False):  # Video-DPO: the frozen starting weights
            self.objective.reference = self.build_reference()
        staging = Path(job.get("staging_dir") or tempfile.gettempdir()) / f"t2v-train-state-{zlib.crc32(job['train_state_uri'].encode()):08x}"
        self.checkpoints = CheckpointManager(job["train_state_uri"], self.cfg.checkpoint, self.world, staging)
        self.logger = TrainLogger(job, self.world, self.config.dit, self.cfg)
        self._stop_requested = False
        self._reloads = 0

    # build steps ---------------------------------------------------------------------------------------
    def check_plan(self) -> None:
        """On a GPU, refuse (before allocating anything) a configuration the planner says cannot fit."""
        from trainer.planner import plan_stage, this_accelerator

        accelerator = this_accelerator(self.world.device)
        if accelerator is None:
            return
        plan = plan_stage(self.config, self.stage, accelerator=accelerator, gpus=self.world.size)
        if self.world.rank == 0:
            log.info("%s", plan.report())
        if not plan.fits:
            raise StageError(f"{self.stage}: the training plan does not fit this GPU:\n{plan.report()}")

    def build_model(self):
        from model.dit import StepVideoDiT

        if self.cfg.parallel.data_parallel == "deepspeed" and self.cfg.parallel.zero_stage == 3:
            from trainer.deepspeed_zero import partitioned_construction

            with partitioned_construction(self.cfg):  # each parameter partitioned as it is made
                dit = StepVideoDiT(self.config.dit, attention_backend=self.cfg.attention_backend).to(self.world.device)
            self._fill(dit)
            model = parallelize_dit(dit, self.world, self.cfg)  # checkpointing, compile; the engine wraps later
            dit.train()
            return dit, model
        with torch.device("meta"):
            dit = StepVideoDiT(self.config.dit, attention_backend=self.cfg.attention_backend)
        if self.cfg.lora is not None:
            from trainer.lora import apply_lora, trainable_parameters

            adapted = apply_lora(dit, self.cfg.lora)
            if self.start_adapter is not None and sorted(self.start_adapter.pairs) != adapted:
                raise StageError(
                    f"{self.stage}: the adapter at {self.start_adapter.uri} adapts other modules than lora.target_modules "
                    f"({len(self.start_adapter.pairs)} against {len(adapted)})"
                )
            if self.world.rank == 0:
                trainable, total = trainable_parameters(dit)
                log.info("%s: LoRA rank %d on %d modules: %d of %d parameters train (%.2f%%)", self.stage,
                         self.cfg.lora.rank, len(adapted), trainable, total, 100.0 * trainable / total)
        if self.fsdp:  # shard first, so no rank ever materialises the whole network
            model = parallelize_dit(dit, self.world, self.cfg)
            dit.to_empty(device=self.world.device)
            self._fill(dit)
        else:
            dit.to_empty(device=self.world.device)
            self._fill(dit)
            model = parallelize_dit(dit, self.world, self.cfg)
        dit.train()
        return dit, model

    def build_reference(self):
        """A frozen copy of the starting weights (read from the init checkpoint), built and sharded like
        the policy (sequence parallel and FSDP; no optimizer, no gradients)."""
        from model.dit import StepVideoDiT
        from trainer.parallel import apply_fsdp
        from trainer.sequence_parallel import apply_sequence_parallel

        if not self.job.get("init_checkpoint_uri"):
            raise StageError(f"{self.stage}: {self.cfg.objective} needs a checkpoint to start from (its reference model)")
        with torch.device("meta"):
            reference = StepVideoDiT(self.config.dit, attention_backend=self.cfg.attention_backend)
        if self.world.sp > 1:
            apply_sequence_parallel(reference, self.world.sp_group)
        if self.fsdp:
            apply_fsdp(reference, self.world, self.cfg.precision, self.cfg.parallel.reshard_after_forward)
        reference.to_empty(device=self.world.device)
        self._fill(reference, adapted=False)
        reference.requires_grad_(False)
        return reference.eval()

    def _fill(self, dit, adapted: bool = True) -> None:  # noqa: C901 - one tensor loop, three sources
        """Initial weights, one tensor at a time: read from the init checkpoint (memory-mapped
        safetensors; an adapter folder reads merged into its base) or drawn by
        :func:`model.dit.initial_value`, then scattered to this rank's shard. With LoRA (``adapted``) the
        base weights come from the base checkpoint and the adapters from the adapter trained on, or
        start as peft starts them."""
        from model.dit import initial_value
        from trainer.lora import adapter_slot, base_name, initial_adapter_value

        lora = self.cfg.lora is not None and adapted
        init_uri = self.base_uri if lora else self.job.get("init_checkpoint_uri")
        modules = dict(dit.named_modules())
        with checkpoints.tensor_reader(init_uri) if init_uri else contextlib.nullcontext() as read:
            if read is not None:
                expected = sorted(base_name(clean_name(n)) for n, _ in dit.named_parameters() if adapter_slot(n) is None)
                if read.names != expected:
                    missing = sorted(set(expected) - set(read.names))[:5]
                    extra = sorted(set(read.names) - set(expected))[:5]
                    raise StageError(f"{init_uri}: does not fit dit (missing {missing}, unexpected {extra})")
            for name, param in dit.named_parameters():
                module_name, _, param_name = name.rpartition(".")
                released = base_name(clean_name(name))
                slot = adapter_slot(released) if lora else None
                if slot is not None:
                    module, half = slot
                    if self.start_adapter is not None:
                        full = self.start_adapter.pairs[module][0 if half == "lora_A" else 1]
                    else:
                        generator = torch.Generator().manual_seed(mixed_seed(self.cfg.seed, zlib.crc32(released.encode())))
                        full = initial_adapter_value(half, param.shape, generator)
                elif read is not None:
                    full = read(released)
                else:
                    generator = torch.Generator().manual_seed(mixed_seed(self.cfg.seed, zlib.crc32(released.encode())))
                    module = modules[module_name]
                    shape = getattr(param, "ds_shape", param.shape)  # a ZeRO-3 partition knows its whole shape
                    weight_shape = getattr(getattr(module, "weight", None), "ds_shape", None)
                    full = initial_value(module, param_name, shape, generator, weight_shape=weight_shape)
                if hasattr(param, "ds_id"):  # ZeRO-3: gathered, written on rank 0, scattered back
                    from trainer.deepspeed_zero import whole

                    with whole(param, modifier=True):
                        if self.world.rank == 0:
                            _copy_full_into(param, full)
                else:
                    _copy_full_into(param, full)
        if self.world.rank == 0:
            where = f"weights from {init_uri}" if init_uri else "weights initialised from the seed"
            if lora:
                where += f"; adapters from {self.start_adapter.uri}" if self.start_adapter else "; new adapters"
            log.info("%s: %s", self.stage, where)

    def build_data(self) -> LatentBatches | ReadAhead:
        """Latents read on demand through the encode stage's shard index (memory bounded whatever the
        data set's size, S3 included); an older manifest without an index is loaded whole."""
        indexed = IndexedLatents.from_manifest(self.job["latents"])
        if indexed is not None:
            samples = indexed.where(lambda record: record.get("quality", 1.0) >= self.cfg.min_quality)
        else:
            samples = select_samples(load_latents(self.job["latents"]), self.cfg)
        if not samples:
            raise StageError(f"{self.stage}: no latent samples pass min_quality={self.cfg.min_quality}")
        batches = LatentBatches(
            samples, load_negative(self.job["latents"]), self.cfg, self.world.dp_rank, self.world.dp_size,
            batch_sizes=self._latent_batch_sizes(),
        )
        return ReadAhead(batches, self.cfg.data_workers) if self.cfg.data_workers else batches

    def _latent_batch_sizes(self) -> dict[tuple[int, int, int], int]:
        """``batch_size_per_bucket`` (pixels) as latent grids: VAE frames and 16x16 (x patch) cells."""
        vae = self.config.vae.model
        out = {}
        for key, size in self.cfg.batch_size_per_bucket.items():
            frames, height, width = (int(v) for v in key.split("x"))
            out[(vae.latent_frames(frames), height // vae.spatial_compression, width // vae.spatial_compression)] = size
        return out

    # training state ------------------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        state = {"model": model_sd, "optimizer": optim_sd}
        if self.ema is not None:
            state["ema"] = {clean_name(k): v for k, v in self.ema.state_dict().items()}
        return state

    def save_state(self) -> None:
        info = {
            "scheduler": self.scheduler.state_dict(),
            "data": self.data.state_dict(),
            "metrics": self.logger.state(),
            "stage": self.stage,
            "backend": self.cfg.parallel.data_parallel,
        }
        if self.zero is not None:  # DeepSpeed's own checkpoint files, in the same step folder
            ema = {"ema": {clean_name(k): v.cpu() for k, v in self.ema.state_dict().items()}} if self.ema else {}
            self.checkpoints.save(self.step, None, info, write=lambda folder: self.zero.save(folder, ema))
            return
        self.checkpoints.save(self.step, self._state_tensors(), info)

    def load_state(self, step: int) -> None:
        if self.zero is not None:
            state: dict[str, Any] = {}
            info = self.checkpoints.load(
                step, None, read=lambda folder, saved: state.update(self.zero.load(folder, saved.get("world_size")))
            )
            if self.ema is not None:
                self.ema.load_state_dict({k: state["ema"][clean_name(k)] for k in self.ema.names})
        else:
            from torch.distributed.checkpoint.state_dict import set_state_dict

            state = self._state_tensors()
            info = self.checkpoints.load(step, state)
            set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
            if self.ema is not None:
                self.ema.load_state_dict({k: state["ema"][clean_name(k)] for k in self.ema.names})
        self.scheduler.load_state_dict(info["scheduler"])
        self.data.load_state_dict(info["data"])
        self.logger.load_state(info.get("metrics", {}))
        self.step = int(info["step"])

    def resume(self) -> None:
        latest = self.checkpoints.latest_step() if self.cfg.checkpoint.resume else None
        if latest is None:
            return
        self.load_state(latest)
        if self.world.rank == 0:
            log.info("%s: resumed from %s at step %d of %d", self.stage, self.checkpoints.step_uri(latest), self.step, self.cfg.steps)

    # the loop ------------------------------------------------------------------------------------------
    def _on_sigterm(self, signum, frame) -> None:
        self._stop_requested = True

    def _stop_agreed(self) -> bool:
        """Every rank stops at the same step once any rank got SIGTERM."""
        if not self.world.distributed:
            return self._stop_requested
        flag = torch.tensor([int(self._stop_requested)], device=self.world.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _no_sync(self, last_micro: bool):
        if not self.world.distributed or last_micro:
            if self.fsdp:
                self.model.set_requires_gradient_sync(True)
            return contextlib.nullcontext()
        if self.fsdp:
            self.model.set_requires_gradient_sync(False)
            return contextlib.nullcontext()
        return self.model.no_sync()

    def train_step(self, metrics: StepMetrics) -> None:
        if self.zero is not None:
            return self._zero_train_step(metrics)
        accum = self.cfg.grad_accum_steps
        for micro in range(accum):
            waited = time.monotonic()
            batch = self.data.next().to(self.world.device)
            metrics.data_seconds += time.monotonic() - waited
            with self._no_sync(micro == accum - 1):
                out = self.objective(self.model, batch)
                (out.per_sample.mean() / accum).backward()
            flops = self.logger.sample_flops(batch.latents.shape, batch.llm_states.shape[1], batch.clip_states.shape[1])
            flops *= getattr(self.objective, "flops_factor", 1.0)
            metrics.add(out.per_sample.detach(), out.timesteps, batch.tokens, flops, out.extras)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.dit.parameters(), self.cfg.grad_clip)
        metrics.grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        metrics.reduce(self.world)
        metrics.lr = self.scheduler.get_last_lr()[0]
        if metrics.finite:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _zero_train_step(self, metrics: StepMetrics) -> None:
        """The DeepSpeed step: the engine accumulates, clips, reduces and steps at the last micro-batch
        (and skips the update itself when the gradient norm is not finite, ZeRO 1/2)."""
        for _ in range(self.cfg.grad_accum_steps):
            waited = time.monotonic()
            batch = self.data.next().to(self.world.device)
            metrics.data_seconds += time.monotonic() - waited
            out = self.objective(self.zero, batch)
            self.zero.backward_and_step(out.per_sample.mean())
            flops = self.logger.sample_flops(batch.latents.shape, batch.llm_states.shape[1], batch.clip_states.shape[1])
            flops *= getattr(self.objective, "flops_factor", 1.0)
            metrics.add(out.per_sample.detach(), out.timesteps, batch.tokens, flops, out.extras)
        metrics.grad_norm = torch.tensor(self.zero.grad_norm())
        metrics.reduce(self.world)
        metrics.lr = self.scheduler.get_last_lr()[0]
        if metrics.finite and self.ema is not None:
            self.ema.update()
        self.scheduler.step()

    def guard(self, metrics: StepMetrics, bad_in_a_row: int) -> int:
        """The non-finite policy; returns the count of non-finite steps in a row."""
        if metrics.finite:
            return 0
        bad_in_a_row += 1
        policy = self.cfg.nonfinite_policy
        self._reloads += policy == "reload"
        if policy == "fail" or max(bad_in_a_row, self._reloads) >= self.cfg.max_nonfinite_steps:
            raise StageError(
                f"{self.stage}: step {self.step}: loss {metrics.loss} / grad norm {float(metrics.grad_norm)} is "
                f"not finite ({bad_in_a_row} in a row, {self._reloads} reloads, policy {policy}); lower lr or check the data"
            )
        latest = self.checkpoints.latest_step() if policy == "reload" else None
        if self.world.rank == 0:
            log.warning("%s: step %d: non-finite loss or gradient; %s", self.stage, self.step,
                        f"reloading step-{latest}" if latest is not None else "step skipped")
        if latest is not None:
            drawn = self.data.drawn
            self.load_state(latest)
            self.data.drawn = drawn  # go on with new batches, not the ones that went wrong
        return bad_in_a_row

    def train(self) -> dict[str, Any]:
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self.resume()
            started_at = self.step
            progress = Progress(f"{self.stage} rank {self.world.rank}", self.cfg.steps)
            bad_in_a_row = 0
            every = self.cfg.checkpoint.every_steps
            while self.step < self.cfg.steps:
                self.step += 1
                metrics = StepMetrics(self.step)
                self.train_step(metrics)
                bad_in_a_row = self.guard(metrics, bad_in_a_row)
                self.logger.log(metrics)
                if self.world.rank == 0:
                    progress.update(self.step, loss=metrics.loss)
                stop = self._stop_agreed()
                if stop or (every and self.step % every == 0 and self.step < self.cfg.steps):
                    self.save_state()
                if stop:
                    self.checkpoints.wait()
                    raise Preempted(f"{self.stage}: SIGTERM: training state saved at step {self.step}; restart to resume")
            if self.step != started_at:  # not when resumed from the final step (only the export was left)
                self.save_state()
            self.checkpoints.wait()
            return self.export()
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.logger.close()
            if isinstance(self.data, ReadAhead):
                self.data.close()

    # export --------------------------------------------------------------------------------------------
    def export(self) -> dict[str, Any]:
        """The final weights (the EMA when on) in the released layout, gathered and written one tensor
        at a time on rank 0; every rank takes part in each gather."""
        if self.ema is not None:
            source = {clean_name(n): t for n, t in self.ema.state_dict().items()}
        else:
            source = {clean_name(n): p for n, p in self.dit.named_parameters()}
        order = [clean_name(n) for n, _ in self.dit.named_parameters()]
        sizes = {n: _full_numel(source[n]) * 4 for n in order}

        def gathered():
            if self.zero is not None and self.ema is None:
                yield from self.zero.full_tensors(order, clean_name)
                return
            for name in order:
                tensor = source[name]
                yield name, (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().float().cpu()

        result = {"stage": self.stage, **self.logger.result(self.data, self.step)}
        from trainer.lora import trainable_parameters

        result["trainable_parameters"], result["parameters"] = trainable_parameters(self.dit)
        held = self.zero.held_bytes() if self.zero is not None else held_bytes(self.dit, self.optimizer)
        if self.world.distributed:
            every: list[Any] = [None] * self.world.size
            dist.all_gather_object(every, held)
        else:
            every = [held]
        result["bytes_per_rank"] = every
        result["memory"] = {"base_bytes": self.base_memory, "peak_bytes": _memory_peak(self.world.device)}
        if self.cfg.lora is not None:
            return self._export_adapter(result, source)
        if self.world.rank == 0:
            state = {"stage": self.stage, "step": self.step, "init": self.job.get("init_checkpoint_uri"), "ema": self.ema is not None}
            entries = checkpoints.save_tensors(
                gathered(), sizes, checkpoints.release_dit_config(self.config.dit), self.job["checkpoint_uri"],
                checkpoints.DIT_WEIGHTS, state=state,
            )
            result["files"] = {f"checkpoint/{k}": v for k, v in entries.items()}
            storage.write_json(self.job["result_uri"], result)
        else:
            for _ in gathered():
                pass
        self.world.barrier()
        return result


    def _export_adapter(self, result: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        """The adapters (the EMA's when on) in peft's format, gathered on every rank, written on rank 0."""
        from trainer.lora import adapter_lineage, adapter_slot, peft_config

        pairs: dict[str, list[Any]] = {}
        for name, _ in self.dit.named_parameters():
            slot = adapter_slot(clean_name(name))
            if slot is None:
                continue
            tensor = source[clean_name(name)]
            full = (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).detach().float().cpu()
            pairs.setdefault(slot[0], [None, None])[0 if slot[1] == "lora_A" else 1] = full
        if self.world.rank == 0:
            config = peft_config(self.cfg.lora, self.base_uri).to_dict()
            lineage = adapter_lineage(self.stage, self.step, self.base_uri, self.job)
            entries = checkpoints.write_adapter(
                self.job["checkpoint_uri"], config, {m: (a, b) for m, (a, b) in pairs.items()}, lineage
            )
            result["files"] = {f"checkpoint/{k}": v for k, v in entries.items()}
            result["adapter"] = {"base_checkpoint_uri": self.base_uri, "rank": self.cfg.lora.rank, "modules": len(pairs)}
            storage.write_json(self.job["result_uri"], result)
        self.world.barrier()
        return result


def _memory_now(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    import psutil

    return psutil.Process().memory_info().rss


def _memory_peak(device: torch.device) -> int:
    """The process's high-water mark: CUDA's peak allocation, or the peak resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resident_peak()


def resident_peak() -> int:
    """Peak resident bytes of this process's memory since it started (``VmHWM``). Not ``ru_maxrss``: Linux
    carries that over from the parent across fork + exec, so a child of a large process reports the
    parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _full_numel(tensor: torch.Tensor) -> int:
    """Elements of the whole tensor: a ZeRO-3 parameter's ``ds_shape``, else its (global) shape."""
    shape = getattr(tensor, "ds_shape", None)
    return int(torch.Size(shape).numel()) if shape is not None else tensor.numel()


def _copy_full_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a whole tensor into a parameter, or into this rank's shard of a DTensor parameter."""
    with torch.no_grad():
        if hasattr(param, "device_mesh"):
            from torch.distributed.tensor import distribute_tensor

            local = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(local.to_local())
        else:
            if tuple(full.shape) != tuple(param.shape):
                raise StageError(f"a weight of shape {list(full.shape)} does not fit {list(param.shape)}")
            param.copy_(full.to(param.dtype))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="URI of the job JSON written by the component")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    trainer = Trainer(storage.read_json(args.job))
    try:
        trainer.train()
    except Preempted as stop:
        log.warning("%s", stop)
        if dist.is_initialized():
            dist.destroy_process_group()
        raise SystemExit(143) from None
    close_world(trainer.world)


if __name__ == "__main__":
    main()
