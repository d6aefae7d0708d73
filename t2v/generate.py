"""Text in, video out: sample with a DiT checkpoint, decode with its VAE (``t2v generate`` and evaluate).

A checkpoint is named by a storage URI (``file://``, ``s3://``, a path) or by the model registry:
``models:/<name>@<alias>`` or ``models:/<name>/<version>``; a registered DiT version names its VAE and text
encoders in its lineage tags, so ``t2v generate --model models:/step-video-t2v-dit@champion "..."`` is
enough.
"""

from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from t2v import checkpoints, storage
from t2v.config import TextEncoderConfig
from t2v.errors import StageError
from t2v.registry import TAG_CHECKPOINT, TAG_CLIP, TAG_LLM, TAG_VAE_MODEL
from t2v.shards import from_model_video


@dataclass
class ResolvedModel:
    dit_uri: str
    vae_uri: str | None = None
    clip_uri: str | None = None
    llm_uri: str | None = None
    version: str | None = None  # "<name>/<version>" when the reference is a registered model version
    vae_version: str | None = None


def _parse(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` -> (name, alias, None); ``models:/name/version`` -> (name, None, version)."""
    body = ref[len("models:/") :]
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, alias, None
    name, _, version = body.rpartition("/")
    if not name or not version:
        raise ValueError(f"{ref}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, None, version


def _registry_version(client, ref: str):
    name, alias, version = _parse(ref)
    return (
        client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    )


#: the released model folder: sub folder -> a file that marks it present
RELEASED_PARTS = {
    "vae": "vae/vae_v2.safetensors",
    "clip": "hunyuan_clip/clip_text_encoder/config.json",
    "llm": "step_llm/config.json",
}


def with_released_parts(model: ResolvedModel) -> ResolvedModel:
    """Fill what ``model`` lacks from the DiT URI's sub folders when it is the released model folder
    (``transformer/`` beside ``vae/``, ``hunyuan_clip/`` and ``step_llm/``)."""
    found = {}
    for part, marker in RELEASED_PARTS.items():
        if getattr(model, f"{part}_uri") is None and storage.exists(storage.join(model.dit_uri, marker)):
            found[f"{part}_uri"] = storage.join(model.dit_uri, marker.split("/")[0])
    return dataclasses.replace(model, **found)


def resolve(ref: str, tracking_uri: str | None = None) -> ResolvedModel:
    """A DiT reference -> its checkpoint URI, plus the VAE and text encoders its registry tags name."""
    if not ref.startswith("models:/"):
        return ResolvedModel(dit_uri=ref)
    _parse(ref)
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    version = _registry_version(client, ref)
    tags = version.tags or {}
    if TAG_CHECKPOINT not in tags:
        raise ValueError(f"{ref}: the model version has no {TAG_CHECKPOINT} tag")
    vae_uri = None
    if tags.get(TAG_VAE_MODEL):
        vae = _registry_version(client, f"models:/{tags[TAG_VAE_MODEL]}")
        vae_uri = (vae.tags or {}).get(TAG_CHECKPOINT)
    return ResolvedModel(
        tags[TAG_CHECKPOINT], vae_uri, tags.get(TAG_CLIP), tags.get(TAG_LLM),
        version=f"{version.name}/{version.version}", vae_version=tags.get(TAG_VAE_MODEL) or None,
    )


def conditioning(encoders, prompts: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = encoders.encode(prompts)
    return {
        "clip_states": out.clip_states.float().cpu().numpy(),
        "clip_mask": out.clip_mask.cpu().numpy().astype(np.int64),
        "llm_states": out.llm_states.float().cpu().numpy(),
        "llm_mask": out.llm_mask.cpu().numpy().astype(np.int64),
    }


def open_text_encoders(cfg: TextEncoderConfig, clip_uri: str, llm_uri: str, stack: ExitStack):
    from t2v.text_encoders import TextEncoders

    clip_dir = stack.enter_context(storage.local_dir_for(clip_uri))
    llm_dir = stack.enter_context(storage.local_dir_for(llm_uri))
    return TextEncoders.from_pretrained(
        cfg.model_copy(update={"clip_path": str(clip_dir), "llm_path": str(llm_dir)})
    )


def text_encoders_of(manifest: dict[str, Any], cfg: TextEncoderConfig, stack: ExitStack):
    """Open the text encoders a stage manifest names (``text_encoders``: the prepare-data manifest and those
    after it carry them), downloading S3 folders for as long as ``stack`` is open."""
    uris = manifest.get("text_encoders") or {}
    if not uris.get("clip") or not uris.get("llm"):
        raise StageError(f"{manifest.get('manifest_uri', 'the manifest')} names no text encoders")
    return open_text_encoders(cfg, uris["clip"], uris["llm"], stack)


def sample_latents(
    dit,
    text: dict[str, Any],
    negative: dict[str, Any],
    latent_shape,
    num_steps: int,
    guidance_scale: float,
    shift: float,
    seed: int,
):
    """Sample clean latents [B, F, C, h, w] for every prompt in ``text`` (one batch, noise from ``seed``),
    contrasted with the ``negative`` prompt (classifier-free guidance; its arrays have a batch dimension
    of 1)."""
    import torch

    from model import flow_matching as fm

    count = text["llm_states"].shape[0]
    noise = torch.randn((count, *latent_shape), generator=torch.Generator().manual_seed(seed))

    def batch(source: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        for key in ("llm_states", "llm_mask", "clip_states", "clip_mask"):
            value = torch.as_tensor(np.asarray(source[key]))
            value = value.expand(count, *value.shape[1:]) if value.shape[0] == 1 else value
            out[key] = value.bool() if key.endswith("mask") else value.float()
        return out

    def denoiser(latents, timestep, cond):
        return dit(latents, timestep, **cond)

    with torch.no_grad():
        return fm.sample(
            denoiser,
            noise,
            cond=batch(text),
            uncond=batch(negative),
            num_steps=num_steps,
            guidance_scale=guidance_scale,
            shift=shift,
        )


def decode_videos(vae, latents) -> list[np.ndarray]:
    """uint8 videos [T, H, W, 3] from latents [B, F, C, h, w]."""
    import torch

    with torch.no_grad():
        videos = vae.decode(latents)
    return [from_model_video(v) for v in videos]


def sample_videos(
    dit,
    vae,
    text: dict[str, Any],
    negative: dict[str, Any],
    latent_shape,
    num_steps: int,
    guidance_scale: float,
    shift: float,
    seed: int,
) -> list[np.ndarray]:
    """:func:`sample_latents`, decoded: uint8 videos [T, H, W, 3]."""
    latents = sample_latents(dit, text, negative, latent_shape, num_steps, guidance_scale, shift, seed)
    return decode_videos(vae, latents)


def generate(
    prompts: list[str],
    model: ResolvedModel,
    text_cfg: TextEncoderConfig,
    height: int,
    width: int,
    num_frames: int,
    num_steps: int,
    guidance_scale: float,
    shift: float,
    seed: int,
    negative_prompt: str = "",
    attention_backend: str = "auto",
) -> list[np.ndarray]:
    """Videos for ``prompts`` from the checkpoints ``model`` names (everything loaded here); a released
    model folder as the DiT brings its own VAE and text encoders."""
    model = with_released_parts(model)
    missing = [
        flag
        for flag, value in (("--vae", model.vae_uri), ("--text-encoders", model.clip_uri and model.llm_uri))
        if not value
    ]
    if missing:
        raise ValueError(
            f"{model.dit_uri}: no VAE or text encoders known for this DiT; pass {' and '.join(missing)}"
        )
    dit = checkpoints.load_dit(model.dit_uri)
    dit.set_attention_backend(attention_backend)
    vae = checkpoints.load_vae(model.vae_uri)
    factor = vae.cfg.spatial_compression
    if height % factor or width % factor:
        raise ValueError(f"height and width must be multiples of the VAE's spatial compression ({factor})")
    latent_shape = (vae.cfg.latent_frames(num_frames), vae.cfg.z_channels, height // factor, width // factor)
    with ExitStack() as stack:
        encoders = open_text_encoders(text_cfg, model.clip_uri, model.llm_uri, stack)
        text = conditioning(encoders, prompts)
        negative = conditioning(encoders, [negative_prompt])
    return sample_videos(dit, vae, text, negative, latent_shape, num_steps, guidance_scale, shift, seed)
