"""Reading and writing the data that flows between stages: curated clip shards and latent shards.

Both are webdataset tar shards in the object store. Clip samples hold ``mp4`` + ``json`` + ``txt``;
latent samples hold ``video.npy`` (VAE latents ``[F, C, h, w]``), ``image.npy`` (the first frame's
latent ``[1, C, h, w]``), the text states and masks of both encoders, and ``json`` (clip id, caption,
quality). Beside the latent shards, ``negative.npz`` holds the negative prompt's text states (caption
dropout and classifier-free guidance). Readers take the URIs from a stage manifest; S3 shards are fetched
to a temporary folder.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from t2v import storage
from t2v.errors import StageError

log = logging.getLogger(__name__)


@dataclass
class Clip:
    clip_id: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    caption: str
    meta: dict[str, Any]


@contextmanager
def local_shards(uris: Iterable[str]) -> Iterator[list[str]]:
    """Local paths for shard URIs (downloads S3 shards into a temporary folder)."""
    uris = list(uris)
    with ExitStack() as stack:
        paths = [str(stack.enter_context(storage.local_file_for(uri))) for uri in uris]
        yield paths


def _every_shard(urls):
    """Every process reads every shard: the readers here load a stage's whole (small) input and the
    trainer samples from it per rank; sharding by rank is the streaming path's job."""
    return urls


def shard_uris(manifest: dict[str, Any], key: str = "shards") -> list[str]:
    entries = manifest.get("files", {})
    uris = [entry["uri"] for name, entry in sorted(entries.items()) if name.startswith(f"{key}/")]
    if not uris:
        raise StageError(f"{manifest.get('manifest_uri', manifest.get('stage'))}: manifest lists no {key}")
    return uris


