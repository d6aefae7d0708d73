"""Capacity planner: memory per GPU, FLOPs and step time of a DiT training stage, before any GPU is asked for.

Per GPU, with P parameters, N_s ranks the weights are sharded over (FSDP: data_parallel_shard x
sequence_parallel; DDP: 1; DeepSpeed: the world for what its zero_stage shards -- the optimizer state
from stage 1, the gradients from 2, the weights and the EMA from 3 -- and 1 for the rest), b samples per micro-batch, s = S / sequence_parallel video tokens per rank,
hidden size D, L layers and activations of a bytes (2 in bf16, 4 in fp32):

    parameters      4 P / N_s                     fp32 master weights
    gradients       4 P / N_s                     fp32 (reduced in fp32)
    optimizer       8 P / N_s                     AdamW's two fp32 moments
    EMA             4 P / N_s                     when ema_decay > 0
    reference       4 P / N_s                     Video-DPO's frozen copy (its activations count twice:
                                                  each step's batch is b pairs, 2b videos)
    gathered        2 x P_block x w + P_root x w  FSDP: the block in use and the one prefetched, and the
                    + 4 P_block                   root's weights, in the compute dtype w; one block's
                                                  unsharded fp32 gradient before its reduce-scatter
    activations     b s D a x (L k + r)           k per block kept for the backward, r alive at once at
                                                  the peak (a recomputed block, activation gradients):
                                                  none: k = 29.2, r = 6.4;  full: k = 1.0, r = 40.6;
                                                  selective: k = 14.1, r = 27.7
    reserve         1.5 GiB on a GPU              CUDA context, NCCL buffers, allocator slack

k and r were measured on this DiT (fp32, CPU, SDPA's flash kernel, which keeps no S x S scores): the peak
resident memory of one forward + backward at 2 and 6 layers, with glibc's mmap threshold fixed so freed
tensors leave the resident set, fitted to a line in L (``bench/plan_memory.py`` re-measures them).
Autograd's saved-tensor hooks count 33.2 D per token per block kept without checkpointing, and 1.0 with
it; the peak is lower than the sum because the first blocks' tensors are freed as the backward runs.

FLOPs per step are :func:`model.flops.training_flops` per sample times the global batch; the step time is
FLOPs / (GPUs x peak x MFU). A plan fits when its total is at most 95 % of the GPU's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model.flops import training_flops
from trainer.lora import lora_parameters

GIB = 2**30

ACTIVATION_UNITS = {  # (kept per block, recomputed at once) in units of D per token
    "none": (29.2, 6.4),
    "full": (1.0, 40.6),
    "selective": (14.1, 27.7),
}
GPU_RESERVE = int(1.5 * GIB)
FIT_SHARE = 0.95


@dataclass(frozen=True)
class Accelerator:
    name: str
    memory: int  # bytes
    peak_bf16_flops: float


ACCELERATORS = {
    "h100-80gb": Accelerator("NVIDIA H100 80GB (SXM)", 80 * 10**9, 989e12),
    "h200-141gb": Accelerator("NVIDIA H200 141GB", 141 * 10**9, 989e12),
    "a100-80gb": Accelerator("NVIDIA A100 80GB", 80 * 10**9, 312e12),
    "a100-40gb": Accelerator("NVIDIA A100 40GB", 40 * 10**9, 312e12),
    "l40s-48gb": Accelerator("NVIDIA L40S 48GB", 48 * 10**9, 362e12),
}


@dataclass
class Plan:
    stage: str
    accelerator: Accelerator | None
    gpus: int
    layout: tuple[int, int, int]  # replicate, shard, sequence parallel
    video_tokens: int
    tokens_per_rank: int
    global_batch: int
    memory: dict[str, int] = field(default_factory=dict)  # bytes per GPU by row
    flops_per_step: float = 0.0
    mfu: float = 0.4
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.memory.values())

    @property
    def step_seconds(self) -> float | None:
        if self.accelerator is None:
            return None
        return self.flops_per_step / (self.gpus * self.accelerator.peak_bf16_flops * self.mfu)

    @property
    def fits(self) -> bool:
        return not self.problems

    def report(self) -> str:
        replicate, shard, sp = self.layout
        gpu = self.accelerator.name if self.accelerator else "CPU (no accelerator)"
        lines = [
            f"plan for {self.stage} on {self.gpus} x {gpu}: replicate {replicate} x shard {shard} x sequence parallel {sp}",
            f"  tokens per sample {self.video_tokens:,} ({self.tokens_per_rank:,} per rank), global batch {self.global_batch}",
            "  memory per GPU:",
        ]
        lines += [f"    {name:<12} {value / GIB:9.2f} GiB" for name, value in self.memory.items()]
        lines.append(f"    {'total':<12} {self.total / GIB:9.2f} GiB" + (f" of {self.accelerator.memory / GIB:.1f} GiB" if self.accelerator else ""))
        lines.append(f"  FLOPs per step {self.flops_per_step:.3e} ({self.flops_per_step / self.global_batch:.3e} per sample)")
        if self.step_seconds is not None:
            lines.append(f"  step time at {self.mfu:.0%} MFU: {self.step_seconds:.2f} s ({self.global_batch * self.video_tokens / self.step_seconds:,.0f} tokens/s)")
        lines += [f"  DOES NOT FIT: {p}" for p in self.problems] or ["  fits"]
        return "\n".join(lines)


def stage_tokens(config, stage: str, frames: int | None = None, resolution: tuple[int, int] | None = None) -> int:
    """Video tokens of the stage's largest sample: latent frames x (H / 16 / p) x (W / 16 / p). Images are
    one latent frame; clips have the encode stage's frames and resolution unless given."""
    stage_cfg = getattr(config, stage)
    vae = config.vae.model
    height, width = resolution or tuple(config.encode.resolution)
    p = config.dit.patch_size
    grid = (height // vae.spatial_compression // p) * (width // vae.spatial_compression // p)
    latent_frames = 1 if stage_cfg.data == "images" else vae.latent_frames(frames or config.encode.num_frames)
    return latent_frames * grid


def _block_and_root_params(dit_cfg) -> tuple[int, int, int]:
    import torch

    from model.dit import StepVideoDiT

    with torch.device("meta"):
        dit = StepVideoDiT(dit_cfg)
    total = sum(p.numel() for p in dit.parameters())
    block = sum(p.numel() for p in dit.transformer_blocks[0].parameters())
    return total, block, total - block * dit_cfg.num_layers


def plan_stage(
    config,
    stage: str,
    accelerator: str | Accelerator | None = "h100-80gb",
    gpus: int | None = None,
    frames: int | None = None,
    resolution: tuple[int, int] | None = None,
    mfu: float = 0.4,
) -> Plan:
    """The plan of ``config``'s ``stage`` on ``gpus`` accelerators (default: the stage's world size)."""
    stage_cfg = getattr(config, stage)
    world = gpus or stage_cfg.world_size
    device = ACCELERATORS[accelerator] if isinstance(accelerator, str) else accelerator
    layout = stage_cfg.parallel.layout(world)
    replicate, shard, sp = layout
    backend = stage_cfg.parallel.data_parallel if world > 1 else "ddp"
    fsdp = backend == "fsdp"
    shards = shard * sp if fsdp else 1
    zero = stage_cfg.parallel.zero_stage if backend == "deepspeed" else 0
    # ZeRO-1 shards the optimizer state, ZeRO-2 the gradients too, ZeRO-3 the weights too (as FSDP)
    param_shards, grad_shards, optim_shards = (
        (world if zero >= 3 else 1), (world if zero >= 2 else 1), (world if zero >= 1 else 1)
    ) if zero else (shards, shards, shards)
    total, block, root = _block_and_root_params(config.dit)
    bf16 = stage_cfg.precision == "bf16"
    compute_bytes = 2 if bf16 else 4
    tokens = stage_tokens(config, stage, frames, resolution)
    plan = Plan(stage, device, world, layout, tokens, -(-tokens // sp), stage_cfg.batch_size * replicate * shard * stage_cfg.grad_accum_steps, mfu=mfu)
    if tokens % sp:
        plan.problems.append(f"sequence_parallel={sp} does not divide the {tokens:,} tokens per sample")
    # LoRA: the frozen base has no gradients or optimizer state; only the adapters train
    trainable = total if stage_cfg.lora is None else lora_parameters(config.dit, stage_cfg.lora)
    adapters = 0 if stage_cfg.lora is None else trainable
    plan.memory["parameters"] = 4 * (total + adapters) // param_shards
    plan.memory["gradients"] = 4 * trainable // grad_shards
    plan.memory["optimizer"] = 8 * trainable // optim_shards
    if stage_cfg.ema_decay > 0:
        plan.memory["ema"] = 4 * trainable // param_shards
    if fsdp or zero == 3:
        plan.memory["gathered"] = (2 * block + root) * compute_bytes + 4 * block
    dpo = stage_cfg.objective == "flow_dpo"  # a frozen reference, and both videos of each pair in one forward
    if dpo:
        plan.memory["reference"] = 4 * total // param_shards
    kept, recomputed = ACTIVATION_UNITS[stage_cfg.activation_checkpointing]
    per_token = (2 if dpo else 1) * stage_cfg.batch_size * plan.tokens_per_rank * config.dit.hidden_size * compute_bytes
    plan.memory["activations"] = int(per_token * (config.dit.num_layers * kept + recomputed))
    if device is not None:
        plan.memory["reserve"] = GPU_RESERVE
    plan.flops_per_step = float(training_flops(config.dit, tokens, config.text_encoders.llm_max_length, config.text_encoders.clip_max_length)) * plan.global_batch
    if dpo:  # policy forward + backward on 2B, the reference's forward on 2B: 8/3 of B's training FLOPs
        plan.flops_per_step *= 8.0 / 3.0
    if device is not None and plan.total > FIT_SHARE * device.memory:
        plan.problems.append(
            f"{plan.total / GIB:.1f} GiB per GPU is more than {FIT_SHARE:.0%} of {device.name}'s {device.memory / GIB:.1f} GiB; "
            "raise sequence_parallel or data_parallel_shard, turn on activation_checkpointing, or lower batch_size"
            + ("; sequence_parallel needs data_parallel: fsdp" if zero else "")
        )
    return plan


def this_accelerator(device) -> Accelerator | None:
    """The accelerator a CUDA device is, with its real memory (None on a CPU)."""
    import torch

    if device.type != "cuda":
        return None
    props = torch.cuda.get_device_properties(device)
    from trainer.metrics import peak_flops

    return Accelerator(props.name, props.total_memory, peak_flops(device) or 0.0)


def plan_summary(plan: Plan) -> dict[str, float]:
    """The figures worth keeping with a run (MLflow params)."""
    out = {
        "plan.memory_per_gpu_gib": round(plan.total / GIB, 2),
        "plan.tokens_per_sample": plan.video_tokens,
        "plan.flops_per_step": plan.flops_per_step,
    }
    if plan.step_seconds is not None:
        out[f"plan.step_seconds_at_{round(plan.mfu * 100)}pct_mfu"] = round(plan.step_seconds, 3)
    return out
