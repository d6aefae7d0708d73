"""DeepSpeed ZeRO, the second data-parallel backend (``<stage>.parallel.data_parallel: deepspeed``).

The same trainer, data, objective and checkpoint folders as FSDP2; what changes is who owns the
gradients and the optimizer state:

    zero_stage 1   optimizer state sharded over the ranks; weights and gradients whole on each
    zero_stage 2   optimizer state and gradients sharded (reduce-scatter); weights whole on each
    zero_stage 3   weights sharded too: built partitioned under ``deepspeed.zero.Init`` and filled one
                   tensor at a time (no rank holds the whole network)

Our AdamW and lr schedule are handed to the engine as client objects, so the optimisation is the FSDP
path's; the engine does the gradient accumulation (``engine.step()`` after every micro-batch) and the
clipping (``gradient_clipping``). bf16 is ``torch_autocast`` (fp32 master weights and reductions, as
FSDP's mixed-precision policy). At ZeRO 1/2 DeepSpeed itself skips a step whose gradient norm is not
finite, which is the trainer's ``skip`` policy; ZeRO-3 does not (outside fp16), so the config refuses
``skip`` and an EMA there.

The training state is DeepSpeed's own checkpoint, written by ``engine.save_checkpoint`` into the
trainer's ``step-N`` folder (the checkpoint manager uploads it and moves ``latest``). It resumes onto
the same number of ranks; another world size needs DeepSpeed's universal-checkpoint conversion
(``ds_to_universal``) first, and the trainer says so. Sequence parallel stays with FSDP.

On a CPU the engine runs over gloo (the tests); DeepSpeed's fused CUDA optimizers and its asynchronous
checkpoint engines are not used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from t2v.errors import StageError

log = logging.getLogger(__name__)


def engine_config(stage_cfg) -> dict[str, Any]:
    """The DeepSpeed config of a DiT stage (per-rank micro-batch, accumulation, clipping, ZeRO, bf16)."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": stage_cfg.batch_size,
        "gradient_accumulation_steps": stage_cfg.grad_accum_steps,
        "gradient_clipping": stage_cfg.grad_clip,
        "zero_optimization": {"stage": stage_cfg.parallel.zero_stage},
        "zero_allow_untested_optimizer": True,  # our torch AdamW, handed in as a client optimizer
        "steps_per_print": 10**9,  # the trainer logs
        "wall_clock_breakdown": False,
    }
    if stage_cfg.precision == "bf16":
        config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return config


def init_distributed(world) -> None:
    """DeepSpeed's communication layer over the trainer's process group (a one-rank group when alone)."""
    import deepspeed

    if not dist.is_initialized():
        for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(name, value)
        if "MASTER_PORT" not in os.environ:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    deepspeed.init_distributed(dist_backend="nccl" if world.device.type == "cuda" else "gloo", auto_mpi_discovery=False)


def partitioned_construction(stage_cfg):
    """The context to build the network in: ZeRO-3 partitions each parameter as its module is made."""
    if stage_cfg.parallel.zero_stage != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.Init(config_dict_or_path=engine_config(stage_cfg))


def whole(param: nn.Parameter, modifier: bool = False):
    """A context in which ``param`` is whole on every rank (ZeRO-3 gathers it; with ``modifier`` rank 0's
    changes are scattered back on exit)."""
    if not hasattr(param, "ds_id"):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters([param], modifier_rank=0 if modifier else None)


class ZeroEngine:
    """The DiT under a DeepSpeed engine: forward, backward + step per micro-batch, the state, the export."""

    def __init__(self, dit: nn.Module, optimizer, scheduler, stage_cfg, world):
        import deepspeed

        self.stage = stage_cfg.parallel.zero_stage
        self.world = world
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=dit, optimizer=optimizer, config=engine_config(stage_cfg), dist_init_required=False
        )
        self.dit = dit
        # the lr schedule stays ours (stepped once per optimizer step by the trainer, saved with the
        # state); it acts on the client optimizer's param groups, which the ZeRO optimizer steps with
        self.scheduler = scheduler

    def __call__(self, *args, **kwargs):
        return self.engine(*args, **kwargs)

    def backward_and_step(self, loss: torch.Tensor) -> None:
        """One micro-batch: the engine scales by the accumulation steps and steps at the boundary."""
        self.engine.backward(loss)
        self.engine.step()

    def grad_norm(self) -> float:
        """The clipped step's global gradient norm (inf when the engine found it non-finite and skipped)."""
        norm = self.engine.get_global_grad_norm()
        if norm is None:
            return 0.0
        return float(norm.item() if torch.is_tensor(norm) else norm)

    # state ---------------------------------------------------------------------------------------------
    def save(self, folder: Path, client_state: dict[str, Any]) -> None:
        self.engine.save_checkpoint(str(folder.parent), tag=folder.name, client_state=client_state, save_latest=False)

    def load(self, folder: Path, saved_world_size: int | None) -> dict[str, Any]:
        if saved_world_size is not None and saved_world_size != self.world.size:
            raise StageError(
                f"{folder.name} was written by {saved_world_size} ranks with DeepSpeed ZeRO-{self.stage}; this run has "
                f"{self.world.size}. Resume on {saved_world_size} ranks, or convert the folder with DeepSpeed's "
                "ds_to_universal and load it as a universal checkpoint (DCP reshards on its own: data_parallel: fsdp)"
            )
        _, client_state = self.engine.load_checkpoint(
            str(folder.parent), tag=folder.name, load_optimizer_states=True, load_lr_scheduler_states=False
        )
        if client_state is None:
            raise StageError(f"{folder}: DeepSpeed could not read the checkpoint")
        return client_state

    def full_tensors(self, names: list[str], clean) -> Iterator[tuple[str, torch.Tensor]]:
        """Each parameter whole, in fp32, on the CPU, one at a time (collective at ZeRO-3)."""
        params = {clean(n): p for n, p in self.dit.named_parameters()}
        for name in names:
            param = params[name]
            with whole(param):
                value = param.detach().float().cpu().clone()
            yield name, value

    def held_bytes(self) -> dict[str, int]:
        """Parameter and optimizer-state bytes on this rank (ZeRO-3 parameters count their partition)."""
        def nbytes(t: torch.Tensor) -> int:
            return t.numel() * t.element_size()

        params = sum(nbytes(p.ds_tensor) if hasattr(p, "ds_tensor") else nbytes(p) for p in self.dit.parameters())
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        states = [v for state in inner.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
        return {"params": params, "optimizer": sum(nbytes(t) for t in states)}
