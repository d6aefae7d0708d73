"""The curate stage: raw videos -> scored, captioned clips in webdataset shards, with a manifest.

Two steps, matching the pipeline's fan-out:

1. :func:`curate_shard` (one per ``ParallelFor`` task) takes the raw videos whose position in
   ``metadata.jsonl`` is ``shard_index`` modulo ``num_shards``; decodes each (a corrupt file becomes one
   manifest record with its one-line reason, and the stage goes on), splits it at scene cuts found by
   PySceneDetect's detector classes, cuts scenes into clips of ``clip_min_frames``..``clip_max_frames``,
   scores every clip with every filter (:mod:`components.curate.filters`, pixels only), captions it
   (:func:`caption_clip`), removes near-duplicates within the shard and writes the clips it keeps as H.264
   mp4 into ``shards/clips-{shard:03d}-{n:04d}.tar`` plus ``manifest-{shard:03d}.jsonl`` (every clip, kept
   or not, every score, its drop reasons).
2. :func:`merge_manifests` (one task after ``dsl.Collected``) applies the cross-shard steps: near-duplicate
   removal across shards and the per-concept cap, and writes ``manifest.jsonl``/``manifest.parquet``,
   ``kept.jsonl``, ``report.html`` and ``summary.json``.

**Shards are immutable once written.** The cross-shard steps only drop clips that a shard already wrote,
so instead of rewriting tar files the merge publishes the final selection as ``kept.jsonl`` (clip id,
shard file, caption): *that file is the training index*, and readers skip shard samples whose key is not in
it (:func:`kept_filter` gives the predicate for ``webdataset``'s ``select``). Re-running the merge never
touches a shard, so a reader that already opened a shard is never surprised.

Idempotent and atomic: a shard's tars are written into a hidden temporary folder and renamed into place,
its manifest is written to a temporary name and renamed, and a ``done-{shard:03d}.json`` marker (holding
the summary and a fingerprint of the config and the shard's inputs) is written last. Re-running a shard
whose marker matches does no work; a crashed run leaves no tar or manifest where a reader would look.
Everything is deterministic, so a recomputed shard has the same manifest and the same tar bytes: decoding
and encoding are bit-exact on every CPU and x264 runs with one thread (:mod:`t2v.video`), and the tars are
written with a fixed mtime (:func:`t2v.shards.write_tar`) rather than the clock's.

Nothing here reads the world's planted ``defects``; :mod:`components.curate.report` uses them only to
measure each filter's precision and recall.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from components.curate import filters
from t2v import storage
from t2v.config.curate import CurateConfig
from t2v.progress import Progress
from t2v.shards import write_tar
from t2v.video import VideoDecodeError, encode_mp4_bytes, read_video

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
# Bump when the stage's outputs change (invalidates done markers). 2: bit-exact decoding and encoding, and
# tars with a fixed mtime (the same inputs give other bytes and slightly other scores than in 1).
STAGE_VERSION = "2"


# ---------------------------------------------------------------------------------------------- captions
def caption_clip(video: dict[str, Any], start: int, end: int) -> dict[str, Any]:
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
def detect_scenes(frames: np.ndarray, fps: float, cfg: CurateConfig) -> list[int]:
    """Frame indices where a new scene starts (excluding 0), found by PySceneDetect's
    ``ContentDetector``/``AdaptiveDetector`` fed with the decoded frames (BGR, at analysis size)."""
    from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

    if cfg.scene_detector == "adaptive":
        detector = AdaptiveDetector(adaptive_threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
    else:
        detector = ContentDetector(threshold=cfg.scene_threshold, min_scene_len=cfg.scene_min_len)
    rate = float(fps) if fps and fps > 0 else 25.0
    small = filters.resize_frames(frames, cfg.analysis_size)
    cuts: list[int] = []
    for i, frame in enumerate(small):
        bgr = np.ascontiguousarray(frame[..., ::-1])
        cuts.extend(int(tc.frame_num) for tc in detector.process_frame(FrameTimecode(i, fps=rate), bgr))
    cuts.extend(int(tc.frame_num) for tc in detector.post_process(FrameTimecode(len(small) - 1, fps=rate)))
    return sorted({c for c in cuts if 0 < c < len(frames)})


def split_clips(
    num_frames: int, cuts: list[int], cfg: CurateConfig, with_short: bool = False
) -> list[tuple[int, int, int]] | list[tuple[int, int, int, bool]]:
    """(scene index, start, end) of each clip: scenes are trimmed by ``scene_trim_frames`` at both ends
    and cut into consecutive clips of ``clip_max_frames``; a remainder shorter than ``clip_min_frames``
    is dropped. With ``with_short``, the dropped remainders are listed too, each tuple ending with
    ``is_clip``."""
    bounds = [0, *cuts, num_frames]
    out: list = []
    for scene_index, (s, e) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
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
def read_metadata(raw_dir: Path) -> list[dict[str, Any]]:
    path = Path(raw_dir) / "metadata.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metadata.jsonl in the raw video folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _jsonl(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def _fingerprint(
    cfg: CurateConfig, videos: list[dict[str, Any]], raw_dir: Path, shard: tuple[int, int]
) -> str:
    h = hashlib.sha256()
    h.update(STAGE_VERSION.encode())
    h.update(cfg.model_dump_json().encode())
    h.update(json.dumps(shard).encode())
    for v in videos:
        h.update(json.dumps(v, sort_keys=True).encode())
        p = raw_dir / str(v.get("file") or f"{v['video_id']}.mp4")
        st = p.stat() if p.exists() else None
        h.update(f"{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
    return h.hexdigest()[:16]


def clip_id_of(video_id: str, start: int, end: int) -> str:
    # webdataset splits keys at the first dot of a file name: no dots in ids.
    return f"{video_id}-{start:06d}-{end:06d}".replace(".", "_")


def find_duplicates(
    signatures: list[tuple[np.ndarray, np.ndarray] | None], cfg: CurateConfig
) -> list[tuple[int, float, float] | None]:
    """For each clip (in canonical order): (index of the first earlier clip it duplicates, hash distance,
    colour distance), or None. A pair is a near-duplicate when the perceptual hashes are within
    ``dedup_max_hamming`` (the candidate test, which an LSH index over hash bands makes sub-quadratic at
    corpus scale) and the colour thumbnails within ``dedup_max_colour_distance`` (the confirmation).
    Pairwise here, vectorised per clip: fine for a shard or a modest corpus."""
    out: list[tuple[int, float, float] | None] = []
    seen_h: list[np.ndarray] = []
    seen_t: list[np.ndarray] = []
    seen_idx: list[int] = []
    for i, sig in enumerate(signatures):
        if sig is None:
            out.append(None)
            continue
        h, t = sig
        match = None
        if seen_h and all(x.shape == h.shape for x in seen_h[-1:]):
            stack = np.stack(seen_h)  # [N, K, bits]
            dh = (h[None, :, None, :] != stack[:, None, :, :]).sum(-1).min(-1).mean(-1)
            for j in np.flatnonzero(dh <= cfg.dedup_max_hamming):
                dt = filters.thumbnail_distance(t, seen_t[j])
                if dt <= cfg.dedup_max_colour_distance:
                    match = (seen_idx[j], round(float(dh[j]), 3), round(dt, 3))
                    break
        out.append(match)
        seen_h.append(h)
        seen_t.append(t)
        seen_idx.append(i)
    return out


def _signature(rec: dict[str, Any], bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not rec.get("phash") or not rec.get("thumbs"):
        return None
    return filters.hashes_from_hex(rec["phash"], bits), filters.thumbnails_from_hex(rec["thumbs"])


def _mark_duplicate(rec: dict[str, Any], of: dict[str, Any], match: tuple[int, float, float]) -> None:
    rec["duplicate_of"] = of["clip_id"]
    rec["scores"]["dup_hash_distance"] = match[1]
    rec["scores"]["dup_colour_distance"] = match[2]
    rec["drop_reasons"].append("duplicate")
    rec["keep"] = False


# ----------------------------------------------------------------------------------------------- a shard
def curate_shard(
    raw_dir: Path,
    out_dir: Path,
    cfg: CurateConfig,
    shard_index: int = 0,
    num_shards: int = 1,
    force: bool = False,
    captioner: str = "world-metadata",
) -> dict[str, Any]:
    """Curate the raw videos at positions ``shard_index`` mod ``num_shards`` of ``raw_dir/metadata.jsonl``.

    Writes ``out_dir/shards/clips-{shard_index:03d}-{n:04d}.tar`` (kept clips: ``mp4``, ``json``, ``txt``),
    ``out_dir/manifest-{shard_index:03d}.jsonl`` (one record per clip and per unreadable video) and
    ``out_dir/scenes-{shard_index:03d}.jsonl`` (the detected cuts), then ``done-{shard_index:03d}.json``.
    Returns the summary: videos, corrupt, clips, kept, dropped (by reason), seconds.
    """
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    caption = get_captioner(captioner)
    all_videos = read_metadata(raw_dir)
    videos = [(pos, v) for pos, v in enumerate(all_videos) if pos % num_shards == shard_index]
    tag = f"{shard_index:03d}"
    done_path = out_dir / f"done-{tag}.json"
    fingerprint = _fingerprint(cfg, [v for _, v in videos], raw_dir, (shard_index, num_shards))
    if not force and done_path.exists():
        done = json.loads(done_path.read_text())
        if done.get("fingerprint") == fingerprint:
            log.info("curate shard %s: already done (fingerprint %s), skipping", tag, fingerprint)
            return {**done["summary"], "skipped": True}
    t0 = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    done_path.unlink(missing_ok=True)
    storage.write_text(out_dir / "curate-config.json", cfg.model_dump_json(indent=1))

    records: list[dict[str, Any]] = []
    scene_records: list[dict[str, Any]] = []
    pending: list[tuple[dict[str, Any], tuple[np.ndarray, np.ndarray], int]] = []  # record, signature, fps
    clip_bytes: dict[str, tuple[bytes, tuple[int, ...]]] = {}  # kept so far: mp4 bytes, frames shape
    progress = Progress(f"curate shard {tag} videos", len(videos), every_s=5.0, logger=log)
    for pos, video in videos:
        vid = str(video["video_id"])
        path = raw_dir / str(video.get("file") or f"{vid}.mp4")
        try:
            frames, fps = read_video(path)
        except VideoDecodeError as exc:
            reason = " ".join(str(exc).split())
            log.warning("curate shard %s: %s unreadable: %s", tag, vid, reason)
            records.append(
                {
                    "clip_id": f"{vid}-unreadable",
                    "video_id": vid,
                    "video_index": pos,
                    "start_frame": None,
                    "end_frame": None,
                    "keep": False,
                    "drop_reasons": ["corrupt"],
                    "error": reason,
                    "caption": None,
                    "title": video.get("title"),
                    "scores": {},
                }
            )
            progress.step()
            continue
        fps_out = max(1, round(fps or float(video.get("fps") or 25)))
        small = filters.resize_frames(frames, cfg.analysis_size)  # once per video: scoring resolution
        cuts = detect_scenes(small, fps, cfg)
        scene_records.append({"video_id": vid, "video_index": pos, "num_frames": len(frames), "cuts": cuts})
        for scene_index, start, end, is_clip in split_clips(len(frames), cuts, cfg, with_short=True):
            cid = clip_id_of(vid, start, end)
            where = {
                "clip_id": cid,
                "video_id": vid,
                "video_index": pos,
                "scene_index": scene_index,
                "start_frame": start,
                "end_frame": end,
                "num_frames": end - start,
            }
            if not is_clip:  # a scene (or a scene's remainder) shorter than clip_min_frames
                records.append(
                    {
                        **where,
                        "keep": False,
                        "drop_reasons": ["too_short"],
                        "caption": None,
                        "title": video.get("title"),
                        "scores": {},
                    }
                )
                continue
            clip = frames[start:end]
            scores = filters.score_clip(small[start:end], cfg)  # (score_clip's own resize is a no-op now)
            reasons = filters.decide(scores, cfg)
            cap = caption(video, start, end)
            hashes = filters.clip_hashes(small[start:end], cfg.dedup_hash_size)
            thumbs = filters.colour_thumbnails(small[start:end])
            rec = {
                **where,
                "fps": fps_out,
                "keep": not reasons,
                "drop_reasons": reasons,
                "caption": cap["caption"],
                "title": cap["title"],
                "spec": cap["spec"],
                "scene_id": cap["scene_id"],
                "concept": caption_concept(cap["caption"], cap["spec"]),
                "scores": scores,
                "phash": filters.hashes_to_hex(hashes),
                "thumbs": filters.thumbnails_to_hex(thumbs),
                "duplicate_of": None,
                "shard": None,
            }
            records.append(rec)
            pending.append((rec, (hashes, thumbs), fps_out))
            if not reasons:
                out = resize_output(clip, cfg)
                clip_bytes[cid] = (encode_mp4_bytes(out, fps_out, threads=1), out.shape)
        progress.step()

    # Near-duplicates within the shard (the merge repeats this across shards).
    dups = find_duplicates([sig for _, sig, _ in pending], cfg)
    for (rec, _, _), match in zip(pending, dups, strict=True):
        if match is not None:
            _mark_duplicate(rec, pending[match[0]][0], match)
            clip_bytes.pop(rec["clip_id"], None)

    # Write the kept clips into a hidden temporary folder, then move the tars into place.
    shards_dir = out_dir / SHARDS_DIR
    for stale in shards_dir.glob(f".tmp-{tag}-*"):  # left by a crashed run of this shard
        shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = shards_dir / f".tmp-{tag}-{os.getpid()}"
    tmp_dir.mkdir(parents=True)
    kept_recs = [rec for rec, _, _ in pending if rec["keep"]]

    def sample(rec: dict[str, Any]) -> dict[str, Any]:
        mp4, shape = clip_bytes.pop(rec["clip_id"])
        meta = {
            "clip_id": rec["clip_id"],
            "video_id": rec["video_id"],
            "caption": rec["caption"],
            "title": rec["title"],
            "spec": rec["spec"],
            "fps": rec["fps"],
            "num_frames": int(shape[0]),
            "height": int(shape[1]),
            "width": int(shape[2]),
            "start_frame": rec["start_frame"],
            "end_frame": rec["end_frame"],
            "scores": rec["scores"],
        }
        return {
            "__key__": rec["clip_id"],
            "mp4": mp4,
            "json": json.dumps(meta, sort_keys=True).encode(),
            "txt": rec["caption"].encode(),
        }

    names: list[str] = []
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
    shutil.rmtree(tmp_dir, ignore_errors=True)

    storage.write_text(out_dir / f"manifest-{tag}.jsonl", _jsonl(records))
    storage.write_text(out_dir / f"scenes-{tag}.jsonl", _jsonl(scene_records))
    summary = _summarize(records)
    summary.update(
        {
            "shard_index": shard_index,
            "num_shards": num_shards,
            "shards": [f"{SHARDS_DIR}/{n}" for n in names],
            "manifest": f"manifest-{tag}.jsonl",
            "raw_dir": str(raw_dir.resolve()),
            "seconds": round(time.monotonic() - t0, 3),
        }
    )
    storage.write_text(done_path, json.dumps({"fingerprint": fingerprint, "summary": summary}, indent=1))
    log.info(
        "curate shard %s: %d videos (%d corrupt), %d clips, %d kept in %.1fs",
        tag,
        summary["videos"],
        summary["corrupt"],
        summary["clips"],
        summary["kept"],
        summary["seconds"],
    )
    return summary


def _summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    clips = [r for r in records if r["start_frame"] is not None and "too_short" not in r["drop_reasons"]]
    dropped: Counter[str] = Counter()
    for r in clips:
        dropped.update(r["drop_reasons"])
    return {
        "videos": len({r["video_id"] for r in records}),
        "corrupt": sum(1 for r in records if r["start_frame"] is None),
        "too_short_segments": sum(1 for r in records if "too_short" in r["drop_reasons"]),
        "clips": len(clips),
        "kept": sum(1 for r in clips if r["keep"]),
        "dropped": sum(1 for r in clips if not r["keep"]),
        "dropped_by_reason": dict(sorted(dropped.items())),
    }


# ------------------------------------------------------------------------------------------------- merge
def _concept_cap(records: list[dict[str, Any]], cfg: CurateConfig) -> None:
    """Cap the kept clips per concept; the sharpest clips of a concept stay (ties by clip id)."""
    kept = [r for r in records if r["keep"]]
    caps = [len(kept)]
    if cfg.concept_cap:
        caps.append(cfg.concept_cap)
    if cfg.concept_cap_fraction < 1.0:
        caps.append(max(1, math.ceil(cfg.concept_cap_fraction * len(kept))))
    cap = min(caps)
    by_concept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in kept:
        by_concept[r["concept"]].append(r)
    for group in by_concept.values():
        group.sort(key=lambda r: (-float(r["scores"].get("sharpness", 0.0)), r["clip_id"]))
        for r in group[cap:]:
            r["keep"] = False
            r["drop_reasons"].append("concept_cap")


def merge_manifests(
    out_dir: Path,
    shard_summaries: list[dict] | None = None,
    cfg: CurateConfig | None = None,
    raw_dir: Path | None = None,
) -> dict[str, Any]:
    """Merge the shard manifests, remove near-duplicates across shards, cap concepts, and write
    ``manifest.jsonl``, ``manifest.parquet``, ``kept.jsonl`` (the training index), ``report.html`` and
    ``summary.json``. ``cfg`` defaults to the config the shards ran with (stored in their markers);
    ``raw_dir`` (for the planted-truth metrics) defaults to the one the shards read."""
    from components.curate import report

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
    records: list[dict[str, Any]] = []
    for p in manifests:
        records.extend(json.loads(line) for line in p.read_text().splitlines() if line.strip())
    records.sort(key=lambda r: (r["video_index"], r["start_frame"] if r["start_frame"] is not None else -1))

    # Near-duplicates across shards: clips already marked within their shard keep their mark; the others
    # are compared, in canonical (metadata) order, with every earlier clip of any shard.
    clips = [r for r in records if r["start_frame"] is not None and r.get("phash")]
    bits = cfg.dedup_hash_size**2
    dup = find_duplicates([_signature(r, bits) for r in clips], cfg)
    for r, match in zip(clips, dup, strict=True):
        if match is not None and "duplicate" not in r["drop_reasons"]:
            _mark_duplicate(r, clips[match[0]], match)
    _concept_cap(clips, cfg)

    storage.write_text(out_dir / "manifest.jsonl", _jsonl(records))
    _write_parquet(out_dir / "manifest.parquet", records)
    kept = [
        {"clip_id": r["clip_id"], "shard": r["shard"], "caption": r["caption"], "title": r["title"]}
        for r in clips
        if r["keep"]
    ]
    storage.write_text(out_dir / "kept.jsonl", _jsonl(kept))

    raw = Path(raw_dir) if raw_dir else None
    if raw is None:
        dirs = {s.get("raw_dir") for s in summaries if s.get("raw_dir")}
        raw = Path(dirs.pop()) if len(dirs) == 1 else None
    truth = read_metadata(raw) if raw is not None and (raw / "metadata.jsonl").exists() else None
    scenes = []
    for p in sorted(out_dir.glob("scenes-[0-9][0-9][0-9].jsonl")):
        scenes.extend(json.loads(line) for line in p.read_text().splitlines() if line.strip())
    evaluation = report.evaluate(records, scenes, truth) if truth is not None else None

    summary = _summarize(records)
    summary.update(
        {
            "num_shards": len(manifests),
            "shards": sorted({r["shard"] for r in clips if r["shard"]}),
            "shard_seconds": round(sum(float(s.get("seconds", 0.0)) for s in summaries), 3),
            "evaluation": evaluation,
        }
    )
    report.write_report(out_dir / "report.html", records, summary, cfg)
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


def _write_parquet(path: Path, records: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    score_keys = sorted({k for r in records for k in (r.get("scores") or {})})
    cols: dict[str, list[Any]] = defaultdict(list)
    for r in records:
        for key in (
            "clip_id",
            "video_id",
            "video_index",
            "start_frame",
            "end_frame",
            "keep",
            "caption",
            "title",
            "concept",
            "duplicate_of",
            "shard",
            "error",
        ):
            cols[key].append(r.get(key))
        cols["drop_reasons"].append(list(r["drop_reasons"]))
        cols["spec"].append(json.dumps(r.get("spec") or {}, sort_keys=True))
        for k in score_keys:
            v = (r.get("scores") or {}).get(k)
            cols[f"score_{k}"].append(None if v is None else float(v))
    table = pa.table(dict(cols))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def kept_filter(out_dir: Path) -> Callable[[dict[str, Any]], bool]:
    """Predicate for ``webdataset.WebDataset(...).select(...)``: True for samples in ``kept.jsonl``."""
    keep = {
        json.loads(line)["clip_id"]
        for line in (Path(out_dir) / "kept.jsonl").read_text().splitlines()
        if line.strip()
    }
    return lambda sample: sample.get("__key__") in keep
