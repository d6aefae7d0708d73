"""The curate stage: a table of raw videos -> scored, captioned clips in webdataset shards, with a manifest.

Two steps, matching the pipeline's fan-out:

1. :func:`curate_shard` (one per ``ParallelFor`` task) takes the rows of the input table
   (:mod:`components.curate.inputs`: JSONL, CSV or parquet, streamed) that hash to ``shard_index``; streams
   each video scene by scene (:mod:`components.curate.video_pass`: memory bounded by the longest clip, not
   the video), splits it at scene cuts found by PySceneDetect's detector classes (flashes and fades are no
   cuts), cuts scenes into clips of ``clip_min_frames``..``clip_max_frames``, scores every clip with every
   classical filter (:mod:`components.curate.filters`, pixels only) and, on the clips those keep, the model
   scorers the config asks for (:mod:`components.curate.models`), captions it (:func:`caption_clip` or a
   VLM), removes near-duplicates within the shard (:mod:`components.curate.dedup`) and writes the clips it
   keeps as H.264 mp4 into ``shards/clips-{shard:03d}-{n:04d}.tar`` plus ``manifest-{shard:03d}.jsonl``
   (every clip, kept or not, every score, its drop reasons; every row that gave no clip -- a line that is
   not JSON, a duplicate URI, a missing, empty, garbage, truncated or too short file, an image, audio
   only, an unknown codec -- as one record with its one-line reason: nothing vanishes).
2. :func:`merge_manifests` (one task after ``dsl.Collected``) applies the cross-shard steps: near-duplicate
   removal across shards (a faiss index), the per-concept cap and the per-cluster cap (k-means), and writes
   ``manifest.jsonl``/``manifest.parquet``, ``kept.jsonl``, ``report.html`` and ``summary.json``.

**Shards are immutable once written.** The cross-shard steps only drop clips that a shard already wrote,
so instead of rewriting tar files the merge publishes the final selection as ``kept.jsonl`` (clip id,
shard file, caption): *that file is the training index*, and readers skip shard samples whose key is not in
it (:func:`kept_filter` gives the predicate for ``webdataset``'s ``select``). Re-running the merge never
touches a shard, so a reader that already opened a shard is never surprised.

Idempotent, atomic and resumable: a shard's kept clips are spooled and its tars written into a hidden
work folder (``shards/.work-{shard:03d}``) and renamed into place, its manifest is written to a temporary
name and renamed, and a ``done-{shard:03d}.json`` marker (holding the summary and a fingerprint of the
config, the models and the shard's rows) is written last. Re-running a shard whose marker matches does no
work; a crashed or killed run leaves no tar or manifest where a reader would look, and its rerun takes the
videos that run finished from the work folder (:mod:`components.curate.resume`), curates the rest, and
writes what one clean run writes.
Everything is deterministic, so a recomputed shard has the same manifest and the same tar bytes: decoding
and colour conversion are bit-exact on every CPU, x264 runs with one thread (:mod:`t2v.video`), the
indexes are exact or trained with a fixed seed on one thread, and the tars are written with a fixed mtime
(:func:`t2v.shards.write_tar`) rather than the clock's.

Nothing here reads the world's planted ``defects``; :mod:`components.curate.report` uses them only to
measure each filter's precision and recall.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from components.curate import dedup, filters, merge, report
from components.curate.resume import FROM_EARLIER_RUN, UNAVAILABLE, ShardWork
from components.curate.video_pass import (
    SceneStream,
    Timers,
    encode_clip,
    merge_transitions,
    spool,
    stream_video,
)
from components.curate.watchdog import VideoStalled, beat
from components.curate.workers import CrashJournal, curate_in_order
from t2v import storage
from t2v.config.curate import CurateConfig
from t2v.errors import StageError
from t2v.progress import Progress
from t2v.shards import write_tar
from t2v.video import VideoDecodeError, VideoReader, display_size, frame_rates, sample_pictures

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
# Bump when the stage's outputs change (invalidates done markers). 2: bit-exact decoding and encoding, and
# tars with a fixed mtime (the same inputs give other bytes and slightly other scores than in 1).
# 3: streaming decode on a constant-rate timeline, imagehash hashes, a faiss index, rejection records.
# 4: sources as cameras and broadcasters make them (display aspect, deinterlacing, full range, HDR tone
# mapping, damage and timestamp jumps), clips tagged with their matrix, black bars cropped when asked.
# 5: transparency composited over alpha_background (t2v.alpha).
STAGE_VERSION = "5"


# ---------------------------------------------------------------------------------------------- captions
def caption_clip(video: dict[str, Any], start: int, end: int, frames: np.ndarray | None = None) -> dict[str, Any]:
    """The embedded default captioner: the caption of the world scene that overlaps the clip most, and
    the raw video's title as the "original title" caption.

    A real captioning model (dense + short captions from the clip's frames) replaces this function through
    :func:`get_captioner`; it must return the same keys: ``caption``, ``title``, ``spec`` (structured
    description, may be empty) and ``scene_id`` (may be None).
    """
    best, best_overlap = None, 0
    for scene in video.get("scenes") or []:
        overlap = min(end, int(scene["end_frame"])) - max(start, int(scene["start_frame"]))
        if overlap > best_overlap:
            best, best_overlap = scene, overlap
    title = str(video.get("title") or "")
    if best is None:
        return {"caption": title, "title": title, "spec": {}, "scene_id": None}
    return {
        "caption": str(best.get("caption") or title),
        "title": title,
        "spec": best.get("spec") or {},
        "scene_id": best.get("scene_id"),
    }


Captioner = Callable[[dict[str, Any], int, int], dict[str, Any]]
_CAPTIONERS: dict[str, Captioner] = {"world-metadata": caption_clip}


def get_captioner(name: str = "world-metadata") -> Captioner:
    """Look up a captioner by name (register a model-based one in ``_CAPTIONERS``)."""
    try:
        return _CAPTIONERS[name]
    except KeyError:
        raise ValueError(f"unknown captioner {name!r} (known: {', '.join(sorted(_CAPTIONERS))})") from None


_CONCEPT_KEYS = ("concept", "object", "shape", "category", "subject")
_STOPWORDS = frozenset("a an the of on in at to with and is are over under across from into".split())


def caption_concept(caption: str, spec: dict[str, Any] | None = None) -> str:
    """The concept a clip is balanced under: the structured subject when the captioner gives one (the
    world's ``spec['objects']`` -> "red square", or ``spec['concept'|'object'|'shape'|...]``), else the
    caption's first two content words."""
    objects = (spec or {}).get("objects")
    if isinstance(objects, list) and objects and all(isinstance(o, dict) for o in objects):
        names = sorted(" ".join(str(o[k]) for k in ("colour", "shape") if o.get(k)) for o in objects)
        if all(names):
            return " + ".join(names)
    for key in _CONCEPT_KEYS:
        value = (spec or {}).get(key)
        if isinstance(value, str) and value:
            return value.lower()
        if isinstance(value, dict):
            for sub in _CONCEPT_KEYS:
                if isinstance(value.get(sub), str) and value[sub]:
                    return value[sub].lower()
    words = [w.strip(".,;:!?\"'").lower() for w in caption.split()]
    words = [w for w in words if w and w not in _STOPWORDS]
    return " ".join(words[:2]) or "unknown"


# ------------------------------------------------------------------------------------------------ scenes
def detect_scenes(
    frames: np.ndarray, fps: float, cfg: CurateConfig, with_transitions: bool = False
) -> list[int] | tuple[list[int], list[tuple[int, int]]]:
    """Frame indices where a new scene starts (excluding 0), found by PySceneDetect's
    ``ContentDetector``/``AdaptiveDetector`` fed with the decoded frames (BGR, at analysis size) through
    :class:`components.curate.video_pass.SceneStream` (which also reports cuts that stand out inside a
    run of large changes), less those that a flash or a fade explains
    (:func:`components.curate.filters.confirm_cuts`), with the two ends of each gradual transition
    (:func:`components.curate.video_pass.merge_transitions`). ``with_transitions``: also the
    transitions, ``(first, end)`` spans of mixed frames (scenes of their own, which give no clip)."""
    scenes = SceneStream(cfg, fps)
    small = filters.resize_frames(frames, cfg.analysis_size)
    cuts: list[int] = []
    for frame in small:
        cuts.extend(scenes.push(frame))
    cuts.extend(scenes.finish())
    spans = scenes.take_transitions()
    found = merge_transitions(sorted({c for c in cuts if 0 < c < len(frames)}), spans, cfg.scene_min_len)
    ends = {x for span in spans for x in span}
    confirmed = filters.confirm_cuts([c for c in found if c not in ends], lambda i: small[i], len(small), cfg.scene_confirm_min_diff)
    out = sorted(set(confirmed) | {c for c in ends if 0 < c < len(frames)})
    return (out, spans) if with_transitions else out


def split_clips(
    num_frames: int, cuts: list[int], cfg: CurateConfig, with_short: bool = False,
    transitions: list[tuple[int, int]] = (),
) -> list[tuple[int, int, int]] | list[tuple[int, int, int, bool]]:
    """(scene index, start, end) of each clip: scenes are trimmed by ``scene_trim_frames`` at both ends
    and cut into consecutive clips of ``clip_max_frames``; a remainder shorter than ``clip_min_frames``
    is dropped. With ``with_short``, the dropped remainders are listed too, each tuple ending with
    ``is_clip``. A scene that is one of ``transitions`` (``(first, end)``) gives nothing."""
    bounds = [0, *cuts, num_frames]
    mixed = {tuple(span) for span in transitions}
    out: list = []
    for scene_index, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if (s, e) in mixed:
            continue
        s, e = s + cfg.scene_trim_frames, e - cfg.scene_trim_frames
        while e - s >= cfg.clip_min_frames:
            n = min(cfg.clip_max_frames, e - s)
            out.append((scene_index, s, s + n, True) if with_short else (scene_index, s, s + n))
            s += n
        if with_short and e > s:
            out.append((scene_index, s, e, False))
    return out


def resize_output(frames: np.ndarray, cfg: CurateConfig) -> np.ndarray:
    """Resize (area) and centre-crop to ``output_height`` x ``output_width``; 0 keeps the source."""
    if not cfg.output_height:
        return frames
    th, tw = cfg.output_height, cfg.output_width
    _, h, w, _ = frames.shape
    if (h, w) == (th, tw):
        return frames
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    y0, x0 = (nh - th) // 2, (nw - tw) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack(
        [cv2.resize(f, (nw, nh), interpolation=interp)[y0 : y0 + th, x0 : x0 + tw] for f in frames]
    )


# --------------------------------------------------------------------------------------------- utilities
def read_metadata(raw_dir: Path | str, table: str = "metadata.jsonl") -> list[dict[str, Any]]:
    """The good rows of the input table (bad lines are skipped here; the shards record them)."""
    from components.curate import inputs

    return [{**r.meta, "video_id": r.video_id} for r in inputs.iter_rows(inputs.resolve_table(raw_dir, table)) if r.error is None]


def _jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


# Settings that change how fast a shard is curated, not what it writes, and the merge's own: left out of
# its fingerprint.
_HOW_NOT_WHAT = {"video_workers", "decode_threads", "dedup_against", "retry_unavailable"}


def _fingerprint(cfg: CurateConfig, rows: list, shard: tuple[int, int], models: Any = None) -> str:
    h = hashlib.sha256()
    h.update(STAGE_VERSION.encode())
    h.update(cfg.model_dump_json(exclude=_HOW_NOT_WHAT).encode())
    h.update(json.dumps(shard).encode())
    if models is not None:
        h.update(json.dumps(models.describe(), sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps([r.index, r.video_id, r.uri, r.error, r.meta], sort_keys=True, default=str).encode())
        if r.uri and r.uri.startswith("file://"):
            p = storage.local_path(r.uri)
            st = p.stat() if p.exists() else None
            h.update(f"{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def clip_id_of(video_id: str, start: int, end: int) -> str:
    # webdataset splits keys at the first dot of a file name: no dots in ids.
    return f"{video_id}-{start:06d}-{end:06d}".replace(".", "_")


def find_duplicates(
    signatures: list[tuple[np.ndarray, ...] | None], cfg: CurateConfig
) -> list[tuple[int, float, float] | None]:
    """For each clip (in canonical order): (index of the first earlier clip it duplicates, hash distance,
    colour distance), or None (a faiss index: :func:`components.curate.dedup.find_duplicates`)."""
    return dedup.find_duplicates(signatures, cfg)


# ----------------------------------------------------------------------------------------------- a shard
def curate_shard(
    raw_dir: Path | str,
    out_dir: Path,
    cfg: CurateConfig,
    shard_index: int = 0,
    num_shards: int = 1,
    force: bool = False,
    captioner: str = "world-metadata",
    models: Any = None,
    journal: str | None = None,
    work_uri: str | None = None,
) -> dict[str, Any]:
    """Curate the rows of shard ``shard_index`` of ``num_shards`` of the input table (``raw_dir`` is the
    table itself, or the folder holding ``cfg.input_table``; a local path or a URI).

    ``journal`` (a local path or URI; default ``out_dir/attempts-{shard_index:03d}.json``) is where the run
    notes which videos are in flight (:class:`~components.curate.workers.CrashJournal`): it must outlive
    the process, so that a rerun after the process died knows on which videos it died. ``work_uri`` (a URI
    that outlives the task, like the journal's) mirrors the work in progress (each finished video's result
    and clips, :class:`~components.curate.resume.ShardWork`): a retried task whose ``out_dir`` is new
    resumes from it. ``cfg.video_workers``
    processes curate the videos side by side (:mod:`components.curate.workers`); the outputs are those of
    one.

    Writes ``out_dir/shards/clips-{shard_index:03d}-{n:04d}.tar`` (kept clips: ``mp4``, ``json``, ``txt``),
    ``out_dir/manifest-{shard_index:03d}.jsonl`` (one record per clip, per too-short remainder and per
    rejected row or video, each with its reasons), ``out_dir/scenes-{shard_index:03d}.jsonl`` (the detected
    cuts) and ``thumbs-{shard_index:03d}.jsonl`` (a small JPEG per clip, for the report), then
    ``done-{shard_index:03d}.json``. Returns the summary: videos, rejected (by reason), clips, kept, dropped
    (by reason), seconds per step.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    out_dir = Path(out_dir)
    caption = get_captioner(captioner)
    owned: list[Any] = []
    if models is None:
        from components.curate.models import ModelScorers

        models = ModelScorers.from_config(cfg)
        if models is not None:
            owned.append(models)
    if cfg.caption_model:
        from components.curate.models import VlmCaptioner

        caption = VlmCaptioner(cfg.caption_model, cfg)
        owned.append(caption)
    # Side by side (cfg.video_workers), each worker loads its own scorers from cfg: a scorer object given
    # here can only serve this process.
    workers = _video_workers(cfg) if models is None or models in owned else 1
    try:
        return _curate_shard(raw_dir, out_dir, cfg, shard_index, num_shards, force, caption, models, journal, workers,
                             work_uri)
    finally:
        for m in owned:
            m.close()


def _video_workers(cfg: CurateConfig) -> int:
    """Processes curating a shard's videos: ``video_workers``, or with 0 one per CPU this task may use (its
    container's CPU limit, not the node's cores: :func:`t2v.cpus.usable_cpus`)."""
    from t2v.cpus import usable_cpus

    return int(cfg.video_workers) if cfg.video_workers else usable_cpus()


def _curate_shard(raw_dir, out_dir: Path, cfg: CurateConfig, shard_index: int, num_shards: int, force: bool,
                  caption, models, journal_uri: str | None = None, workers: int = 1,
                  work_uri: str | None = None) -> dict[str, Any]:
    from components.curate import inputs

    table = inputs.resolve_table(raw_dir, cfg.input_table)
    rows = inputs.shard_rows(table, shard_index, num_shards)
    tag = f"{shard_index:03d}"
    done_path = out_dir / f"done-{tag}.json"
    fingerprint = _fingerprint(cfg, rows, (shard_index, num_shards), models)
    if not force and done_path.exists():
        done = json.loads(done_path.read_text())
        unavailable = done.get("summary", {}).get("rejected_by_reason", {}).get(UNAVAILABLE, 0)
        if done.get("fingerprint") == fingerprint and not (unavailable and cfg.retry_unavailable):
            log.info("curate shard %s: already done (fingerprint %s), skipping", tag, fingerprint)
            return {**done["summary"], "skipped": True}
        if done.get("fingerprint") == fingerprint:
            log.info("curate shard %s: done, but %d video(s) were unavailable: trying them again", tag, unavailable)
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    done_path.unlink(missing_ok=True)
    storage.write_text(out_dir / "curate-config.json", cfg.model_dump_json(indent=1))
    shards_dir = out_dir / SHARDS_DIR
    for stale in shards_dir.glob(f".tmp-{tag}-*"):  # left by a killed run of an earlier version of the stage
        shutil.rmtree(stale, ignore_errors=True)
    # Each finished video's result, where the rerun of a killed task picks it up (components.curate.resume).
    work = ShardWork(shards_dir / f".work-{tag}", fingerprint, fresh=force, mirror=work_uri)
    tmp_dir, spool_dir = work.folder, work.spool
    finished = work.finished()
    if finished:
        log.info("curate shard %s: resuming: %d of %d videos were finished by an earlier run", tag, finished, len(rows))

    timers = Timers()
    records: list[dict[str, Any]] = []
    scene_records: list[dict[str, Any]] = []
    thumbs_tmp = tmp_dir / f"thumbs-{tag}.jsonl"  # written as the videos go (not held for the shard)
    thumbs = open(thumbs_tmp, "w")  # noqa: SIM115  (closed before the rename below)
    pending: list[tuple[dict[str, Any], Any]] = []  # kept-so-far clip records and their dedup signatures
    journal_uri = str(journal_uri or out_dir / f"attempts-{tag}.json")
    if force:  # a forced rerun gives every video its chance again
        storage.write_text(journal_uri, "{}")
    journal = CrashJournal(journal_uri, fingerprint, cfg.max_video_crashes)
    progress = Progress(f"curate shard {tag} videos", len(rows), every_s=5.0, logger=log)

    def ready(row) -> dict[str, Any] | None:
        if row.error is not None:
            return {"records": [_row_record(row, row.kind or "bad_metadata", row.error)]}
        return work.get(row.index)

    def give_up(row, kind: str, reason: str) -> dict[str, Any]:  # crashed, stalled
        log.warning("curate: %s (row %d) skipped: %s", row.video_id, row.index, reason)
        return {"records": [_row_record(row, kind, reason)]}

    if workers > 1:
        log.info("curate shard %s: %d videos, %d side by side", tag, len(rows), workers)
    results = curate_in_order(
        rows, ready, lambda row: _curate_video(row, cfg, caption, models, spool_dir, timers), journal, workers,
        (cfg.model_dump_json(), caption if not cfg.caption_model else None, _curate_video, str(spool_dir)), give_up,
        cfg.max_video_stall_s,
    )
    for row, result in results:  # in table order, however many curate them
        reused = bool(result.get(FROM_EARLIER_RUN))
        if not reused and row.error is None:
            work.put(row.index, result)
        records.extend(result["records"])
        if result.get("scenes") is not None:
            scene_records.append(result["scenes"])
        thumbs.write(_jsonl(result.get("thumbs", [])))
        pending.extend(result.get("pending", []))
        timers.add(result.get("seconds", {}))  # (a worker's step times)
        if reused:
            progress.skip()
        else:
            progress.step()

    unavailable = [r for r in records if r["drop_reasons"][:1] == [UNAVAILABLE]]
    if len(unavailable) > cfg.max_unavailable_fraction * len(rows):  # an outage, not a few dead links
        thumbs.close()
        raise StageError(
            f"curate shard {tag}: {len(unavailable)} of {len(rows)} videos unavailable, more than"
            f" max_unavailable_fraction ({cfg.max_unavailable_fraction:g}); the first: {unavailable[0]['error']}."
            " Their retry tries them again, the other videos are kept in the work in progress"
        )
    unavailable = len(unavailable)
    # Near-duplicates within the shard (the merge repeats this across shards).
    with timers.time("dedup"):
        dups = find_duplicates([sig for _, sig in pending], cfg)
    retry = bool(unavailable and cfg.retry_unavailable)  # the rerun that tries them takes the rest from here
    for (rec, _), match in zip(pending, dups, strict=True):
        if match is not None:
            if rec["keep"] and not retry:  # its spooled clip goes in no tar
                (spool_dir / f"{rec['clip_id']}.mp4").unlink(missing_ok=True)
            dedup.mark_duplicate(rec, pending[match[0]][0]["clip_id"], match)

    # Write the kept clips into the hidden work folder, then move the tars into place.
    kept_recs = [rec for rec, _ in pending if rec["keep"]]

    def sample(rec: dict[str, Any]) -> dict[str, Any]:
        path = spool_dir / f"{rec['clip_id']}.mp4"
        data = path.read_bytes()
        if not retry:  # in its tar now: the shard's disk holds each clip once, not spool and tars both
            path.unlink()
        meta = {
            "clip_id": rec["clip_id"],
            "video_id": rec["video_id"],
            "caption": rec["caption"],
            "title": rec["title"],
            "spec": rec["spec"],
            "fps": rec["fps"],
            "num_frames": int(rec["num_frames"]),
            "height": int(rec["height"]),
            "width": int(rec["width"]),
            "start_frame": rec["start_frame"],
            "end_frame": rec["end_frame"],
            "scores": rec["scores"],
        }
        for key in ("captions", "source", "license"):
            if rec.get(key):
                meta[key] = rec[key]
        return {
            "__key__": rec["clip_id"],
            "mp4": data,
            "json": json.dumps(meta, sort_keys=True).encode(),
            "txt": rec["caption"].encode(),
        }

    names: list[str] = []
    with timers.time("write"):
        for first in range(0, len(kept_recs), cfg.shard_max_clips):  # shard_max_clips clips per tar
            name = f"clips-{tag}-{first // cfg.shard_max_clips:04d}.tar"
            group = kept_recs[first : first + cfg.shard_max_clips]
            for rec in group:
                rec["shard"] = f"{SHARDS_DIR}/{name}"
            write_tar(tmp_dir / name, (sample(rec) for rec in group))
            names.append(name)
        for old in shards_dir.glob(f"clips-{tag}-*.tar"):  # a previous run's tars of this shard
            if old.name not in names:
                old.unlink()
        for name in names:
            os.replace(tmp_dir / name, shards_dir / name)
        thumbs.close()
        os.replace(thumbs_tmp, out_dir / f"thumbs-{tag}.jsonl")
        if retry:
            log.info("curate shard %s: %d video(s) unavailable; %s kept for the rerun that tries them again",
                     tag, unavailable, work.folder)
        work.remove(keep_local=retry)

    storage.write_text(out_dir / f"manifest-{tag}.jsonl", _jsonl(records))
    storage.write_text(out_dir / f"scenes-{tag}.jsonl", _jsonl(scene_records))
    summary = _summarize(records)
    summary.update(
        {
            "shard_index": shard_index,
            "num_shards": num_shards,
            "shards": [f"{SHARDS_DIR}/{n}" for n in names],
            "manifest": f"manifest-{tag}.jsonl",
            "raw_dir": table.rsplit("/", 1)[0],
            "table": table,
            "seconds": round(time.monotonic() - t0, 3),
            "step_seconds": {k: round(v, 3) for k, v in sorted(timers.seconds.items())},
        }
    )
    storage.write_text(done_path, json.dumps({"fingerprint": fingerprint, "summary": summary}, indent=1))
    if work.reused:
        log.info("curate shard %s: %d of %d videos taken from the earlier run's results", tag, work.reused, len(rows))
    log.info(
        "curate shard %s: %d videos (%d rejected), %d clips, %d kept in %.1fs",
        tag,
        summary["videos"],
        summary["rejected"],
        summary["clips"],
        summary["kept"],
        summary["seconds"],
    )
    return summary


def _row_record(row, reason: str, error: str) -> dict[str, Any]:
    """The one manifest record of a row that gave no clip: a bad row, an unreadable or too-short video."""
    return {
        "clip_id": f"{row.video_id}-{reason}".replace(".", "_"),
        "video_id": row.video_id,
        "video_index": row.index,
        "uri": row.uri,
        "start_frame": None,
        "end_frame": None,
        "keep": False,
        "drop_reasons": [reason],
        "error": " ".join(str(error).split())[:300],
        "caption": None,
        "title": row.meta.get("title"),
        "scores": {},
    }


@contextmanager
def _local_video(uri: str):
    """A local path for a video URI (an s3:// object or an http(s):// URL is downloaded to a temporary
    file, one at a time; each chunk is a heartbeat for the stall watchdog)."""
    if uri.startswith(("s3://", "http://", "https://")):
        try:
            with storage.local_file_for(uri, progress=lambda _: beat()) as path:
                yield Path(path)
        except storage.StorageError as exc:
            message = str(exc) if str(exc).startswith(uri) else f"{uri}: {exc}"
            raise VideoDecodeError(message, kind=exc.kind or "missing") from None
    else:
        yield storage.local_path(uri)


def _fps_out(reader: VideoReader, cfg: CurateConfig, row_meta: dict[str, Any]) -> int:
    """The clips' frame rate: ``output_fps``, else the source's: its average rate when the stream is
    constant-rate (the base rate, the rate all timestamps are on, is the average; or the pictures step
    evenly at the average rate where the base counts fields: MPEG-1's 25 fps on a 50 Hz clock), else
    (variable rate) its base rate capped at 60 fps, so the fastest part of the video keeps its frames."""
    if cfg.output_fps:
        return cfg.output_fps
    avg, base = frame_rates(reader._stream)  # (an implausible average, raw DV's 60000, reads as 0)
    if avg >= 1 and (not base or base <= 1.05 * avg or reader.steps_at_average_rate()):
        return max(1, round(avg))
    if base >= 1:
        return max(1, min(60, round(base)))
    return max(1, round(float(row_meta.get("fps") or 25)))


def _curate_video(row, cfg: CurateConfig, caption, models, spool_dir: Path, timers: Timers) -> dict[str, Any]:
    """Stream one video: its clip records (or its one rejection record), cuts, thumbnails and dedup
    signatures. A video that fails part-way (truncated) loses the clips it gave: one record says why
    (with ``keep_truncated``, a truncated one is curated up to where its pictures end)."""
    vid = row.video_id
    video = {**row.meta, "video_id": vid}
    records: list[dict[str, Any]] = []
    thumbs: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], Any]] = []
    spooled: list[Path] = []
    fps_box: dict[str, int] = {}
    reader_box: list = []  # the video's reader, once open (on_clip asks it where damage is)

    transitions: list[list[int]] = []

    def on_transition(scene_index: int, start: int, end: int) -> None:
        """The mixed frames of a dissolve between two shots: one record, no clip."""
        transitions.append([start, end])
        records.append(
            {**_where(scene_index, start, end), "keep": False, "drop_reasons": ["transition"], "caption": None,
             "title": video.get("title"), "scores": {}}
        )

    def _where(scene_index: int, start: int, end: int) -> dict[str, Any]:
        return {
            "clip_id": clip_id_of(vid, start, end),
            "video_id": vid,
            "video_index": row.index,
            "scene_index": scene_index,
            "start_frame": start,
            "end_frame": end,
            "num_frames": end - start,
        }

    def on_clip(scene_index: int, start: int, end: int, small, out, is_clip: bool) -> None:
        where = _where(scene_index, start, end)
        cid = where["clip_id"]
        damaged = reader_box and reader_box[0].damaged_between(start, end)
        if not is_clip or damaged:  # shorter than clip_min_frames, or pictures predicted from damage
            records.append(
                {**where, "keep": False, "drop_reasons": ["damaged" if damaged else "too_short"], "caption": None,
                 "title": video.get("title"), "scores": {}}
            )
            return
        scores = filters.score_clip(small, cfg, timers=timers.seconds)
        reasons = filters.decide(scores, cfg)
        scorers: dict[str, str] = {}
        if models is not None:
            with timers.time("models"):
                extra = models.score(small, out, video, reasons, timers=timers.seconds)
            scores.update(extra["scores"])
            reasons.extend(r for r in extra["reasons"] if r not in reasons)
            scorers = extra["scorers"]
        with timers.time("caption"):
            cap = caption(video, start, end, frames=out) if _takes_frames(caption) else caption(video, start, end)
        if models is not None and not reasons and models.has_alignment:
            with timers.time("models"):
                scores.update(models.align(out, cap["caption"], timers=timers.seconds))
            reasons.extend(r for r in models.align_reasons(scores) if r not in reasons)
        with timers.time("hashes"):
            sig = filters.clip_signature(small, cfg)
        with timers.time("thumbnails"):
            thumbs.append({"clip_id": cid, "jpeg": filters.thumbnail_jpeg(small)})
        rec = {
            **where,
            "fps": fps_box["fps"],
            "height": int(out.shape[1]),
            "width": int(out.shape[2]),
            "keep": not reasons,
            "drop_reasons": reasons,
            "caption": cap["caption"],
            "title": cap["title"],
            "captions": cap.get("captions") or {},
            "spec": cap["spec"],
            "scene_id": cap["scene_id"],
            "concept": caption_concept(cap["caption"], cap["spec"]),
            "scores": scores,
            "scorers": scorers,
            "source": row.meta.get("source"),
            "license": row.meta.get("license") or row.meta.get("licence"),
            **filters.signature_fields(sig),
            "duplicate_of": None,
            "shard": None,
        }
        records.append(rec)
        pending.append((rec, sig))
        if not reasons:
            with timers.time("encode"):
                data = encode_clip(out, fps_box["fps"], cfg)
            path = spool_dir / f"{cid}.mp4"
            spool(path, data)
            spooled.append(path)

    try:
        with _local_video(row.uri) as path, VideoReader(path, threads=cfg.decode_threads) as reader:
            reader_box.append(reader)
            pixels = reader.info.width * reader.info.height
            if pixels > cfg.max_source_pixels:
                raise VideoDecodeError(
                    f"{row.uri}: {reader.info.width}x{reader.info.height} pictures ({pixels / 1e6:.1f} MP) exceed "
                    f"max_source_pixels ({cfg.max_source_pixels / 1e6:.1f} MP)", kind="too_large",
                )
            shown = display_size(reader.info.width, reader.info.height, 0, reader.info.sample_aspect)
            if min(shown) < cfg.min_source_side:
                raise VideoDecodeError(
                    f"{row.uri}: pictures shown at {shown[0]}x{shown[1]}, a shorter side under min_source_side"
                    f" ({cfg.min_source_side} px)", kind="too_small",
                )
            declared = reader.info.duration_s
            if cfg.max_video_seconds and declared > cfg.max_video_seconds:
                raise VideoDecodeError(
                    f"{row.uri}: {_hours(declared)} declared, longer than max_video_seconds "
                    f"({_hours(cfg.max_video_seconds)})", kind="too_long",
                )
            if not video.get("title") and reader.info.title:  # the file's own title, where the table has none
                video["title"] = reader.info.title
            if not video.get("description") and reader.info.description:
                video["description"] = reader.info.description
            fps_box["fps"] = _fps_out(reader, cfg, row.meta)
            source = _source_fields(reader.info)
            bars = (0.0, 0.0, 0.0, 0.0)
            if cfg.crop_black_bars:
                with timers.time("borders"):
                    bars = _black_bars_throughout(path, cfg)
                source["black_bars"] = [round(x, 4) for x in bars]  # top, bottom, left, right: cropped
            source["truncated"] = ""  # or why the file ends early, where keep_truncated curated what it has

            def keep_truncated(exc: VideoDecodeError) -> bool:
                source["truncated"] = " ".join(str(exc).split())
                return cfg.keep_truncated

            num, cuts = stream_video(
                reader, cfg, fps_box["fps"], on_clip, timers, bars=bars,
                check=_stage_limits(reader, cfg, row.uri, fps_box["fps"]), keep_truncated=keep_truncated,
                on_transition=on_transition,
            )
            source["interlaced_frames"] = reader.interlaced_frames  # deinterlaced as decoded
            source["timestamp_jumps"] = reader.timestamp_jumps  # discontinuities bridged (MPEG-TS...)
            source["damaged_packets"] = reader.damaged_packets  # skipped, as FFmpeg skips them
            source["damaged_frames"] = reader.damaged_frames  # predicted from damage: their clips dropped
            # 360-degree projection and stereoscopic packing ("": flat 2D; kept where drop_* is off)
            source["projection"], source["stereo"] = reader.projection, reader.stereo
    except VideoStalled:  # interrupted (components.curate.watchdog): its caller records it
        for p in spooled:
            p.unlink(missing_ok=True)
        raise
    except VideoDecodeError as exc:
        for p in spooled:
            p.unlink(missing_ok=True)
        reason = " ".join(str(exc).split())
        log.warning("curate: %s (row %d) rejected: %s", vid, row.index, reason)
        return {"records": [_row_record(row, exc.kind, reason)]}
    except Exception as exc:  # a bug met on one video of millions: recorded (with its traceback logged)
        for p in spooled:
            p.unlink(missing_ok=True)
        log.exception("curate: %s (row %d) failed", vid, row.index)
        return {"records": [_row_record(row, "failed", f"{row.uri}: {type(exc).__name__}: {exc}")]}
    scenes = {"video_id": vid, "video_index": row.index, "num_frames": num, "cuts": sorted(cuts),
              "transitions": transitions, "source": source}
    if not records:
        seconds = num / fps_box["fps"]
        err = (
            f"{row.uri}: {num} frame(s) ({seconds:.2f} s at {fps_box['fps']} fps), shorter than a clip "
            f"({cfg.clip_min_frames} frames)"
        )
        return {"records": [_row_record(row, "too_short", err)], "scenes": scenes}
    return {"records": records, "scenes": scenes, "thumbs": thumbs, "pending": pending}


def _hours(seconds: float) -> str:
    """``1:02:03`` (h:mm:ss) for a duration, with its seconds: ``1:02:03 (3723 s)``."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d} ({seconds:.0f} s)"


def _stage_limits(reader, cfg: CurateConfig, uri: str, fps: int):
    """The per-frame check of :func:`stream_video` for one video: at its first frame, its layout (a
    360-degree projection, a stereoscopic packing: :func:`t2v.video.frame_layout`, which the reader
    reads off the first picture) against ``drop_spherical`` / ``drop_stereo_3d``; at every frame, its
    length against ``max_video_seconds`` (for a video whose header did not declare one)."""
    limit = round(cfg.max_video_seconds * fps) if cfg.max_video_seconds else 0

    def check(index: int) -> None:
        if index == 0:
            if cfg.drop_spherical and reader.projection:
                raise VideoDecodeError(
                    f"{uri}: a 360-degree/VR video ({reader.projection} projection metadata)", kind="spherical"
                )
            if cfg.drop_stereo_3d and reader.stereo:
                raise VideoDecodeError(
                    f"{uri}: a stereoscopic 3D video ({reader.stereo} frame packing metadata)", kind="stereo_3d"
                )
        if limit and index >= limit:
            declared = reader.info.duration_s
            said = f"the header declares {_hours(declared)}" if declared else "the header declares no duration"
            raise VideoDecodeError(
                f"{uri}: longer than max_video_seconds ({_hours(cfg.max_video_seconds)}): decoding passed it "
                f"({said})", kind="too_long",
            )

    return check


def _black_bars_throughout(path, cfg: CurateConfig) -> tuple[float, float, float, float]:
    """The black bars (shares of the shown picture) of pictures sampled across the video, to be cropped."""
    pictures = sample_pictures(path, background=cfg.alpha_background)
    same = [p for p in pictures if p.shape == pictures[0].shape]  # (a stream that changes size: the first's)
    if len(same) < 2:
        return (0.0, 0.0, 0.0, 0.0)
    return filters.black_bars(np.stack(same), cfg.border_max_level)


def _source_fields(info) -> dict[str, Any]:
    """What the scenes file records of a source video's stream: codec, pixel format, coded size, pixel
    aspect ratio, the size it is shown at before any rotation (non-square pixels made square), its
    transfer (``pq``/``hlg``: HDR, tone-mapped to SDR for the clips; ``sdr``) and whether its pictures
    can be transparent (``alpha``: shown over ``alpha_background`` in the clips)."""
    sar = info.sample_aspect
    width, height = display_size(info.width, info.height, 0, sar)
    return {
        "format": info.format, "codec": info.codec, "pix_fmt": info.pix_fmt, "bit_depth": info.bit_depth,
        "coded_width": info.width, "coded_height": info.height, "sample_aspect": f"{sar.numerator}:{sar.denominator}",
        "display_width": width, "display_height": height, "fps": round(float(info.fps), 3),
        "video_streams": info.video_streams, "audio_streams": info.audio_streams, "transfer": info.transfer,
        "alpha": info.alpha,
    }


def _takes_frames(fn) -> bool:
    import inspect

    try:
        return "frames" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False



def _summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    counts = merge.SummaryCounts()
    for r in records:
        counts.add(r)
    return counts.summary()


# ------------------------------------------------------------------------------------------------- merge
def merge_manifests(
    out_dir: Path,
    shard_summaries: list[dict] | None = None,
    cfg: CurateConfig | None = None,
    raw_dir: Path | None = None,
) -> dict[str, Any]:
    """Merge the shard manifests, remove near-duplicates across shards, cap concepts, and write
    ``manifest.jsonl``, ``manifest.parquet``, ``kept.jsonl`` (the training index), ``report.html`` and
    ``summary.json``. ``cfg`` defaults to the config the shards ran with (stored in their markers);
    ``raw_dir`` (for the planted-truth metrics) defaults to the one the shards read. The records are
    streamed, twice (:mod:`components.curate.merge`): memory grows with the clips' signatures, not
    their records."""
    t0 = time.monotonic()
    out_dir = Path(out_dir)
    manifests = sorted(out_dir.glob("manifest-[0-9][0-9][0-9].jsonl"))
    if not manifests:
        raise FileNotFoundError(f"{out_dir}: no manifest-NNN.jsonl (run curate_shard first)")
    done = [json.loads(p.read_text()) for p in sorted(out_dir.glob("done-[0-9][0-9][0-9].json"))]
    summaries = list(shard_summaries or []) or [d["summary"] for d in done]
    expected = {int(s["num_shards"]) for s in summaries if "num_shards" in s}
    if expected and len(manifests) != max(expected):
        raise RuntimeError(f"{out_dir}: {len(manifests)} shard manifests but the shards were {max(expected)}")
    if cfg is None:
        stored = out_dir / "curate-config.json"
        cfg = CurateConfig.model_validate_json(stored.read_text()) if stored.exists() else CurateConfig()
    merge.check_references(cfg.dedup_against)

    table = None
    if raw_dir is not None:
        from components.curate import inputs

        table = inputs.resolve_table(raw_dir, cfg.input_table)
        if not storage.exists(table):
            table = inputs.resolve_table(raw_dir)
    else:
        tables = {s.get("table") for s in summaries if s.get("table")}
        table = tables.pop() if len(tables) == 1 else None
    truth = _planted_truth(table)

    with merge.scratch_folder(out_dir) as scratch:
        # Pass 1: what the run-wide decisions need, per clip; near-duplicates across shards (clips marked
        # within their shard keep their mark; the others are compared, in canonical order, with every
        # earlier clip of any shard), the concept cap, the cluster cap.
        index, unordered = merge.build_index(manifests, cfg, Path(scratch))
        log.info("curate merge: %d clips indexed, %d near-duplicates across shards", len(index), len(index.duplicate_of))
        # Pass 2: every record again, the decisions applied, written out as it goes.
        counts, shown, shards = merge.SummaryCounts(), report.ReportData(), set()
        parquet = merge.ParquetRows(out_dir / "manifest.parquet", index.score_keys)
        evaluated: list[dict[str, Any]] = []
        with (
            storage.renamed_into_place(out_dir / "manifest.jsonl") as manifest_tmp,
            storage.renamed_into_place(out_dir / "kept.jsonl") as kept_tmp,
            open(manifest_tmp, "w") as manifest_out,
            open(kept_tmp, "w") as kept_out,
        ):
            n = 0
            for r in merge.ordered_records(manifests, unordered):
                if merge.is_clip(r):
                    index.apply(n, r)
                    n += 1
                    if r["shard"]:
                        shards.add(r["shard"])
                    if r["keep"]:
                        kept_out.write(json.dumps({"clip_id": r["clip_id"], "shard": r["shard"], "caption": r["caption"],
                                                   "title": r["title"]}, sort_keys=True) + "\n")
                manifest_out.write(json.dumps(r, sort_keys=True) + "\n")
                counts.add(r)
                shown.add(r)
                parquet.add(r)
                if truth is not None:
                    evaluated.append({k: r.get(k) for k in ("video_id", "start_frame", "end_frame", "drop_reasons", "caption")})
        parquet.close()

    scenes_files = sorted(out_dir.glob("scenes-[0-9][0-9][0-9].jsonl"))
    evaluation = None
    if truth is not None:
        scenes = [s for p in scenes_files for s in merge.read_jsonl(p)]
        evaluation = report.evaluate(evaluated, scenes, truth)

    summary = counts.summary()
    summary.update(
        {
            "num_shards": len(manifests),
            "shards": sorted(shards),
            "shard_seconds": round(sum(float(s.get("seconds", 0.0)) for s in summaries), 3),
            "evaluation": evaluation,
            "balance": index.balance,
            "step_seconds": _sum_steps(summaries),
        }
    )
    wanted = shown.example_ids()  # only the thumbnails the report shows are read
    thumbs: dict[str, str] = {}
    for p in sorted(out_dir.glob("thumbs-[0-9][0-9][0-9].jsonl")):
        with open(p) as handle:
            for line in handle:
                if line.strip() and json.loads(line)["clip_id"] in wanted:
                    item = json.loads(line)
                    thumbs[item["clip_id"]] = item["jpeg"]
    report.write_report(out_dir / "report.html", shown, summary, cfg, thumbs=thumbs)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    storage.write_text(out_dir / "summary.json", json.dumps(summary, indent=1, sort_keys=True))
    log.info(
        "curate merge: %d clips from %d videos, %d kept (%s)",
        summary["clips"],
        summary["videos"],
        summary["kept"],
        summary["dropped_by_reason"],
    )
    return summary


def _planted_truth(table: str | None) -> list[dict[str, Any]] | None:
    """The world's rows with their planted scenes when the table is a generated world's (every row has
    ``scenes``), else None; a real table is known from its first row, not read whole."""
    from components.curate import inputs

    if table is None or not storage.exists(table):
        return None
    rows = []
    for r in inputs.iter_rows(table):
        if r.error is not None:
            continue
        if "scenes" not in r.meta:
            return None
        rows.append({**r.meta, "video_id": r.video_id})
    return rows or None


def _sum_steps(summaries: list[dict[str, Any]]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for s in summaries:
        for k, v in (s.get("step_seconds") or {}).items():
            total[k] += float(v)
    return {k: round(v, 3) for k, v in sorted(total.items())}


def kept_filter(out_dir: Path) -> Callable[[dict[str, Any]], bool]:
    """Predicate for ``webdataset.WebDataset(...).select(...)``: True for samples in ``kept.jsonl``."""
    keep = {
        json.loads(line)["clip_id"]
        for line in (Path(out_dir) / "kept.jsonl").read_text().splitlines()
        if line.strip()
    }
    return lambda sample: sample.get("__key__") in keep
