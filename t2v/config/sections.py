"""The sections of the configuration tree, one class per top-level YAML file of a profile (the networks'
architectures are in :mod:`model.config`, curation's thresholds in :mod:`t2v.config.curate`, the text
encoders' settings in :mod:`t2v.config.text_encoders`).

Training and inference settings say how a network runs (attention backend, activation checkpointing,
precision); they are never saved with a checkpoint, whose ``config.json`` holds the architecture alone.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.config import AttentionBackend, VAEConfig
from t2v.config.curate import CurateConfig
from t2v.launch import naming


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(Strict):
    # Where runs write their bulk data: <root>/<run name>/<stage>/... A local path, file:// or s3:// URI.
    # Credentials and a non-AWS endpoint come from the environment (AWS_*), never from here.
    root: str = Field(".runs/data", min_length=1)


class TrackingConfig(Strict):
    experiment: str = Field("step-video-t2v", min_length=1)
    # The tracking URI comes from MLFLOW_TRACKING_URI or the CLI; this is the fallback for local runs.
    default_tracking_uri: str = "sqlite:///.runs/mlflow.db"
    default_artifact_root: str = ".runs/mlartifacts"


class DataSourceConfig(Strict):
    """Where raw videos come from: the synthetic world (embedded default) or a folder/prefix of videos
    (``raw_uri``), with the table ``curate.filters.input_table`` names (JSONL, CSV or parquet) or, if it
    has none, every video file under it."""

    kind: Literal["synthetic", "uri"] = "synthetic"
    raw_uri: str | None = None

    @model_validator(mode="after")
    def _uri_needed(self):
        if self.kind == "uri" and not self.raw_uri:
            raise ValueError("raw_uri is required when kind is 'uri'")
        return self


class CurateStageConfig(Strict):
    num_shards: int = Field(2, ge=1, le=4096, description="parallel curation tasks (ParallelFor fan-out)")
    filters: CurateConfig


class VAETrainConfig(Strict):
    init_from: str | None = Field(None, description="checkpoint URI to start from (e.g. released weights)")
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0, le=1.0)
    kl_weight: float = Field(1e-6, ge=0)
    mse_weight: float = Field(0.0, ge=0, description="an MSE term beside L1 (weighs the large errors of small objects)")
    num_frames: int = Field(17, ge=1)
    resolution: tuple[int, int] = Field(description="(height, width) of training clips")
    seed: int = 0
    log_every: int = Field(10, ge=1)
    num_eval_clips: int = Field(8, ge=1)
    sample_posterior: bool = Field(
        True, description="decode posterior samples while training (False: the means, a plain autoencoder)"
    )
    normalize_latents: bool = Field(
        True, description="set the VAE's shift/scaling factors so training latents have zero mean, unit variance"
    )
    # Video LPIPS (model.perceptual): off by default. The weights are never downloaded: give a local path or
    # URI of a .pth / .safetensors state dict with lpips' names (the lin heads, and the VGG16 trunk unless
    # perceptual_vgg_uri gives torchvision's VGG16 file).
    perceptual_weight: float = Field(0.0, ge=0, description="weight of video LPIPS (mean over frames); 0: off")
    perceptual_weights_uri: str | None = Field(
        None,
        description="LPIPS weights (lin0..lin4 heads, trunk features.* or net.slice*), a path or URI; required "
        "when perceptual_weight > 0",
    )
    perceptual_vgg_uri: str | None = Field(
        None, description="torchvision VGG16 state dict for the LPIPS trunk, when perceptual_weights_uri has only the heads"
    )
    # GAN term (model.discriminator, model.losses): off by default; the report adds it late in VAE training.
    adversarial_weight: float = Field(
        0.0, ge=0, description="weight of the generator's hinge-GAN term (times the adaptive weight); 0: off"
    )
    disc_start_step: int = Field(
        0, ge=0, description="first training step (1-based) at which the discriminator trains and its term is added"
    )
    disc_lr: float | None = Field(
        None, gt=0, le=1.0, description="AdamW learning rate of the discriminator (None: the VAE's lr, as VQGAN)"
    )
    disc_betas: tuple[float, float] = Field((0.5, 0.9), description="AdamW betas of the discriminator")
    disc_channels: int = Field(64, ge=1, le=1024, description="width of the discriminator's first 3D conv")
    disc_layers: int = Field(3, ge=1, le=6, description="stride-2 stages of the 3D PatchGAN discriminator")
    adaptive_weight_max: float = Field(
        1e4, gt=0, description="clamp of VQGAN's adaptive weight (reconstruction / GAN gradient norm at the decoder's last layer)"
    )

    @model_validator(mode="after")
    def _gan_and_perceptual(self):
        if self.perceptual_weight > 0 and not self.perceptual_weights_uri:
            raise ValueError("perceptual_weights_uri is required when perceptual_weight > 0 (nothing is downloaded)")
        if not all(0.0 <= b < 1.0 for b in self.disc_betas):
            raise ValueError(f"disc_betas must lie in [0, 1), got {list(self.disc_betas)}")
        smallest = 3 * 2**self.disc_layers
        if self.adversarial_weight > 0 and min(self.resolution) < smallest:
            raise ValueError(
                f"disc_layers={self.disc_layers} needs a resolution of at least {smallest} pixels, "
                f"got {list(self.resolution)}"
            )
        return self


class VAEStageConfig(Strict):
    model: VAEConfig
    train: VAETrainConfig


class EncodeConfig(Strict):
    num_frames: int = Field(17, ge=1, description="frames per video clip fed to the VAE (when buckets is empty)")
    resolution: tuple[int, int] = Field(description="(height, width) clips are resized to (when buckets is empty)")
    buckets: list[tuple[int, int, int]] = Field(
        default_factory=list,
        description="clip shapes in pixels, 'FRAMESxHEIGHTxWIDTH' or [frames, height, width]: each clip goes to "
        "the one of nearest aspect ratio among those it has the frames for, center-cropped to its aspect; "
        "empty: every clip is resized to num_frames x resolution",
    )
    workers: int = Field(1, ge=1, le=1024, description="data-parallel encode workers (processes), each a share of the clips")
    batch_size: int = Field(8, ge=1, description="clips per VAE batch (of one bucket)")
    sample_posterior: bool = Field(True, description="the release's encode() samples; False takes the mean")
    shard_size: int = Field(256, ge=1, description="samples per latent shard")
    seed: int = Field(0, description="with a clip's id, seeds that clip's posterior sample")

    @field_validator("buckets", mode="before")
    @classmethod
    def _parse_buckets(cls, value):
        import re

        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"encode.buckets: expected a list of FRAMESxHEIGHTxWIDTH shapes, got {value!r}")
        shapes: list[tuple[int, int, int]] = []
        for i, item in enumerate(value):
            if isinstance(item, str) and re.fullmatch(r"\s*\d+\s*x\s*\d+\s*x\s*\d+\s*", item):
                shape = tuple(int(part) for part in item.split("x"))
            elif (
                isinstance(item, (list, tuple))
                and len(item) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            ):
                shape = tuple(item)
            else:
                raise ValueError(f"encode.buckets[{i}]: {item!r} is not 'FRAMESxHEIGHTxWIDTH' or [frames, height, width]")
            if min(shape) < 1:
                raise ValueError(f"encode.buckets[{i}]: {item!r}: frames, height and width must be >= 1")
            if shape in shapes:
                raise ValueError(f"encode.buckets[{i}]: {item!r} is listed twice")
            shapes.append(shape)
        return shapes

    def shapes(self) -> list[tuple[int, int, int]]:
        """The buckets clips are encoded in: ``buckets``, else the one shape ``num_frames x resolution``."""
        return list(self.buckets) or [(self.num_frames, *self.resolution)]

    def check_buckets(self, vae: VAEConfig, patch_size: int) -> None:
        """ValueError naming ``encode.buckets[i]`` unless every bucket suits the VAE and the DiT: height and
        width multiples of the VAE's spatial compression x the DiT's patch size, frames a count the VAE
        encodes (whole chunks, or a trailing chunk of 1 + k x its temporal compression)."""
        step = vae.spatial_compression * patch_size
        for i, (frames, height, width) in enumerate(self.buckets):
            where = f"encode.buckets[{i}] ({frames}x{height}x{width})"
            if height % step or width % step:
                raise ValueError(
                    f"{where}: height and width must be multiples of {step} (the VAE's spatial compression "
                    f"{vae.spatial_compression} x dit.patch_size {patch_size})"
                )
            try:
                vae.latent_frames(frames)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None


class ParallelConfig(Strict):
    """How the world of ``num_nodes x nproc_per_node`` ranks is laid out: world = replicas x shards x
    sequence-parallel degree. ``data_parallel_shard`` -1 takes what is left of the world."""

    data_parallel: Literal["fsdp", "ddp", "deepspeed"] = Field(
        "fsdp",
        description="fsdp: FSDP2 fully_shard per DiT block (ZeRO-3); ddp: a whole replica per rank; "
        "deepspeed: a DeepSpeed ZeRO engine at zero_stage",
    )
    zero_stage: Literal[1, 2, 3] = Field(
        2, description="deepspeed: 1 shards the optimizer state, 2 also the gradients, 3 also the weights"
    )
    data_parallel_replicate: int = Field(1, ge=1, description="HSDP: copies of the sharded model (fsdp only)")
    data_parallel_shard: int = Field(-1, ge=-1, description="ranks one model is sharded over; -1: the rest")
    sequence_parallel: int = Field(
        1, ge=1, description="Ulysses degree: ranks that split one sample's tokens (divides the heads)"
    )
    reshard_after_forward: bool = Field(True, description="free gathered weights after each block's forward")
    compile: bool = Field(False, description="torch.compile each DiT block")

    def layout(self, world: int) -> tuple[int, int, int]:
        """(replicate, shard, sequence-parallel) degrees for ``world`` ranks; ValueError naming the field."""
        replicate, sp = self.data_parallel_replicate, self.sequence_parallel
        if self.data_parallel in ("ddp", "deepspeed"):
            if world % sp:
                raise ValueError(f"parallel.sequence_parallel ({sp}) must divide the world size ({world})")
            return world // sp, 1, sp
        fixed = replicate * sp * (self.data_parallel_shard if self.data_parallel_shard > 0 else 1)
        if world % fixed:
            raise ValueError(
                f"parallel: data_parallel_replicate x data_parallel_shard x sequence_parallel ({fixed}) must "
                f"divide the world size ({world})"
            )
        shard = self.data_parallel_shard if self.data_parallel_shard > 0 else world // (replicate * sp)
        if replicate * shard * sp != world:
            raise ValueError(
                f"parallel: {replicate} x {shard} x {sp} ranks do not make the world size ({world}); "
                "set data_parallel_shard to -1"
            )
        return replicate, shard, sp

    @model_validator(mode="after")
    def _shard(self):
        if self.data_parallel_shard == 0:
            raise ValueError("data_parallel_shard must be -1 (the rest of the world) or >= 1")
        if self.data_parallel != "fsdp" and self.data_parallel_replicate != 1:
            raise ValueError(f"data_parallel_replicate is an fsdp (HSDP) setting; with {self.data_parallel} every rank replicates")
        if self.data_parallel == "deepspeed" and self.sequence_parallel != 1:
            raise ValueError("sequence_parallel needs data_parallel: fsdp (or ddp); the deepspeed backend runs without it")
        return self


class TrainResources(Strict):
    """What each node of a cluster training job gets (the local backend ignores them)."""

    cpu: str = Field("16", pattern=r"^\d+(\.\d+)?m?$", description="CPU per node (Kubernetes quantity)")
    memory: str = Field("200Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="memory per node")
    shm_size: str = Field("64Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="/dev/shm per node (NCCL, loader workers)")
    max_restarts: int = Field(3, ge=0, le=100, description="restarts of a failed job; each resumes from <train_state>/latest")
    termination_grace_s: int = Field(
        300, ge=30, description="seconds between SIGTERM and SIGKILL: time to write the preemption checkpoint"
    )


class TrainCheckpointConfig(Strict):
    """Resumable training state (torch.distributed.checkpoint), apart from the exported release layout."""

    every_steps: int = Field(0, ge=0, description="save every N optimizer steps; 0: only on SIGTERM and at the end")
    keep_last: int = Field(2, ge=1, description="complete step-N checkpoints kept; older ones are deleted")
    async_save: bool = Field(False, description="write in the background while training goes on")
    resume: bool = Field(True, description="start from <stage>/train_state/latest when it exists")


#: the DiT's attention and feed-forward projections (module-name suffixes, as peft matches them)
LORA_DEFAULT_TARGETS = ("attn1.wqkv", "attn1.wo", "attn2.wq", "attn2.wkv", "attn2.wo", "ff.net.0.proj", "ff.net.2")


class LoRAConfig(Strict):
    """Low-rank adapters (peft's LoRA) on the DiT instead of training every weight: the base weights stay
    frozen and only the adapters train; the stage exports the adapter in peft's format."""

    rank: int = Field(16, ge=1, le=4096, description="r: the adapters' inner dimension")
    alpha: float = Field(16.0, gt=0.0, description="lora_alpha: the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="lora_dropout on the adapters' input")
    use_rslora: bool = Field(False, description="scale by alpha / sqrt(rank) (rank-stabilised LoRA)")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LORA_DEFAULT_TARGETS),
        min_length=1,
        description="module-name suffixes to adapt (default: every attention and feed-forward projection)",
    )


