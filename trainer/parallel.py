"""The process layout and the parallelisms, applied as functions over an unchanged ``model/`` network.

    world = data_parallel_replicate x data_parallel_shard x sequence_parallel     (ranks, in that order)

:func:`build_world` initialises the process group (NCCL on GPUs with ``set_device(LOCAL_RANK)``, gloo on
CPU) and the device mesh; :func:`parallelize_dit` then applies, in this order, Ulysses sequence parallel,
activation checkpointing per block, ``torch.compile`` per block, and the data parallelism: FSDP2
``fully_shard`` per block and at the root with a mixed-precision policy, or DDP (DeepSpeed ZeRO wraps the
network in its engine afterwards: :mod:`trainer.deepspeed_zero`).

Ranks in one sequence-parallel group see the same samples; the data loader shards over the data-parallel
ranks only (:attr:`World.dp_rank`, :attr:`World.dp_size`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device
    replicate: int
    shard: int
    sp: int
    mesh: object | None = None  # DeviceMesh ("replicate", "shard", "sp") when distributed

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def dp_size(self) -> int:
        return self.replicate * self.shard

    @property
    def dp_rank(self) -> int:
        return self.rank // self.sp  # ranks are laid out (replicate, shard, sp): sp is the fastest

    @property
    def sp_group(self):
        return self.mesh["sp"].get_group() if self.mesh is not None and self.sp > 1 else None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def build_world(parallel) -> World:
    """Start the process group from torchrun's environment (or a single process without it)."""
    rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    replicate, shard, sp = parallel.layout(size)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    world = World(rank, size, local_rank, device, replicate, shard, sp)
    if size > 1:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
        from torch.distributed.device_mesh import init_device_mesh

        world.mesh = init_device_mesh(
            device.type, (replicate, shard, sp), mesh_dim_names=("replicate", "shard", "sp")
        )
    return world


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------------
# activation checkpointing


def _selective_policy():
    """Keep what is expensive to recompute (matmuls, attention); recompute norms, GELU, RoPE, modulation."""
    from torch.utils.checkpoint import CheckpointPolicy

    aten = torch.ops.aten
    save = {
        aten.mm.default,
        aten.addmm.default,
        aten.bmm.default,
        aten.convolution.default,
        aten._scaled_dot_product_flash_attention.default,
        aten._scaled_dot_product_efficient_attention.default,
        aten._scaled_dot_product_flash_attention_for_cpu.default,
    }

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in save else CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def apply_activation_checkpointing(dit: nn.Module, mode: str) -> None:
    """Wrap each transformer block: ``full`` recomputes it whole in the backward pass, ``selective`` keeps
    the matmul and attention outputs. The wrapper's state-dict hooks keep the released parameter names."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    kwargs = {"preserve_rng_state": False}
    if mode == "selective":
        kwargs["context_fn"] = partial(create_selective_checkpoint_contexts, _selective_policy())
    elif mode != "full":
        raise ValueError(f"activation_checkpointing must be none, full or selective, got {mode!r}")
    blocks = dit.transformer_blocks
    for index, block in enumerate(blocks):
        blocks[index] = checkpoint_wrapper(block, **kwargs)


# --------------------------------------------------------------------------------------------------------
# data parallel


def apply_fsdp(dit: nn.Module, world: World, precision: str, reshard_after_forward: bool = True) -> None:
    """FSDP2: each block is one communication unit, the root holds the embeddings and the output layer.
    Master weights stay fp32 and sharded; with bf16 the gathered weights and activations are bf16 and the
    gradients are reduced in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dp_mesh = _dp_mesh(world)
    policy = MixedPrecisionPolicy(
        param_dtype=torch.bfloat16 if precision == "bf16" else torch.float32, reduce_dtype=torch.float32
    )
    for block in dit.transformer_blocks:
        fully_shard(block, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    fully_shard(dit, mesh=dp_mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)


def _dp_mesh(world: World):
    """The mesh FSDP shards over: (shard x sp) flattened, with a replicate dim in front for HSDP."""
    mesh = world.mesh
    if world.sp == 1:
        return mesh["shard"] if world.replicate == 1 else mesh["replicate", "shard"]
    shard_sp = mesh["shard", "sp"]._flatten("shard_sp")
    return shard_sp if world.replicate == 1 else mesh["replicate", "shard_sp"]


def parallelize_dit(dit: nn.Module, world: World, stage_cfg) -> nn.Module:
    """Apply the stage's parallelisms to ``dit`` in place; returns the module to call (DDP wraps)."""
    from trainer.sequence_parallel import apply_sequence_parallel

    parallel = stage_cfg.parallel
    if world.sp > 1:
        apply_sequence_parallel(dit, world.sp_group)
    apply_activation_checkpointing(dit, stage_cfg.activation_checkpointing)
    if parallel.compile:
        for index, block in enumerate(dit.transformer_blocks):
            dit.transformer_blocks[index] = torch.compile(block)
    if not world.distributed:
        return dit
    if parallel.data_parallel == "fsdp":
        apply_fsdp(dit, world, stage_cfg.precision, parallel.reshard_after_forward)
        return dit
    if parallel.data_parallel == "deepspeed":  # the trainer hands it to a DeepSpeed engine
        return dit
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(dit, device_ids=[world.local_rank] if world.device.type == "cuda" else None)
