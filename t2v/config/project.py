"""The one configuration tree.

A profile is a folder ``configs/<profile>/`` holding one YAML file per top-level section of
:class:`ProjectConfig` (``world.yaml``, ``curate.yaml``, ``t2i.yaml``, ...). Loading merges the files,
applies ``--set section.field=value`` overrides and validates the whole tree with pydantic before any work
starts; an invalid value raises :class:`ConfigError` whose message names the file, the field and the
allowed range.

Components receive the resolved tree as JSON (:func:`ProjectConfig.to_json`) and validate it again, so a
pipeline run is self-describing and the cluster never needs the ``configs/`` folder.

The profiles ship inside the installed package (``configs`` is package data, found through
:mod:`importlib.resources`), so the project image finds them wherever it installs the project;
``T2V_CONFIG_DIR`` points at another folder of profiles.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, model_validator

from model.config import DiTConfig
from t2v.config.sections import (
    BaseModelConfig,
    ClusterConfig,
    CurateStageConfig,
    DataSourceConfig,
    DiTStageConfig,
    DPOStageConfig,
    EncodeConfig,
    EvaluateConfig,
    RegisterConfig,
    StorageConfig,
    Strict,
    TrackingConfig,
    VAEStageConfig,
)
from t2v.config.text_encoders import TextEncoderConfig
from t2v.errors import UserError
from t2v.world.config import WorldConfig


class ConfigError(UserError, ValueError):
    """A configuration could not be loaded or failed validation; the message names the field."""


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
    dpo: DPOStageConfig | None = None
    # the fine-tune pipeline: the model it starts from and its training stage (full or LoRA)
    base_model: BaseModelConfig | None = None
    finetune: DiTStageConfig | None = None
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
        self.encode.check_buckets(self.vae.model, self.dit.patch_size)
        for name in ("t2i", "t2vi", "t2v", "finetune", "dpo"):
            stage = getattr(self, name)
            if stage is None:
                continue
            try:
                stage.parallel.layout(stage.world_size)
            except ValueError as exc:
                raise ValueError(f"{name}.{exc} (num_nodes x nproc_per_node)") from None
            if self.dit.num_attention_heads % stage.parallel.sequence_parallel:
                raise ValueError(
                    f"{name}.parallel.sequence_parallel ({stage.parallel.sequence_parallel}) must divide "
                    f"dit.num_attention_heads ({self.dit.num_attention_heads}): Ulysses splits the heads"
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


SUBSECTION_FILES = {"vae_model": ("vae", "model"), "vae_train": ("vae", "train")}


def config_dir() -> Path:
    """The folder of profiles: ``T2V_CONFIG_DIR``, else the ``configs`` package data."""
    if os.environ.get("T2V_CONFIG_DIR"):
        return Path(os.environ["T2V_CONFIG_DIR"])
    return Path(str(resources.files("configs")))


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
