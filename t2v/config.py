"""The one configuration tree.

A profile is a folder ``configs/<profile>/`` holding one YAML file per top-level section of
:class:`ProjectConfig` (``world.yaml``, ``curate.yaml``, ``t2i.yaml``, ...). Loading merges the files,
applies ``--set section.field=value`` overrides and validates the whole tree with pydantic before any work
starts; an invalid value raises :class:`ConfigError` whose message names the file, the field and the
allowed range.

Components receive the resolved tree as JSON (:func:`ProjectConfig.to_json`) and validate it again, so a
pipeline run is self-describing and the cluster never needs the ``configs/`` folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.curate.config import CurateConfig
from model.config import DiTConfig, VAEConfig
from t2v import launcher
from t2v.text_encoders import TextEncoderConfig
from t2v.world.config import WorldConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


class ConfigError(ValueError):
    """A configuration could not be loaded or failed validation; the message names the field."""


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
    with a metadata.jsonl beside them."""

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
    num_frames: int = Field(17, ge=1, description="frames per video clip fed to the VAE")
    resolution: tuple[int, int] = Field(description="(height, width) clips are resized to")
    batch_size: int = Field(8, ge=1)
    sample_posterior: bool = Field(True, description="the release's encode() samples; False takes the mean")
    shard_size: int = Field(256, ge=1, description="samples per latent shard")
    seed: int = 0


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
    lr: float = Field(gt=0, le=1.0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    timestep_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)
    caption_dropout: float = Field(0.1, ge=0.0, le=1.0, description="share of captions replaced by the negative prompt (for CFG)")
    nproc_per_node: int = Field(1, ge=1, le=64)
    num_nodes: int = Field(1, ge=1)
    launcher: Literal["local", "trainjob", "pytorchjob"] = "local"
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    log_every: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed steps ({self.steps})")
        return self


class EvaluateConfig(Strict):
    prompts: Literal["heldout", "step-video-t2v-eval"] = "heldout"
    num_prompts: int = Field(16, ge=1)
    num_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(4.0, ge=1.0, le=30.0)
    shift: float = Field(3.0, gt=0)
    negative_prompt: str = ""
    num_frames: int = Field(17, ge=1)
    seed: int = 1234
    num_sample_videos: int = Field(4, ge=0)
    compare_untrained: bool = Field(True, description="also score a randomly initialised DiT as a floor")
    # The gate: the challenger alias is set only when the mean checker score reaches this.
    gate_min_score: float = Field(0.5, ge=0.0, le=1.0)


class RegisterConfig(Strict):
    dit_model_name: str = Field("step-video-t2v-dit", min_length=1)
    vae_model_name: str = Field("step-video-t2v-vae", min_length=1)
    challenger_alias: str = "challenger"
    champion_alias: str = "champion"


class TaskResources(Strict):
    cpu: str = Field("1", pattern=r"^\d+(\.\d+)?m?$", description="Kubernetes CPU quantity")
    memory: str = Field("4Gi", pattern=r"^\d+(\.\d+)?([KMGTPE]i?)?$", description="Kubernetes memory quantity")
    gpus: int = Field(0, ge=0, le=16)


class ClusterResources(Strict):
    data: TaskResources = TaskResources(cpu="2", memory="8Gi")
    curate: TaskResources = TaskResources(cpu="4", memory="16Gi")
    gpu_single: TaskResources = TaskResources(cpu="8", memory="64Gi", gpus=1)
    trainer_launcher: TaskResources = TaskResources(cpu="1", memory="2Gi")


class ClusterConfig(Strict):
    """Where tasks run on the cluster (compiled into the pipeline; the local runner ignores it). The
    defaults match the node pools of infra/terraform and the queues of infra/addons."""

    namespace: str = "kubeflow"
    # Pipeline runs run as this account (charts/pipeline-rbac): it may create TrainJobs and read pod logs.
    service_account: str = "t2v-pipeline-runner"
    pool_label: str = launcher.GPU_POOL_LABEL
    cpu_pool: str = launcher.POOL_CPU
    gpu_pool: str = launcher.POOL_GPU
    gpu_taint_key: str = launcher.GPU_TAINT_KEY
    gpu_resource: str = launcher.GPU_RESOURCE
    resources: ClusterResources = ClusterResources()
    # Retries of the idempotent data stages (transient S3/API errors on the cluster). The local runner
    # honours them too, which only delays a user error: the tiny profile turns them off.
    task_retries: bool = True


class ProjectConfig(Strict):
    profile: str
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
    source: DataSourceConfig = DataSourceConfig()
    world: WorldConfig
    curate: CurateStageConfig
    vae: VAEStageConfig
    text_encoders: TextEncoderConfig
    encode: EncodeConfig
    dit: DiTConfig
    t2i: DiTStageConfig
    t2vi: DiTStageConfig
    t2v: DiTStageConfig
    evaluate: EvaluateConfig = EvaluateConfig()
    registry: RegisterConfig = RegisterConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _consistent(self):
        if self.dit.in_channels != self.vae.model.z_channels:
            raise ValueError(
                f"dit.in_channels ({self.dit.in_channels}) must equal vae.model.z_channels "
                f"({self.vae.model.z_channels})"
            )
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ProjectConfig:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, source="config JSON")) from None

    def config_hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def section(self, name: str) -> dict[str, Any]:
        return getattr(self, name).model_dump(mode="json")


STAGE_ORDER = (
    "prepare-data",
    "curate-shard",
    "curate",
    "train-vae",
    "encode",
    "t2i",
    "t2vi",
    "t2v",
    "evaluate",
    "register",
)


SUBSECTION_FILES = {"vae_model": ("vae", "model"), "vae_train": ("vae", "train")}


def config_dir() -> Path:
    return Path(os.environ.get("T2V_CONFIG_DIR", REPO_ROOT / "configs"))


def available_profiles() -> list[str]:
    root = config_dir()
    return sorted(p.name for p in root.iterdir() if (p / "dit.yaml").is_file()) if root.is_dir() else []


def _format_errors(exc: ValidationError, source: str, origin: dict[str, str] | None = None) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        where = (origin or {}).get(str(err["loc"][0]) if err["loc"] else "", source)
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
        lines.append(f"{where}: {loc or '<root>'}: {err['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.field=value")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r}: empty field name")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return path, value


def load_config(profile: str | Path = "tiny", overrides: list[str] | None = None) -> ProjectConfig:
    """Load ``configs/<profile>/*.yaml`` (or a folder path), apply ``a.b=c`` overrides and validate."""
    folder = Path(profile)
    if not folder.is_dir():
        folder = config_dir() / str(profile)
    if not folder.is_dir():
        raise ConfigError(
            f"unknown profile {str(profile)!r}: no folder {folder} (profiles: {', '.join(available_profiles()) or 'none'})"
        )
    tree: dict[str, Any] = {"profile": folder.name}
    origin: dict[str, str] = {}
    for path in sorted(folder.glob("*.yaml")):
        section = path.stem
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of fields")
        # vae_model.yaml / vae_train.yaml fill vae.model / vae.train; other files the section of their name.
        if section in SUBSECTION_FILES:
            parent, child = SUBSECTION_FILES[section]
            tree.setdefault(parent, {})[child] = data
            origin[parent] = str(path)
        else:
            tree[section] = data
            origin[section] = str(path)
    for text in overrides or []:
        keys, value = _parse_override(text)
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
        node[keys[-1]] = value
        origin.setdefault(keys[0], f"--set {text}")
    try:
        return ProjectConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source=str(folder), origin=origin)) from None
