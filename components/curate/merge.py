"""The merge of a run's shard manifests, streamed: what it holds grows with the clips' compact signatures,
not with their records.

A million videos make millions of clip records (~3 KB of JSON each, three times that parsed), more than
the merge task's memory. :func:`components.curate.stage.merge_manifests` reads the shard manifests
twice, in canonical order (the table's, then the frame's: :func:`ordered_records`, a merge of the shards'
own ordered files):

1. :class:`ClipIndex` keeps, per clip, what the run-wide decisions need -- its id, keep flag, concept,
   sharpness, its frame hashes packed (8 bytes each) and its colour thumbnails in a memory-mapped
   temporary file -- and makes the decisions: near-duplicates across shards
   (:func:`components.curate.dedup.find_duplicates_packed`), the concept cap, the k-means cluster cap.
2. Each record is read again, the decisions applied to it, and it is written out at once: the manifest
   (line by line), the parquet table (:class:`ParquetRows`, row groups as they fill), the kept
   index, the summary counts (:class:`SummaryCounts`) and the report's figures
   (:class:`components.curate.report.ReportData`).

The outputs are those of deciding on all the records in memory, which is what the merge did before.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import tempfile
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from components.curate import dedup, filters
from t2v import storage
from t2v.config.curate import CurateConfig

log = logging.getLogger(__name__)

#: Lines of a JSONL file parsed as one JSON document by :func:`read_jsonl`.
JSONL_BLOCK = 4096


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file, read a block of lines at a time, each block parsed as one JSON array:
    the decoder keeps one copy of each key per document, so a block's records share their key strings
    (a merge's clip records take a third less memory than parsed line by line: 5.9 against 8.9 KiB)."""
    with open(path) as handle:
        while lines := list(itertools.islice(handle, JSONL_BLOCK)):
            block = [line for line in lines if line.strip()]
            if block:
                yield from json.loads("[" + ",".join(block) + "]")


def canonical_key(rec: dict[str, Any]) -> tuple[int, int]:
    """A record's place in a run: its row in the table, then its first frame (a video's one record of
    rejection first)."""
    return int(rec["video_index"]), -1 if rec["start_frame"] is None else int(rec["start_frame"])


def is_clip(rec: dict[str, Any]) -> bool:
    """A scored clip with a signature: what dedup and the caps decide on."""
    return rec["start_frame"] is not None and bool(rec.get("phash"))


class _OutOfOrder(Exception):
    pass


def _checked(path: Path) -> Iterator[dict[str, Any]]:
    last = None
    for rec in read_jsonl(path):
        key = canonical_key(rec)
        if last is not None and key < last:
            raise _OutOfOrder(path)
        last = key
        yield rec


def ordered_records(manifests: list[Path], unordered: set[Path] | None = None) -> Iterator[dict[str, Any]]:
    """Every record of the shard manifests in canonical order, merged as they are read (a shard writes its
    videos in table order and each video's clips in frame order). A manifest named in ``unordered`` is
    sorted in memory first (a shard written otherwise); :class:`_OutOfOrder` is raised for another one
    found out of order."""
    unordered = unordered or set()
    streams = [iter(sorted(read_jsonl(p), key=canonical_key)) if p in unordered else _checked(p) for p in manifests]
    yield from heapq.merge(*streams, key=canonical_key)


class SummaryCounts:
    """The counts of a manifest's records, added one at a time: videos, rejected rows and videos by
    reason, clips, kept and dropped clips by reason, scene remainders too short to be clips."""

    def __init__(self) -> None:
        self.videos: set[int] = set()
        self.rejected: Counter[str] = Counter()
        self.corrupt = self.too_short = self.clips = self.kept = 0
        self.dropped: Counter[str] = Counter()

    def add(self, r: dict[str, Any]) -> None:
        self.videos.add(int(r["video_index"]))
        if r["start_frame"] is None:
            self.rejected[r["drop_reasons"][0]] += 1
            self.corrupt += "corrupt" in r["drop_reasons"]
        elif "too_short" in r["drop_reasons"]:
            self.too_short += 1
        else:
            self.clips += 1
            self.kept += bool(r["keep"])
            self.dropped.update(r["drop_reasons"])

    def summary(self) -> dict[str, Any]:
        return {
            "videos": len(self.videos),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "corrupt": self.corrupt,
            "too_short_segments": self.too_short,
            "clips": self.clips,
            "kept": self.kept,
            "dropped": self.clips - self.kept,
            "dropped_by_reason": dict(sorted(self.dropped.items())),
        }


