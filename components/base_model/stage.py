"""base-model: the model a fine-tune or an evaluation starts from, resolved and checked before any work.

``base_model.uri`` names it: the released Step-Video-T2V folder, a DiT checkpoint (or LoRA adapter) folder,
or a registered version (``models:/<name>@<alias>``, ``models:/<name>/<version>``) whose tags name its VAE
and text encoders. The stage resolves the reference once (so an alias that moves later does not change
what this run trains on), checks the DiT and the VAE against the profile's ``dit`` and ``vae`` sections
from the safetensors headers alone, and writes the negative prompt's text states with the base's own text
encoders.

One manifest serves four kinds (:attr:`~components.framework.skeleton.Stage.views`): the ``dit`` to start
from, its ``vae``, the text encoders (a ``raw`` input, as prepare-data's), and a ``latents`` input for an
evaluation that encodes no data (the latent shape to sample and the negative prompt).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import Any

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, storage
from t2v.errors import StageError

log = logging.getLogger(__name__)
STAGE = "base-model"


def _config(ctx):
    cfg = ctx.config.base_model
    if cfg is None:
        raise StageError(
            "base_model: this pipeline starts from a model; add a base_model section "
            "(uri: the released folder, a checkpoint folder or models:/<name>@<alias>)"
        )
    return cfg


def resolve_base(ctx) -> dict[str, Any]:
    """The base model's parts: DiT, VAE and text encoder URIs, and its registered version when it has one."""
    from t2v.generate import resolve, with_released_parts

    cfg = _config(ctx)
    try:
        model = with_released_parts(resolve(cfg.uri, ctx.tracking_uri))
    except StageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the registry's or the store's own error, as one line
        raise StageError(f"base_model.uri: {cfg.uri}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    dit_uri = model.dit_uri
    released_dit = storage.join(dit_uri, "transformer")
    if any(storage.exists(storage.join(released_dit, name)) for name in (checkpoints.DIT_WEIGHTS, checkpoints.index_name(checkpoints.DIT_WEIGHTS))):
        dit_uri = released_dit  # the released root: its DiT is transformer/
    parts = {
        "dit": dit_uri,
        "vae": cfg.vae_uri or model.vae_uri,
        "clip": cfg.clip_uri or model.clip_uri,
        "llm": cfg.llm_uri or model.llm_uri,
    }
    missing = [f"base_model.{name}_uri" for name, uri in parts.items() if name != "dit" and not uri]
    if missing:
        raise StageError(f"base_model.uri: {cfg.uri} names no {', '.join(m.split('.')[1][:-4] for m in missing)}; set {', '.join(missing)}")
    return {**parts, "version": model.version, "vae_version": model.vae_version, "reference": cfg.uri}


def _settings(ctx) -> dict[str, Any]:
    return {
        "base_model": ctx.config.section("base_model") if ctx.config.base_model else None,
        "resolved": resolve_base(ctx),
        "dit": ctx.config.section("dit"),
        "vae": ctx.config.vae.model.model_dump(mode="json"),
        "negative_prompt": ctx.config.evaluate.negative_prompt,
    }


def _check(uri: str, network: str, cfg, field: str) -> dict[str, Any]:
    adapter = checkpoints.read_adapter(uri) if network == "dit" and checkpoints.is_adapter(uri) else None
    weights = adapter.base_uri if adapter is not None else uri
    try:
        report = checkpoints.verify(weights, network, cfg)
    except checkpoints.CheckpointError as exc:
        raise StageError(f"base_model: {exc}") from None
    if not report.ok:
        raise StageError(
            f"base_model: the {network} at {weights} does not fit the profile's {field} section: "
            + "; ".join(report.problems())
        )
    return {"tensors": report.tensors, "parameters": report.parameters, "dtypes": report.dtypes, "adapter": adapter is not None}


def _base_model(run: StageRun) -> StageOutput:
    from t2v.generate import conditioning, open_text_encoders
    from t2v.shards import write_index_and_negative

    ctx = run.ctx
    parts = resolve_base(ctx)
    dit = _check(parts["dit"], "dit", ctx.config.dit, "dit")
    vae = _check(parts["vae"], "vae", ctx.config.vae.model, "vae.model")
    with ExitStack() as stack:
        encoders = open_text_encoders(ctx.config.text_encoders, parts["clip"], parts["llm"], stack)
        negative = conditioning(encoders, [ctx.config.evaluate.negative_prompt])
    files = write_index_and_negative([], {k: v[0] for k, v in negative.items()}, run.uri)
    # the shape an evaluation samples at: the one the encode stage would train on (its first bucket)
    vae_cfg, encode = ctx.config.vae.model, ctx.config.encode
    frames, height, width = encode.buckets[0] if encode.buckets else (encode.num_frames, *encode.resolution)
    latent_shape = [
        vae_cfg.latent_frames(frames), vae_cfg.z_channels,
        height // vae_cfg.spatial_compression, width // vae_cfg.spatial_compression,
    ]
    text_encoders = {"clip": parts["clip"], "llm": parts["llm"]}
    lineage = {"reference": parts["reference"], "version": parts["version"], "vae_version": parts["vae_version"]}
    log.info(
        "base-model: %s -> DiT %s (%d parameters%s), VAE %s", parts["reference"], parts["dit"], dit["parameters"],
        ", a LoRA adapter" if dit["adapter"] else "", parts["vae"],
    )
    return StageOutput(
        files=files,
        summary={"reference": parts["reference"], "version": parts["version"], "dit": dit, "vae": vae,
                 "video_latent_shape": latent_shape},
        extra={
            "checkpoint_uri": parts["dit"],
            "text_encoders": text_encoders,
            "negative_uri": storage.join(run.uri, "negative.npz"),
            "base_model": lineage,
        },
        views={
            "dit": {"checkpoint_uri": parts["dit"]},
            "vae": {"checkpoint_uri": parts["vae"], "registered_version": parts["vae_version"]},
            "raw": {"text_encoders": text_encoders},
            "latents": {"text_encoders": text_encoders},
        },
        mirror=("reference", "version"),
    )


STAGES = (
    Stage(STAGE, output="dit", inputs={}, settings=_settings, body=_base_model, views=("vae", "raw", "latents")),
)