def kept_index(manifest: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The training index of a curate manifest (``kept.jsonl``): clip id -> record; None if it has none."""
    uri = manifest.get("kept_index_uri")
    if not uri:
        return None
    records = (json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip())
    return {r["clip_id"]: r for r in records}


def iter_clip_records(
    manifest: dict[str, Any], select: Callable[[str], bool] | None = None
) -> Iterator[tuple[str, dict[str, Any], bytes]]:
    """Kept curated clips, in shard order, not decoded: (clip id, meta, mp4 bytes). ``select(clip_id)``
    False skips a clip before anything is done with it."""
    import webdataset as wds

    kept = kept_index(manifest)
    with local_shards(shard_uris(manifest)) as paths:
        dataset = wds.WebDataset(paths, shardshuffle=False, empty_check=False, nodesplitter=_every_shard)
        for sample in dataset:
            meta = json.loads(sample["json"])
            clip_id = meta.get("clip_id", sample["__key__"])
            if kept is not None and clip_id not in kept:
                continue
            if select is not None and not select(clip_id):
                continue
            meta.update(kept.get(clip_id, {}) if kept else {})
            yield clip_id, meta, sample["mp4"]


def list_clip_ids(manifest: dict[str, Any]) -> list[str]:
    """The ids of the kept curated clips, sorted: the stable order data-parallel readers split. From the
    manifest's training index (``kept.jsonl``) when it has one, else from a pass over its shards."""
    kept = kept_index(manifest)
    if kept is not None:
        return sorted(kept)
    return sorted(clip_id for clip_id, _, _ in iter_clip_records(manifest))


def iter_clips(manifest: dict[str, Any], limit: int | None = None) -> Iterator[Clip]:
    """Kept curated clips, in shard order, decoded to frames."""
    from t2v.video import read_video

    for count, (clip_id, meta, mp4) in enumerate(iter_clip_records(manifest), start=1):
        frames, fps = read_video(mp4)
        yield Clip(clip_id, frames, fps, meta.get("caption", ""), meta)
        if limit is not None and count >= limit:
            return


Bucket = tuple[int, int, int]  # (frames, height, width) in pixels


def bucket_name(bucket: Bucket) -> str:
    """``FRAMESxHEIGHTxWIDTH``: how configs and metrics name a bucket."""
    return "x".join(str(v) for v in bucket)


def assign_bucket(num_frames: int, height: int, width: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket a clip of ``num_frames`` frames of ``height x width`` pixels goes to.

    Among the buckets with no more frames than the clip, the one whose aspect ratio (height / width) is
    nearest the clip's, measured as a ratio (max(a/b, b/a), so 2:1 and 1:2 are equally far from 1:1) and
    compared exactly. Ties go to the bucket with more frames (more of the clip is kept), then to the one
    listed first. A clip shorter than every bucket goes to the nearest-aspect bucket among those with the
    fewest frames (:func:`fit_clip` then repeats its last frame)."""
    if not buckets:
        raise ValueError("no buckets")
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"a clip of {num_frames} frames of {height}x{width} has no pixels")
    fitting = [b for b in buckets if b[0] <= num_frames]
    if not fitting:
        fewest = min(b[0] for b in buckets)
        fitting = [b for b in buckets if b[0] == fewest]
    aspect = Fraction(height, width)

    def distance(bucket: Bucket) -> Fraction:
        ratio = Fraction(bucket[1], bucket[2]) / aspect
        return max(ratio, 1 / ratio)

    order = {b: i for i, b in reversed(list(enumerate(buckets)))}  # the first listing of each bucket
    return min(fitting, key=lambda b: (distance(b), -b[0], order[b]))


def center_crop_box(height: int, width: int, aspect_height: int, aspect_width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the largest centered window of ``height x width`` whose aspect is
    ``aspect_height : aspect_width`` (rounded to whole pixels)."""
    if height * aspect_width > width * aspect_height:  # taller than the target: cut rows
        rows = max(1, min(height, round(width * aspect_height / aspect_width)))
        return (height - rows) // 2, 0, rows, width
    cols = max(1, min(width, round(height * aspect_width / aspect_height)))
    return 0, (width - cols) // 2, height, cols


def fit_clip(frames: np.ndarray, num_frames: int, resolution: tuple[int, int], crop: bool = False) -> np.ndarray:
    """Take the first ``num_frames`` frames, repeating the last frame when the clip is shorter, and resize
    (area) to ``resolution``; with ``crop``, first cut the largest centered window of the resolution's
    aspect ratio, so nothing is stretched. Returns uint8 [num_frames, H, W, 3]."""
    import cv2

    height, width = resolution
    frames = frames[:num_frames]
    if crop:
        top, left, rows, cols = center_crop_box(frames.shape[1], frames.shape[2], height, width)
        frames = frames[:, top : top + rows, left : left + cols]
    if frames.shape[1:3] != (height, width):
        frames = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    if len(frames) < num_frames:
        pad = np.repeat(frames[-1:], num_frames - len(frames), axis=0)
        frames = np.concatenate([frames, pad], axis=0)
    return np.ascontiguousarray(frames)


def to_model_video(frames: np.ndarray):
    """uint8 [T, H, W, 3] -> float tensor [T, 3, H, W] in [-1, 1]."""
    import torch

    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def from_model_video(video) -> np.ndarray:
    """float tensor [T, 3, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    return (video.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def write_index_and_negative(
    index: list[dict[str, Any]], negative: dict[str, np.ndarray], out_uri: str
) -> dict[str, dict[str, Any]]:
    """Write ``latents.index.jsonl`` (records of :func:`index_latent_shards`) and ``negative.npz`` (the
    negative prompt's text states, one prompt, no batch dimension) to ``out_uri``, beside a latent set's
    shards; returns their manifest entries. Encode and Video-DPO's pair sets both publish these."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="t2v-latent-index-") as tmp_name:
        tmp = Path(tmp_name)
        buffer = io.BytesIO()
        np.savez(buffer, **negative)
        (tmp / "negative.npz").write_bytes(buffer.getvalue())
        (tmp / LATENT_INDEX).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in index))
        return storage.upload_files(tmp, ["negative.npz", LATENT_INDEX], out_uri)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


#: the mtime of every tar member: a shard's bytes depend on its samples alone, never on the clock
TAR_MTIME = 0.0


def write_tar(path: Path, samples: Iterable[dict[str, Any]]) -> None:
    """Write samples (dicts of webdataset keys -> bytes/str) into one webdataset tar at ``path``."""
    import webdataset as wds

    with wds.TarWriter(str(path), mtime=TAR_MTIME) as sink:
        for sample in samples:
            sink.write(sample)


def write_shards(samples: Iterable[dict[str, Any]], out_dir: Path, prefix: str, shard_size: int) -> list[Path]:
    """Write samples (dicts of webdataset keys -> bytes/str) into ``out_dir/<prefix>-NNNNN.tar``, at most
    ``shard_size`` per shard."""
    import webdataset as wds

    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{prefix}-%05d.tar")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, mtime=TAR_MTIME) as sink:
        for sample in samples:
            sink.write(sample)
    return sorted(out_dir.glob(f"{prefix}-*.tar"))


LATENT_INDEX = "latents.index.jsonl"


def index_latent_shards(paths: list[Path]) -> list[dict[str, Any]]:
    """One record per latent sample of local tar shards: where its members are (byte ranges), its video
    latent shape and curation quality. With it a reader fetches any sample by one ranged read, on S3 too,
    without downloading or holding the shards."""
    import tarfile

    records: list[dict[str, Any]] = []
    for path in paths:
        with tarfile.open(path) as tar:
            current: dict[str, Any] | None = None
            for member in tar:
                if not member.isfile():
                    continue
                key, _, field = member.name.partition(".")
                if current is None or current["key"] != key:
                    current = {"shard": path.name, "key": key, "start": member.offset, "members": {}}
                    records.append(current)
                current["members"][field] = [member.offset_data - current["start"], member.size]
                current["end"] = member.offset_data + member.size
                if field == "video.npy":
                    handle = tar.extractfile(member)
                    version = np.lib.format.read_magic(handle)
                    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, _, _ = header(handle)
                    current["shape"] = list(shape)
                elif field == "json":
                    current["quality"] = float(json.loads(tar.extractfile(member).read()).get("quality", 1.0))
    for record in records:
        record["length"] = record.pop("end") - record["start"]
    return records


#: One .npy read at a time across threads (the trainer's read-ahead workers). numpy parses an array's header
#: with ``ast.literal_eval``, and CPython before 3.11.8 / 3.12.1 can raise "SystemError: AST constructor
#: recursion depth mismatch" when two threads build ASTs at once (python/cpython gh-106905); it killed a
#: training job here under 3.11.7. The reads are small copies, so the lock costs nothing measurable.
NPY_READ_LOCK = threading.Lock()


class IndexedLatents:
    """Latent samples read on demand by index (a ranged read each), from a shard index
    (:func:`index_latent_shards`). Holds only the index; memory does not grow with the data set."""

    def __init__(self, records: list[dict[str, Any]], shard_uri: dict[str, str]):
        self.records, self.shard_uri = records, shard_uri

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> IndexedLatents | None:
        """The encode manifest's index, or None for a manifest written before encode made one."""
        uri = manifest.get("index_uri")
        if not uri:
            return None
        records = [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]
        shards = {uri.rsplit("/", 1)[-1]: uri for uri in shard_uris(manifest)}
        missing = sorted({r["shard"] for r in records} - set(shards))
        if missing:
            raise StageError(f"{uri}: names shards the manifest does not list: {missing[:3]}")
        return cls(records, shards)

    def where(self, keep) -> IndexedLatents:
        return IndexedLatents([r for r in self.records if keep(r)], self.shard_uri)

    def __len__(self) -> int:
        return len(self.records)

    def shape(self, index: int) -> list[int]:
        """The video latent's shape [F, C, h, w] of sample ``index``, from the index (no read)."""
        return self.records[index]["shape"]

    def __getitem__(self, index: int) -> LatentSample:
        record = self.records[index]
        blob = storage.read_range(self.shard_uri[record["shard"]], record["start"], record["length"])

        def member(field: str) -> bytes:
            offset, size = record["members"][field]
            return blob[offset : offset + size]

        def array(field: str) -> np.ndarray:
            with NPY_READ_LOCK:
                return np.load(io.BytesIO(member(f"{field}.npy")), allow_pickle=False)

        return LatentSample(
            key=record["key"],
            video=array("video"),
            image=array("image"),
            clip_states=array("clip_states"),
            clip_mask=array("clip_mask"),
            llm_states=array("llm_states"),
            llm_mask=array("llm_mask"),
            meta=json.loads(member("json")) if "json" in record["members"] else {},
            rejected=array("rejected") if "rejected.npy" in record["members"] else None,
        )


@dataclass
class LatentSample:
    key: str
    video: np.ndarray  # float32 [F, C, h, w]
    image: np.ndarray  # float32 [1, C, h, w]
    clip_states: np.ndarray
    clip_mask: np.ndarray
    llm_states: np.ndarray
    llm_mask: np.ndarray
    meta: dict[str, Any]
    rejected: np.ndarray | None = None  # a preference pair's rejected video latents (Video-DPO data)


def load_latents(manifest: dict[str, Any]) -> list[LatentSample]:
    """Every latent sample of an encode manifest, in memory (fine at tiny scale; the cluster path streams
    the same shards with webdataset's node/worker splitting)."""
    import webdataset as wds

    out = []
    with local_shards(shard_uris(manifest)) as paths:
        for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False, nodesplitter=_every_shard).decode():
            out.append(
                LatentSample(
                    key=sample["__key__"],
                    video=sample["video.npy"],
                    image=sample["image.npy"],
                    clip_states=sample["clip_states.npy"],
                    clip_mask=sample["clip_mask.npy"],
                    llm_states=sample["llm_states.npy"],
                    llm_mask=sample["llm_mask.npy"],
                    meta=sample["json"],
                    rejected=sample.get("rejected.npy"),
                )
            )
    return out


def load_negative(manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The negative prompt's text states and masks an encode manifest names (``negative_uri``)."""
    with storage.local_file_for(manifest["negative_uri"]) as path:
        data = np.load(path)
        return {k: data[k] for k in data.files}
