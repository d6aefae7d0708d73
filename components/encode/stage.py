"""encode: precompute VAE latents and text embeddings once, so DiT training never runs the VAE or the
text encoders.

Every kept clip gives one latent sample: the clip's video latents, the latent of its first frame alone
(the image data of T2I), and both encoders' states and masks for its caption. The negative prompt's
embedding (used for caption dropout and classifier-free guidance) is stored beside the shards.

Buckets. With ``encode.buckets`` (pixel shapes ``FRAMESxHEIGHTxWIDTH``) each clip goes to the bucket of
nearest aspect ratio among those it has the frames for (:func:`t2v.shards.assign_bucket`; a clip
shorter than every bucket goes to the shortest ones and its last frame is repeated), and is center-cropped
to that aspect and resized (:func:`t2v.shards.fit_clip`). The VAE sees batches of one bucket only. The
trainer buckets samples by their latent grid, read from the shard index, so these shapes are its buckets
(``<stage>.batch_size_per_bucket`` uses the same pixel names). Without buckets every clip is resized,
uncropped, to ``encode.num_frames x encode.resolution``, as before. Each sample's json names its
``bucket``.

Data-parallel workers. The kept clips' ids, sorted, are split by position: worker ``k`` of ``N``
(``encode.workers``) takes clips ``k, k + N, ...``. :func:`encode_worker` runs one worker: it loads the
VAE and the text encoders itself, reads every clip shard but decodes only its own clips, writes its own
shards (``shards/latents-w{k:03d}-NNNNN.tar``, names no other worker uses), indexes them and returns a plain
JSON-able result. The stage then merges the results -- the shard lists and index records, sorted, so
nothing depends on which worker finished first -- and writes ``latents.index.jsonl`` and
``negative.npz`` once. Locally the workers are processes (a spawn ``ProcessPoolExecutor``); with one
worker it runs in this process. A worker that fails fails the stage, naming the worker and its error,
once every worker has stopped. A clip that cannot be decoded does not: it is recorded in the summary's
``skipped`` with its reason (as curate records an unreadable video), and the rest are encoded.

A clip's latents do not depend on the number of workers or on the batch it shares, up to float
rounding: its posterior sample comes from a generator seeded by ``(encode.seed, its clip id)``
(:func:`clip_seed`). The last bits can differ, since oneDNN's (and cuDNN's) convolutions round by batch
size; turning oneDNN off makes them bitwise equal, at about 4x the CPU encode time, so it stays on.
Worker ``k`` runs the VAE on GPU ``k`` modulo the pod's GPUs when it has any (the posterior's noise is
still drawn on the CPU, so a GPU encode samples the same noise); the text encoders stay on the CPU.

On a cluster the fan-out maps one worker to one pod: pod ``k`` calls :func:`encode_worker` with the same
plain arguments (config JSON, the clips manifest, URIs, ``worker=k``) and writes its result beside its
shards; a final merge step, like curate's, reads the results and calls :func:`t2v.shards.write_index_and_negative`.
What is not built: there is no Kubernetes Job (or KFP ParallelFor) for encode yet; the encode component
runs every worker inside its one task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from components.framework.skeleton import Stage, StageOutput, StageRun
from t2v import checkpoints, storage
from t2v.config import ProjectConfig
from t2v.errors import StageError, UserError
from t2v.generate import conditioning, open_text_encoders
from t2v.progress import Progress
from t2v.shards import (
    LATENT_INDEX,
    assign_bucket,
    bucket_name,
    fit_clip,
    index_latent_shards,
    iter_clip_records,
    list_clip_ids,
    npy_bytes,
    to_model_video,
    write_index_and_negative,
    write_shards,
)

log = logging.getLogger(__name__)
STAGE = "encode"


def _settings(ctx, **_inputs) -> dict[str, Any]:
    return {"encode": ctx.config.section("encode"), "text_encoders": ctx.config.section("text_encoders")}


def clip_seed(seed: int, clip_id: str) -> int:
    """The seed of a clip's posterior sample: a stable hash of ``(seed, clip_id)`` (63 bits)."""
    digest = hashlib.sha256(f"{seed}\0{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard_prefix(worker: int) -> str:
    """The name prefix of worker ``worker``'s shards: no two workers write the same shard name."""
    return f"latents-w{worker:03d}"


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _worker_device(worker: int):
    """Worker k's device: GPU k modulo the GPUs this pod has, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", worker % torch.cuda.device_count())
    return torch.device("cpu")


def encode_worker(
    *,
    config_json: str,
    clips_manifest_json: str,
    vae_checkpoint_uri: str,
    clip_encoder_uri: str,
    llm_encoder_uri: str,
    out_uri: str,
    worker: int,
    workers: int,
) -> dict[str, Any]:
    """Encode worker ``worker`` of ``workers``'s share of the kept clips into ``out_uri/shards/``.

    Takes plain arguments only (what a cluster pod gets). Returns a JSON-able result: ``files`` (the
    manifest entries of its shards), ``index`` (their :func:`~t2v.shards.index_latent_shards` records),
    ``clips`` (its share), ``samples``, ``buckets`` (samples per bucket name), ``video_latent_shapes`` and
    ``image_latent_shapes`` (per bucket name), ``padded`` (clips shorter than their bucket), ``skipped``
    (``{clip_id, worker, reason}`` of clips that could not be decoded) and ``seconds``."""
    import torch

    from t2v.video import VideoDecodeError, read_video

    if not 0 <= worker < workers:
        raise ValueError(f"worker must be in [0, {workers}), got {worker}")
    config = ProjectConfig.from_json(config_json)
    cfg = config.encode
    clips_manifest = json.loads(clips_manifest_json)
    buckets = cfg.shapes()
    crop = bool(cfg.buckets)  # the legacy single shape is a plain resize, as before buckets
    name = f"encode worker {worker}/{workers}"
    start = time.monotonic()
    mine = set(list_clip_ids(clips_manifest)[worker::workers])
    counts: Counter[str] = Counter()
    video_shapes: dict[str, list[int]] = {}
    image_shapes: dict[str, list[int]] = {}
    skipped: list[dict[str, Any]] = []
    padded = 0

    with ExitStack() as stack:
        device = _worker_device(worker)
        autoencoder = checkpoints.load_vae(vae_checkpoint_uri, device=str(device))
        encoders = open_text_encoders(config.text_encoders, clip_encoder_uri, llm_encoder_uri, stack)
        progress = Progress(name, len(mine), logger=log)  # rate and ETA of the encoding, models loaded

        def encode_batch(bucket: tuple[int, int, int], batch: list[tuple[str, dict[str, Any], np.ndarray]]):
            video = torch.stack([to_model_video(frames) for _, _, frames in batch]).to(device)
            generators = [torch.Generator().manual_seed(clip_seed(cfg.seed, clip_id)) for clip_id, _, _ in batch]
            with torch.no_grad():
                video_latents = autoencoder.encode(video, sample=cfg.sample_posterior, generator=generators)
                image_latents = autoencoder.encode(video[:, :1], sample=cfg.sample_posterior, generator=generators)
            text = conditioning(encoders, [meta.get("caption", "") for _, meta, _ in batch])
            key = bucket_name(bucket)
            video_shapes[key], image_shapes[key] = list(video_latents.shape[1:]), list(image_latents.shape[1:])
            counts[key] += len(batch)
            for i, (clip_id, meta, _) in enumerate(batch):
                sample_meta = {
                    "clip_id": clip_id,
                    "caption": meta.get("caption", ""),
                    "quality": float(meta.get("quality", 1.0)),
                    "spec": meta.get("spec"),
                    "bucket": key,
                }
                yield {
                    "__key__": clip_id.replace(".", "_"),
                    "video.npy": npy_bytes(video_latents[i].float().cpu().numpy()),
                    "image.npy": npy_bytes(image_latents[i].float().cpu().numpy()),
                    **{f"{k}.npy": npy_bytes(v[i]) for k, v in text.items()},
                    "json": json.dumps(sample_meta).encode(),
                }
            progress.step(len(batch))

        def samples():
            nonlocal padded
            pending: dict[tuple[int, int, int], list[tuple[str, dict[str, Any], np.ndarray]]] = {}
            for clip_id, meta, mp4 in iter_clip_records(clips_manifest, select=mine.__contains__):
                try:
                    frames, _fps = read_video(mp4)
                except VideoDecodeError as exc:
                    reason = " ".join(str(exc).split())
                    log.warning("%s: clip %s skipped: %s", name, clip_id, reason)
                    skipped.append({"clip_id": clip_id, "worker": worker, "reason": reason})
                    progress.step()
                    continue
                bucket = assign_bucket(len(frames), frames.shape[1], frames.shape[2], buckets)
                padded += len(frames) < bucket[0]
                pending.setdefault(bucket, []).append((clip_id, meta, fit_clip(frames, bucket[0], bucket[1:], crop=crop)))
                if len(pending[bucket]) == cfg.batch_size:
                    yield from encode_batch(bucket, pending.pop(bucket))
            for bucket in sorted(pending):  # the part-filled batches, in a fixed order
                yield from encode_batch(bucket, pending[bucket])

        with tempfile.TemporaryDirectory(prefix=f"t2v-encode-w{worker:03d}-") as tmp_name:
            tmp = Path(tmp_name)
            paths = write_shards(samples(), tmp / "shards", shard_prefix(worker), cfg.shard_size)
            index = index_latent_shards(paths)
            used = {r["shard"] for r in index}
            for path in paths:  # a worker with no samples leaves an empty shard behind: not published
                if path.name not in used:
                    path.unlink()
            names = [f"shards/{p.name}" for p in paths if p.name in used]
            files = storage.upload_files(tmp, names, out_uri)
    seconds = time.monotonic() - start
    log.info("%s: %d samples, %d skipped in %.1fs %s", name, sum(counts.values()), len(skipped), seconds, dict(counts))
    return {
        "worker": worker,
        "workers": workers,
        "files": files,
        "index": index,
        "clips": len(mine),
        "samples": sum(counts.values()),
        "buckets": dict(sorted(counts.items())),
        "video_latent_shapes": video_shapes,
        "image_latent_shapes": image_shapes,
        "padded": padded,
        "skipped": skipped,
        "seconds": seconds,
    }


def _start_worker_process(workers: int) -> None:
    """Each pool process: log as the stage does, and share the CPUs with the other workers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def run_workers(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run :func:`encode_worker` for each task (its keyword arguments); results in worker order. One task
    runs in this process, more in a spawn process pool of that many processes. StageError naming every
    worker that failed, with its error."""
    if len(tasks) == 1:
        try:
            return [encode_worker(**tasks[0])]
        except Exception as exc:
            raise StageError(f"encode: worker 0 of 1 failed: {_one_line(exc)}") from exc
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    count = len(tasks)
    results: dict[int, dict[str, Any]] = {}
    failed: dict[int, BaseException] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context, initializer=_start_worker_process, initargs=(count,)) as pool:
        futures = {pool.submit(encode_worker, **task): task["worker"] for task in tasks}
        for future in as_completed(futures):
            worker = futures[future]
            exc = future.exception()
            if exc is None:
                results[worker] = future.result()
            else:  # logged at once; the stage fails when the others have stopped
                trace = None if isinstance(exc, UserError) else exc  # a bug keeps its traceback
                log.error("encode: worker %d of %d failed: %s", worker, count, _one_line(exc), exc_info=trace)
                failed[worker] = exc
    if failed:
        message = "; ".join(f"worker {w} of {count} failed: {_one_line(failed[w])}" for w in sorted(failed))
        raise StageError(f"encode: {message}") from failed[min(failed)]
    return [results[w] for w in sorted(results)]


def merge_results(results: list[dict[str, Any]], shapes: list[tuple[int, int, int]]) -> dict[str, Any]:
    """The workers' results as one: shard entries and index records sorted by shard name and offset,
    samples per bucket (every bucket, 0 included), the skipped clips sorted by id."""
    files: dict[str, Any] = {}
    index: list[dict[str, Any]] = []
    counts = Counter({bucket_name(b): 0 for b in shapes})
    video_shapes: dict[str, list[int]] = {}
    image_shapes: dict[str, list[int]] = {}
    for result in results:
        files.update(result["files"])
        index.extend(result["index"])
        counts.update(result["buckets"])
        video_shapes.update(result["video_latent_shapes"])
        image_shapes.update(result["image_latent_shapes"])
    return {
        "files": dict(sorted(files.items())),
        "index": sorted(index, key=lambda r: (r["shard"], r["start"])),
        "buckets": {bucket_name(b): counts[bucket_name(b)] for b in shapes},
        "video_latent_shapes": video_shapes,
        "image_latent_shapes": image_shapes,
        "samples": sum(r["samples"] for r in results),
        "padded": sum(r["padded"] for r in results),
        "skipped": sorted((s for r in results for s in r["skipped"]), key=lambda s: s["clip_id"]),
    }


def _encode(run: StageRun, clips: dict[str, Any], vae: dict[str, Any], raw: dict[str, Any]) -> StageOutput:
    import mlflow

    ctx = run.ctx
    cfg = ctx.config.encode
    uris = raw.get("text_encoders") or {}
    if not uris.get("clip") or not uris.get("llm"):
        raise StageError(f"{raw.get('manifest_uri', 'the raw manifest')} names no text encoders")
    clip_count = len(list_clip_ids(clips))
    if not clip_count:
        raise StageError("encode: the curated set has no kept clips")
    log.info("encode: %d clips, %d worker(s), buckets %s", clip_count, cfg.workers, [bucket_name(b) for b in cfg.shapes()])
    plain = {
        "config_json": ctx.config.to_json(),
        "clips_manifest_json": json.dumps(clips),
        "vae_checkpoint_uri": vae["checkpoint_uri"],
        "clip_encoder_uri": uris["clip"],
        "llm_encoder_uri": uris["llm"],
        "out_uri": run.uri,
        "workers": cfg.workers,
    }
    start = time.monotonic()
    results = run_workers([{**plain, "worker": k} for k in range(cfg.workers)])
    seconds = time.monotonic() - start
    merged = merge_results(results, cfg.shapes())
    if not merged["samples"]:
        first = merged["skipped"][0] if merged["skipped"] else {"clip_id": "-", "reason": "no clips"}
        raise StageError(
            f"encode: no clip could be encoded ({len(merged['skipped'])} skipped; {first['clip_id']}: {first['reason']})"
        )
    with ExitStack() as stack:
        encoders = open_text_encoders(ctx.config.text_encoders, uris["clip"], uris["llm"], stack)
        negative = conditioning(encoders, [ctx.config.evaluate.negative_prompt])
    negative_states = {k: v[0] for k, v in negative.items()}  # one prompt: no batch dimension
    files = {**merged["files"], **write_index_and_negative(merged["index"], negative_states, run.uri)}
    # the most common shape (ties: the first bucket listed): what evaluate samples at
    common = max(merged["video_latent_shapes"], key=lambda k: (merged["buckets"][k], -list(merged["buckets"]).index(k)))
    summary = {
        "samples": merged["samples"],
        "shards": sum(1 for name in files if name.startswith("shards/")),
        "workers": cfg.workers,
        "clips_per_s": merged["samples"] / seconds if seconds > 0 else 0.0,
        "buckets": merged["buckets"],
        "video_latent_shapes": merged["video_latent_shapes"],
        "video_latent_shape": merged["video_latent_shapes"][common],
        "image_latent_shape": merged["image_latent_shapes"][common],
        "padded_clips": merged["padded"],
        "skipped": merged["skipped"],
    }
    metrics = {
        "encode/samples": merged["samples"],
        "encode/clips_per_s": summary["clips_per_s"],
        "encode/skipped": len(merged["skipped"]),
        **{f"encode/bucket/{key}/samples": count for key, count in merged["buckets"].items()},
    }
    mlflow.log_metrics(metrics)
    log.info(
        "encode: %d samples (%d skipped) in %.1fs with %d worker(s), per bucket %s",
        merged["samples"], len(merged["skipped"]), seconds, cfg.workers, merged["buckets"],
    )
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