def reference_manifest(uri: str) -> str:
    """The manifest of an earlier run named in ``dedup_against``: the URI itself when it names a
    ``.jsonl`` file, else ``manifest.jsonl`` in that folder (a curate stage's output)."""
    return uri if uri.lower().endswith(".jsonl") else storage.join(uri, "manifest.jsonl")


def check_references(uris: Iterable[str]) -> None:
    """Raise, naming ``dedup_against``, for an earlier run's manifest that is not there: before a shard
    or the merge starts, not after the shards' work."""
    for uri in uris:
        manifest = reference_manifest(uri)
        if not storage.exists(manifest):
            raise storage.StorageError(f"dedup_against: {manifest}: no such manifest (a curate output folder or its manifest.jsonl)")


def reference_clips(uris: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(manifest, record)`` of every clip the earlier runs ``uris`` kept, streamed (S3 ones through a
    temporary download)."""
    for uri in uris:
        manifest = reference_manifest(uri)
        with storage.local_file_for(manifest) as local:
            count = 0
            for r in read_jsonl(Path(local)):
                if is_clip(r) and r["keep"]:
                    count += 1
                    yield manifest, r
        log.info("curate merge: %d kept clips of %s to check this run against", count, manifest)


class ClipIndex:
    """Pass 1 of the merge: per clip (:func:`is_clip`, numbered in canonical order) what the run-wide
    decisions need, and the decisions (:meth:`decide`)."""

    def __init__(self, cfg: CurateConfig, folder: Path):
        self.cfg = cfg
        self.bits = cfg.dedup_hash_size**2
        self.ids: list[str] = []
        self.keep = bytearray()
        self.marked_duplicate = bytearray()  # "duplicate" already among its reasons (found in its shard)
        self.concepts: dict[Any, int] = {}
        self.concept = array("i")
        self.sharpness = array("d")
        self.hash_counts = array("i")
        self.hashes = bytearray()
        self.thumb_counts = array("i")
        self.times = array("d")
        self.grid = 0
        self.score_keys: set[str] = set()
        self.embedding_rows = array("i")  # a clip's row in the embeddings file; -1: its thumbnails; -2: none
        # clips of earlier runs' manifests (cfg.dedup_against), indexed first: the run's clips are checked
        # against them, and they are neither written nor counted; numbers 0 .. references - 1
        self.references = 0
        self.reference_sources: list[str] = []
        self._thumbs_path = folder / "thumbs.i8"
        self._thumbs = open(self._thumbs_path, "wb")  # noqa: SIM115  (closed in decide)
        self._embeddings_path = folder / "embeddings.f32"
        self._embeddings = open(self._embeddings_path, "wb")  # noqa: SIM115
        self._embedding_dim = 0
        self._embedding_count = 0
        # the decisions, by clip number
        self.duplicate_of: dict[int, tuple[int, float, float]] = {}
        self.concept_capped: set[int] = set()
        self.cluster: dict[int, int] = {}
        self.cluster_capped: set[int] = set()
        self.balance: dict[str, Any] = {}

    def add_reference(self, r: dict[str, Any], source: str) -> None:
        """A kept clip of an earlier run (``source``: its manifest), before any of this run's."""
        if self.ids and self.references != len(self.ids):
            raise ValueError("earlier runs' clips are indexed before this run's")
        if not is_clip(r):
            return
        self._add_clip(r)
        self.references += 1
        self.reference_sources.append(source)

    def add(self, r: dict[str, Any]) -> None:
        self.score_keys.update(r.get("scores") or {})
        if is_clip(r):
            self._add_clip(r)

    def _add_clip(self, r: dict[str, Any]) -> None:
        self.ids.append(r["clip_id"])
        self.keep.append(bool(r["keep"]))
        self.marked_duplicate.append("duplicate" in r["drop_reasons"])
        self.concept.append(self.concepts.setdefault(r.get("concept"), len(self.concepts)))
        self.sharpness.append(float((r.get("scores") or {}).get("sharpness", 0.0)))
        hashes = [bytes.fromhex(h) for h in r["phash"]] if r.get("thumbs") else []
        thumbs = filters.thumbnails_from_hex(r["thumbs"]) if r.get("thumbs") else None
        self.hash_counts.append(len(hashes))
        for h in hashes:
            self.hashes += h
        if thumbs is None:
            self.thumb_counts.append(0)
        else:
            if self.grid and thumbs.shape[1] != self.grid:
                raise ValueError(f"{r['clip_id']}: {thumbs.shape[1]}x{thumbs.shape[1]} thumbnails among {self.grid}x{self.grid} ones")
            self.grid = thumbs.shape[1]
            self.thumb_counts.append(len(thumbs))
            self._thumbs.write(thumbs.tobytes())
            self.times.extend(filters.sample_indices(int(r["num_frames"]), len(thumbs)).astype(np.float64).tolist())
        if self.cfg.balance_clusters:
            if r.get("embedding"):
                v = np.asarray(r["embedding"], dtype=np.float32).ravel()
                if self._embedding_dim and len(v) != self._embedding_dim:
                    raise ValueError(f"{r['clip_id']}: a {len(v)}-dim embedding among {self._embedding_dim}-dim ones")
                self._embedding_dim = len(v)
                self._embeddings.write(v.tobytes())
                self.embedding_rows.append(self._embedding_count)
                self._embedding_count += 1
            else:
                self.embedding_rows.append(-1 if thumbs is not None else -2)

    def __len__(self) -> int:
        """This run's clips (not the earlier runs' it is checked against)."""
        return len(self.ids) - self.references

    def apply(self, n: int, r: dict[str, Any]) -> None:
        """The decisions on this run's clip ``n`` applied to its record ``r``, in the order they were made."""
        n += self.references
        if n in self.duplicate_of:
            of, h, dt = self.duplicate_of[n]
            dedup.mark_duplicate(r, self.ids[of], (of, h, dt))
            if of < self.references:  # a clip an earlier run kept
                r["duplicate_source"] = self.reference_sources[of]
        if n in self.concept_capped:
            r["keep"] = False
            r["drop_reasons"].append("concept_cap")
        if n in self.cluster:
            r["cluster"] = self.cluster[n]
        if n in self.cluster_capped:
            r["keep"] = False
            r["drop_reasons"].append("cluster_cap")

    def _thumbs_map(self) -> np.ndarray:
        count = int(sum(self.thumb_counts))
        if not count:
            return np.zeros((0, 8, 8, 3), dtype=np.int8)
        return np.memmap(self._thumbs_path, dtype=np.int8, mode="r", shape=(count, self.grid, self.grid, 3))

    def decide(self) -> None:
        """Near-duplicates across shards, then the concept cap, then the cluster cap (each on what the
        one before left kept), as the in-memory merge did them."""
        self._thumbs.close()
        self._embeddings.close()
        thumbs = self._thumbs_map()
        self._duplicates(thumbs)
        for c in range(self.references):  # the earlier runs' clips: compared with, not capped
            self.keep[c] = 0
        self._concept_cap()
        self._cluster_cap(thumbs)

    def _duplicates(self, thumbs: np.ndarray) -> None:
        # every clip as it lies end to end: one without a signature has no hash (no key, no candidate)
        if sum(1 for h in self.hash_counts if h) < 2:
            return
        packed = np.frombuffer(bytes(self.hashes), dtype=np.uint8).reshape(-1, (self.bits + 7) // 8)
        found = dedup.find_duplicates_packed(
            packed, np.frombuffer(self.hash_counts, dtype=np.int32), thumbs,
            np.frombuffer(self.thumb_counts, dtype=np.int32), np.frombuffer(self.times, dtype=np.float64), self.cfg,
        )
        for c, match in enumerate(found):
            if c >= self.references and match is not None and not self.marked_duplicate[c]:
                self.duplicate_of[c] = match
                self.keep[c] = 0
        if self.duplicate_of:
            self.score_keys.update({"dup_hash_distance", "dup_colour_distance"})

    def _concept_cap(self) -> None:
        kept = [c for c in range(len(self.ids)) if self.keep[c]]
        caps = [len(kept)]
        if self.cfg.concept_cap:
            caps.append(self.cfg.concept_cap)
        if self.cfg.concept_cap_fraction < 1.0:
            caps.append(max(1, math.ceil(self.cfg.concept_cap_fraction * len(kept))))
        cap = min(caps)
        by_concept: dict[int, list[int]] = defaultdict(list)
        for c in kept:
            by_concept[self.concept[c]].append(c)
        for group in by_concept.values():
            group.sort(key=lambda c: (-self.sharpness[c], self.ids[c]))
            for c in group[cap:]:
                self.keep[c] = 0
                self.concept_capped.add(c)

    def _cluster_cap(self, thumbs: np.ndarray) -> None:
        if not self.cfg.balance_clusters:
            return
        kept = [c for c in range(len(self.ids)) if self.keep[c] and self.embedding_rows[c] != -2]
        if sum(1 for c in range(len(self.ids)) if self.keep[c]) < 2 or len(kept) < 2:
            return
        stored = (np.memmap(self._embeddings_path, dtype=np.float32, mode="r",
                            shape=(self._embedding_count, self._embedding_dim)) if self._embedding_count else None)
        tcounts = np.frombuffer(self.thumb_counts, dtype=np.int32)
        tfirst = np.concatenate([[0], np.cumsum(tcounts)[:-1]])

        def vector(c: int) -> np.ndarray:
            row = self.embedding_rows[c]
            if row >= 0:
                return np.asarray(stored[row])
            t = thumbs[tfirst[c] : tfirst[c] + tcounts[c]]
            return np.asarray(t).astype(np.float32).mean(axis=0).ravel()

        x = np.stack([vector(c) for c in kept])
        labels, capped, self.balance = dedup.cluster_caps(
            x, [self.sharpness[c] for c in kept], [self.ids[c] for c in kept], self.cfg)
        for c, label, drop in zip(kept, labels.tolist(), capped.tolist(), strict=True):
            self.cluster[c] = int(label)
            if drop:
                self.keep[c] = 0
                self.cluster_capped.add(c)


def build_index(manifests: list[Path], cfg: CurateConfig, folder: Path) -> tuple[ClipIndex, set[Path]]:
    """Pass 1 over the manifests (see :class:`ClipIndex`), its decisions made; and the manifests that were
    not in canonical order (sorted in memory, here and in pass 2)."""
    unordered: set[Path] = set()
    while True:
        index = ClipIndex(cfg, folder)
        for source, rec in reference_clips(cfg.dedup_against):
            index.add_reference(rec, source)
        try:
            for rec in ordered_records(manifests, unordered):
                index.add(rec)
        except _OutOfOrder as exc:
            (path,) = exc.args
            log.warning("curate merge: %s is not in table order; sorting it in memory", path)
            unordered.add(path)
            index._thumbs.close()
            index._embeddings.close()
            continue
        index.decide()
        return index, unordered


class ParquetRows:
    """``manifest.parquet`` written a row group at a time (``rows`` records), with one schema fixed up
    front: the record fields, and a float column per score (``score_keys``)."""

    FIELDS = (
        ("clip_id", "string"), ("video_id", "string"), ("video_index", "int64"), ("start_frame", "int64"), ("end_frame", "int64"), ("keep", "bool"), ("caption", "string"),
        ("title", "string"), ("concept", "string"), ("duplicate_of", "string"), ("shard", "string"),
        ("error", "string"), ("uri", "string"), ("cluster", "int64"), ("source", "string"), ("license", "string"),
        ("duplicate_source", "string"),
    )
    JSON_FIELDS = ("spec", "scorers", "captions")

    def __init__(self, path: Path, score_keys: Iterable[str], rows: int = 16384):
        import pyarrow as pa

        self.path = Path(path)
        self.score_keys = sorted(score_keys)
        types = {"string": pa.string(), "int64": pa.int64(), "bool": pa.bool_()}
        fields = [pa.field(k, types[t]) for k, t in self.FIELDS]
        fields.append(pa.field("drop_reasons", pa.list_(pa.string())))
        fields += [pa.field(k, pa.string()) for k in self.JSON_FIELDS]
        fields += [pa.field(f"score_{k}", pa.float64()) for k in self.score_keys]
        self.schema = pa.schema(fields)
        self.rows = rows
        self.cols: dict[str, list[Any]] = defaultdict(list)
        self.count = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer = None

    def add(self, r: dict[str, Any]) -> None:
        cols = self.cols
        for key, kind in self.FIELDS:
            v = r.get(key)
            cols[key].append(None if v is None else str(v) if kind == "string" else v)
        cols["drop_reasons"].append(list(r["drop_reasons"]))
        for key in self.JSON_FIELDS:
            cols[key].append(json.dumps(r.get(key) or {}, sort_keys=True))
        scores = r.get("scores") or {}
        for k in self.score_keys:
            v = scores.get(k)
            cols[f"score_{k}"].append(None if v is None else float(v))
        self.count += 1
        if self.count % self.rows == 0:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, self.schema)
        if self.cols:
            self._writer.write_table(pa.table(dict(self.cols), schema=self.schema))
        self.cols = defaultdict(list)

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)


def scratch_folder(out_dir: Path) -> tempfile.TemporaryDirectory:
    """A temporary folder beside the outputs for the merge's memory-mapped signatures."""
    return tempfile.TemporaryDirectory(prefix=".merge-", dir=out_dir)


__all__ = ["ClipIndex", "ParquetRows", "SummaryCounts", "build_index", "canonical_key", "is_clip",
           "ordered_records", "read_jsonl", "scratch_folder"]
