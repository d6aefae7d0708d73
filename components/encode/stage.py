"""encode: precompute VAE latents and text embeddings once, so DiT training never runs the VAE or the
text encoders.

Every kept clip gives one latent sample: the clip's video latents (``encode.num_frames`` frames), the
latent of its first frame alone (the image data of T2I), and both encoders' states and masks for its
caption. The negative prompt's embedding (used for caption dropout and classifier-free guidance) is
stored beside the shards.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, storage
from t2v.errors import StageError
from t2v.generate import conditioning, text_encoders_of
from t2v.progress import Progress
from t2v.shards import (
    LATENT_INDEX,
    fit_clip,
    index_latent_shards,
    iter_clips,
    npy_bytes,
    to_model_video,
    write_shards,
)

log = logging.getLogger(__name__)
STAGE = "encode"


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return {"encode": ctx.config.section("encode"), "text_encoders": ctx.config.section("text_encoders")}


def _encode(run: StageRun, clips: dict[str, Any], vae: dict[str, Any], raw: dict[str, Any]) -> StageOutput:
    import mlflow
    import torch

    ctx = run.ctx
    cfg = ctx.config.encode
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    with ExitStack() as stack:
        autoencoder = checkpoints.load_vae(vae["checkpoint_uri"])
        encoders = text_encoders_of(raw, ctx.config.text_encoders, stack)
        clip_list = list(iter_clips(clips))
        if not clip_list:
            raise StageError("encode: the curated set has no kept clips")
        progress = Progress(STAGE, len(clip_list))
        start = time.monotonic()
        samples: list[dict[str, Any]] = []
        for begin in range(0, len(clip_list), cfg.batch_size):
            chunk = clip_list[begin : begin + cfg.batch_size]
            video = torch.stack([to_model_video(fit_clip(c.frames, cfg.num_frames, cfg.resolution)) for c in chunk])
            with torch.no_grad():
                video_latents = autoencoder.encode(video, sample=cfg.sample_posterior, generator=generator)
                image_latents = autoencoder.encode(video[:, :1], sample=cfg.sample_posterior, generator=generator)
            text = conditioning(encoders, [c.caption for c in chunk])
            for i, clip in enumerate(chunk):
                meta = {
                    "clip_id": clip.clip_id,
                    "caption": clip.caption,
                    "quality": float(clip.meta.get("quality", 1.0)),
                    "spec": clip.meta.get("spec"),
                }
                samples.append(
                    {
                        "__key__": clip.clip_id.replace(".", "_"),
                        "video.npy": npy_bytes(video_latents[i].float().numpy()),
                        "image.npy": npy_bytes(image_latents[i].float().numpy()),
                        **{f"{k}.npy": npy_bytes(v[i]) for k, v in text.items()},
                        "json": json.dumps(meta).encode(),
                    }
                )
            progress.update(begin + len(chunk))
        seconds = time.monotonic() - start
        negative = conditioning(encoders, [ctx.config.evaluate.negative_prompt])
    with tempfile.TemporaryDirectory(prefix="t2v-encode-") as tmp_name:
        tmp = Path(tmp_name)
        shard_paths = write_shards(samples, tmp / "shards", "latents", cfg.shard_size)
        buffer = io.BytesIO()
        np.savez(buffer, **{k: v[0] for k, v in negative.items()})
        (tmp / "negative.npz").write_bytes(buffer.getvalue())
        index = index_latent_shards(shard_paths)  # lets the trainer read any sample by a ranged read
        (tmp / LATENT_INDEX).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in index))
        names = [str(p.relative_to(tmp)) for p in shard_paths] + ["negative.npz", LATENT_INDEX]
        files = storage.upload_files(tmp, names, run.uri)
    summary = {
        "samples": len(samples),
        "shards": len(shard_paths),
        "clips_per_s": len(samples) / seconds if seconds > 0 else 0.0,
        "video_latent_shape": list(video_latents.shape[1:]),
        "image_latent_shape": list(image_latents.shape[1:]),
    }
    mlflow.log_metrics({"encode/samples": len(samples), "encode/clips_per_s": summary["clips_per_s"]})
    log.info("encode: %d samples in %.1fs, video latents %s", len(samples), seconds, summary["video_latent_shape"])
    return StageOutput(
        files=files,
        summary=summary,
        extra={
            "negative_uri": storage.join(run.uri, "negative.npz"),
            "index_uri": storage.join(run.uri, LATENT_INDEX),
            "text_encoders": raw.get("text_encoders"),
            "vae_checkpoint_uri": vae["checkpoint_uri"],
        },
        mirror=("samples",),
    )


STAGES = (
    Stage(
        STAGE,
        output="latents",
        inputs={"clips": "clips", "vae": "vae", "raw": "raw"},
        settings=_settings,
        body=_encode,
    ),
)