class DiTStageConfig(Strict):
    """One flow-matching training stage (t2i, t2vi or t2v). The report gives no optimizer settings,
    timestep distribution or data thresholds; these are our choices, exposed here."""

    data: Literal["images", "images+videos", "videos"]
    # t2v fine-tunes on the best-curated subset: clips whose curation quality score is at least this.
    min_quality: float = Field(0.0, ge=0.0, le=1.0)
    video_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of video batches in images+videos")
    init_from: str | None = Field(None, description="checkpoint URI overriding the previous stage's")
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1, description="per process")
    batch_size_per_bucket: dict[str, int] = Field(
        default_factory=dict,
        description="per process, by clip shape FRAMESxHEIGHTxWIDTH in pixels (images: 1xHxW); others use batch_size",
    )
    lr: float = Field(gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    objective: Literal["flow_matching"] = Field("flow_matching", description="the loss (trainer.objectives.OBJECTIVES)")
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0, description="share of captions replaced by the negative prompt (for CFG)")
    nproc_per_node: int = Field(1, ge=1, le=64)
    num_nodes: int = Field(1, ge=1)
    launcher: Literal["local", "trainjob", "pytorchjob"] = "local"
    # how the network runs while it trains (not saved with the checkpoint)
    attention_backend: AttentionBackend = Field("auto", description="auto (flash-attn when it applies, else SDPA), sdpa, flash or math")
    activation_checkpointing: Literal["none", "full", "selective"] = Field(
        "none",
        description="recompute DiT blocks in the backward pass: full (every block whole) or selective "
        "(keep matmul and attention outputs, recompute the rest); true/false mean full/none",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: compute in bf16; master weights, gradient reduction and optimizer state stay fp32"
    )
    parallel: ParallelConfig = ParallelConfig()
    # optimisation
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="after the linear warmup")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine: the final lr as a share of lr")
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    data_workers: int = Field(
        2, ge=0, le=64, description="threads reading the next micro-batches' latents while one trains; 0: read in the loop"
    )
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0, description="EMA of the weights (exported when > 0); 0: off")
    nonfinite_policy: Literal["skip", "reload", "fail"] = Field(
        "skip", description="a non-finite loss or gradient norm: skip the step, reload the last checkpoint, or fail"
    )
    max_nonfinite_steps: int = Field(20, ge=1, description="consecutive non-finite steps before the run fails")
    loss_spike_factor: float = Field(3.0, gt=1.0, description="log a spike when a loss exceeds this x its running mean")
    checkpoint: TrainCheckpointConfig = TrainCheckpointConfig()
    resources: TrainResources = TrainResources()
    lora: LoRAConfig | None = Field(None, description="train LoRA adapters instead of the whole DiT")
    seed: int = 0
    log_every: int = Field(10, ge=1)

    @field_validator("batch_size_per_bucket")
    @classmethod
    def _buckets(cls, value: dict[str, int]):
        import re

        for key, size in value.items():
            if not re.fullmatch(r"\d+x\d+x\d+", key) or size < 1:
                raise ValueError(f"batch_size_per_bucket: {key!r}: {size!r} must be FRAMESxHEIGHTxWIDTH: a batch size >= 1")
        return value

    @field_validator("activation_checkpointing", mode="before")
    @classmethod
    def _ac_bool(cls, value):
        if isinstance(value, bool):
            return "full" if value else "none"
        return value

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        return self

    @model_validator(mode="after")
    def _lora_backend(self):
        if self.lora is not None and self.parallel.data_parallel == "deepspeed":
            raise ValueError("lora: LoRA adapters train with parallel.data_parallel fsdp (or one process), not deepspeed")
        return self

    @model_validator(mode="after")
    def _zero3(self):
        """What the deepspeed backend does not do at ZeRO-3 (its weights exist only as partitions)."""
        if self.parallel.data_parallel != "deepspeed" or self.parallel.zero_stage != 3:
            return self
        if self.ema_decay > 0:
            raise ValueError("ema_decay: the EMA is not kept at parallel.zero_stage 3; use zero_stage 1/2 or data_parallel: fsdp")
        if self.nonfinite_policy == "skip":
            raise ValueError(
                "nonfinite_policy: skip needs parallel.zero_stage 1 or 2 (ZeRO-3 applies a non-finite step "
                "outside fp16); use reload or fail, or data_parallel: fsdp"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.nproc_per_node


class BaseModelConfig(Strict):
    """The model a fine-tune (or an evaluation of any model) starts from: the released Step-Video-T2V
    folder (``transformer/``, ``vae/``, ``hunyuan_clip/``, ``step_llm/``; local or s3://), a DiT checkpoint
    or LoRA adapter folder, or a registered version (``models:/<name>@<alias>``, ``models:/<name>/<version>``),
    whose tags name its VAE and text encoders. The ``*_uri`` fields name a part the reference does not."""

    uri: str = Field(min_length=1, description="released folder, checkpoint folder, or models:/ reference")
    vae_uri: str | None = Field(None, description="the VAE checkpoint, when the reference names none")
    clip_uri: str | None = Field(None, description="the CLIP text encoder folder, when the reference names none")
    llm_uri: str | None = Field(None, description="the Step-LLM text encoder folder, when the reference names none")


class DPOStageConfig(DiTStageConfig):
    """Video-DPO after t2v (or from any DiT checkpoint with ``init_from``): each round samples
    ``samples_per_prompt`` videos per training prompt from the current policy, scores them with
    ``reward``, pairs the best with the worst when their scores differ by at least ``pair_margin``, and
    trains on the pairs with :class:`trainer.objectives.FlowMatchingDPO` against the round's starting
    weights. A next round samples with the updated policy and takes it as its reference."""

    data: Literal["videos"] = "videos"
    objective: Literal["flow_dpo"] = "flow_dpo"
    caption_dropout: float = Field(0.0, ge=0.0, le=1.0)
    beta: float = Field(500.0, gt=0.0, description="the DPO temperature on mean squared velocity errors")
    rounds: int = Field(1, ge=1, le=20, description="on-policy rounds: sample, score, pair, train")
    num_prompts: int = Field(16, ge=1, description="training prompts, drawn from the latent set's captions")
    samples_per_prompt: int = Field(4, ge=2, le=64, description="K videos per prompt, seeds seed..seed+K-1")
    pair_margin: float = Field(0.05, ge=0.0, description="least reward gap between preferred and rejected")
    pairs_per_prompt: int = Field(
        1, ge=1, le=32,
        description="pairs from one prompt's candidates: the best against the worst, the second best against "
        "the second worst, ...; at most samples_per_prompt // 2",
    )
    reward: Literal["checker", "clip", "labels"] = Field(
        "checker",
        description="checker: the synthetic world's exact checker; clip: text-video similarity of a CLIP "
        "model at reward_model_uri; labels: human raters' choices in labels_uri (a filled labelling sheet)",
    )
    reward_model_uri: str | None = Field(None, description="reward: clip -- a local or s3:// CLIP directory")
    labels_uri: str | None = Field(None, description="reward: labels -- the filled labels.csv of a labelling sheet")
    labelling_sheet: bool = Field(True, description="write each round's candidates as a sheet for human raters")
    sample_steps: int = Field(20, ge=1, le=1000, description="sampler steps for the candidates")
    guidance_scale: float = Field(4.0, ge=1.0, le=30.0)
    shift: float = Field(3.0, gt=0.0)
    num_frames: int = Field(17, ge=1, description="frames of each candidate video")

    @model_validator(mode="after")
    def _reward_source(self):
        if self.reward == "clip" and not self.reward_model_uri:
            raise ValueError("reward_model_uri: reward clip needs a CLIP model directory (local or s3://)")
        if self.reward == "labels" and not self.labels_uri:
            raise ValueError("labels_uri: reward labels needs a filled labels.csv (from a round's labelling/ sheet)")
        if self.pairs_per_prompt > self.samples_per_prompt // 2:
            raise ValueError(f"pairs_per_prompt: {self.pairs_per_prompt} pairs need at least {2 * self.pairs_per_prompt} "
                             f"samples_per_prompt (it is {self.samples_per_prompt})")
        if self.reward == "labels" and self.rounds != 1:
            raise ValueError("rounds: human labels train one round (a new round needs new labels)")
        return self


class EvaluateConfig(Strict):
    prompts: Literal["heldout", "step-video-t2v-eval", "file"] = Field(
        "heldout",
        description="heldout: the synthetic world's held-out scenes (scored exactly by its checker); "
        "step-video-t2v-eval: the 128 prompts of the report's benchmark; file: prompt_file",
    )
    prompt_file: str | None = Field(None, description="prompts: file -- one prompt a line, or category<TAB>prompt")
    num_prompts: int = Field(16, ge=1)
    num_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(4.0, ge=1.0, le=30.0)
    shift: float = Field(3.0, gt=0)
    negative_prompt: str = ""
    num_frames: int = Field(17, ge=1)
    seed: int = 1234
    num_sample_videos: int = Field(4, ge=0)
    compare_untrained: bool = Field(True, description="also score a randomly initialised DiT as a floor")
    attention_backend: AttentionBackend = Field("auto", description="attention of the DiT while sampling")
    clip_model_uri: str | None = Field(None, description="a transformers CLIP folder (local or s3://): text-video alignment")
    aesthetic_plugin: str | None = Field(None, description="module:callable scoring a list of videos (an aesthetic model)")
    compare_champion: bool = Field(True, description="sample the registered champion on the same prompts and seed")
    compare_start: bool = Field(True, description="also score the checkpoint the last stage started from (t2v, before dpo)")
    tie_tolerance: float = Field(0.01, ge=0.0, description="a per-prompt score difference within this is a tie")
    bootstrap_samples: int = Field(2000, ge=100, le=100_000, description="resamples of the win rate's interval")
    report_videos: int = Field(8, ge=0, description="prompts shown as videos in the report's grid")
    vbench_layout: bool = Field(True, description="also write the challenger's videos as VBench reads them (vbench/)")
    # The gate: the challenger alias is set only when the mean checker score reaches this.
    gate_min_score: float = Field(0.5, ge=0.0, le=1.0)
    gate_max_regression: float = Field(
        0.02, ge=0.0, le=1.0, description="the most the score may fall below the champion's and still pass"
    )

    @model_validator(mode="after")
    def _prompt_file(self):
        if self.prompts == "file" and not self.prompt_file:
            raise ValueError("prompt_file: prompts: file needs a prompt file (local or s3://)")
        return self


class RegisterConfig(Strict):
    dit_model_name: str = Field("step-video-t2v-dit", min_length=1)
    vae_model_name: str = Field("step-video-t2v-vae", min_length=1)
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"


class TaskResources(Strict):
    cpu: str = Field("1", pattern=r"^\d+(\.\d+)?m?$", description="Kubernetes CPU quantity")
    memory: str = Field("4Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="Kubernetes memory quantity")
    gpus: int = Field(0, ge=0, le=16)
    scratch: str | None = Field(
        None,
        pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$",
        description="a disk of this size (Kubernetes quantity) for the task's temporary files: a generic"
        " ephemeral volume (created with the pod, deleted with it) at /scratch, which TMPDIR names; a curate"
        " shard spools its kept clips there and writes its tars, more than a node's own disk may hold; None:"
        " the node's disk",
    )


class ClusterResources(Strict):
    data: TaskResources = TaskResources(cpu="2", memory="8Gi")
    curate: TaskResources = TaskResources(cpu="4", memory="16Gi")
    gpu_single: TaskResources = TaskResources(cpu="8", memory="64Gi", gpus=1)
    trainer_launcher: TaskResources = TaskResources(cpu="1", memory="2Gi")


class ClusterConfig(Strict):
    """Where tasks run on the cluster (compiled into the pipeline; the local runner ignores it). The
    defaults match the node pools of infra/terraform and the queues of infra/addons."""

    # Where training jobs (TrainJob / PyTorchJob) are created; None: the namespace the pipeline task runs in.
    namespace: str | None = None
    # Pipeline runs run as this account (charts/pipeline-rbac): it may create TrainJobs and read pod logs.
    service_account: str = "t2v-pipeline-runner"
    # the accelerator of the GPU pool: the capacity planner checks each training stage against it
    gpu_type: Literal["h100-80gb", "h200-141gb", "a100-80gb", "a100-40gb", "l40s-48gb"] = "h100-80gb"
    pool_label: str = naming.GPU_POOL_LABEL
    cpu_pool: str = naming.POOL_CPU
    gpu_pool: str = naming.POOL_GPU
    gpu_taint_key: str = naming.GPU_TAINT_KEY
    gpu_resource: str = naming.GPU_RESOURCE
    resources: ClusterResources = ClusterResources()
    # The StorageClass of the tasks' scratch volumes (TaskResources.scratch); None: the cluster's default.
    scratch_storage_class: str | None = None
    # Retries of the idempotent data stages (transient S3/API errors on the cluster). The local runner
    # honours them too, which only delays a user error: the tiny profile turns them off.
    task_retries: bool = True


