"""The encode stage for real on tiny synthetic clips: a tiny random VAE and the tiny text encoders, an
MLflow SQLite store. Clips of several aspect ratios go to their buckets; two worker processes write the
same per-clip latents, bit for bit, as one; the index gives every sample's shape, so the trainer's loader
sees the buckets; a corrupt clip is skipped with its reason; a failing worker fails the stage by name."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from components.framework import catalog
from components.framework.context import StageContext
from t2v import checkpoints, storage, tracking
from t2v.config import load_config
from t2v.errors import StageError
from t2v.shards import LATENT_INDEX, IndexedLatents, load_latents, load_negative, write_shards
from t2v.video import encode_mp4_bytes
from t2v.world.text_encoders import create_tiny_text_encoders

WORDS = ["a", "red", "green", "blue", "square", "circle", "wide", "tall", "short", "clip"]
BUCKETS = '["17x32x32", "17x24x40"]'
# (frames, height, width, caption): squares at ids 0, 1, 3 and 3:5 clips at 2, 4, 5, so the batches (of 3) of one
# worker and of two differ; clip 6 is shorter than every bucket (its last frame is repeated)
CLIPS = [
    (17, 32, 32, "a red square"),
    (20, 40, 40, "a blue square"),
    (17, 30, 50, "a wide green clip"),
    (18, 36, 36, "a green circle"),
    (17, 24, 48, "a wide red clip"),
    (17, 48, 80, "a wide blue circle"),
    (9, 32, 32, "a short clip"),
]


def _frames(index: int, frames: int, height: int, width: int) -> np.ndarray:
    video = np.full((frames, height, width, 3), 30 + 20 * index, np.uint8)
    for t in range(frames):
        video[t, height // 4 : height // 2, t % width : t % width + width // 3] = (200, 40 * index % 255, 90)
    return video


def _clips_manifest(root: Path, corrupt: set[int] = frozenset(), clips=CLIPS) -> dict:
    samples = []
    for i, (frames, height, width, caption) in enumerate(clips):
        mp4 = b"not an mp4 at all" if i in corrupt else encode_mp4_bytes(_frames(i, frames, height, width), 25)
        meta = {"clip_id": f"clip-{i}", "caption": caption, "quality": 0.5 + i / 20}
        samples.append({"__key__": f"clip-{i}", "mp4": mp4, "json": json.dumps(meta)})
    shards = write_shards(samples, root / "shards", "clips", shard_size=3)
    return {
        "stage": "curate",
        "fingerprint": f"test-clips-{sorted(corrupt)}",
        "manifest_uri": str(root / "manifest.json"),
        "files": {f"shards/{p.name}": {"uri": str(p)} for p in shards},
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny VAE checkpoint and the tiny text encoders (what prepare-data and train-vae hand on)."""
    root = tmp_path_factory.mktemp("encode-models")
    cfg = load_config("tiny")
    torch.manual_seed(0)
    from model.vae import CausalVideoVAE

    checkpoints.save_vae(CausalVideoVAE(cfg.vae.model), str(root / "vae"))
    clip_dir, llm_dir = create_tiny_text_encoders(root / "text", WORDS, cfg.text_encoders)
    return {
        "vae": {"stage": "train-vae", "fingerprint": "test-vae", "checkpoint_uri": str(root / "vae")},
        "raw": {"stage": "prepare-data", "fingerprint": "test-raw", "text_encoders": {"clip": str(clip_dir), "llm": str(llm_dir)}},
        "tracking_uri": f"sqlite:///{root}/mlflow.db",
        "artifacts": (root / "artifacts").as_uri(),
    }


def _encode(models, root: Path, clips: dict, overrides: list[str]) -> dict:
    cfg = load_config("tiny", ["encode.batch_size=3", "encode.shard_size=2", *overrides])
    parent = tracking.start_parent_run(models["tracking_uri"], "test-encode", root.name, tags={}, artifact_location=models["artifacts"])
    ctx = StageContext(config=cfg, run_root=str(root), tracking_uri=models["tracking_uri"], parent_run_id=parent)
    return catalog.get("encode")(ctx, clips=clips, vae=models["vae"], raw=models["raw"])


def _by_clip(manifest: dict) -> dict:
    return {s.meta["clip_id"]: s for s in load_latents(manifest)}


def test_two_workers_write_the_same_latents_as_one_in_the_buckets_the_trainer_sees(models, tmp_path):
    from trainer.data import LatentBatches

    clips = _clips_manifest(tmp_path / "clips")
    common = [f"encode.buckets={BUCKETS}", "encode.sample_posterior=true", "encode.seed=7"]
    one = _encode(models, tmp_path / "one", clips, [*common, "encode.workers=1"])
    two = _encode(models, tmp_path / "two", clips, [*common, "encode.workers=2"])

    # every clip, in its bucket: squares (and the short square clip) -> 17x32x32, 3:5 clips -> 17x24x40
    expected = {"clip-0": "17x32x32", "clip-1": "17x32x32", "clip-3": "17x32x32", "clip-6": "17x32x32",
                "clip-2": "17x24x40", "clip-4": "17x24x40", "clip-5": "17x24x40"}
    for manifest in (one, two):
        summary = manifest["summary"]
        assert summary["samples"] == 7 and summary["skipped"] == [] and summary["padded_clips"] == 1
        assert summary["buckets"] == {"17x32x32": 4, "17x24x40": 3}
        assert summary["video_latent_shapes"] == {"17x32x32": [3, 8, 4, 4], "17x24x40": [3, 8, 3, 5]}
        assert summary["video_latent_shape"] == [3, 8, 4, 4]  # the most common: what evaluate samples at
        assert {cid: s.meta["bucket"] for cid, s in _by_clip(manifest).items()} == expected
    assert {k for k in two["files"] if k.startswith("shards/")} == {
        "shards/latents-w000-00000.tar", "shards/latents-w000-00001.tar",  # worker 0: clips 0, 2, 4, 6
        "shards/latents-w001-00000.tar", "shards/latents-w001-00001.tar",  # worker 1: clips 1, 3, 5
    }
    assert all(k.startswith("shards/latents-w000-") for k in one["files"] if k.startswith("shards/"))

    # the same latents and text states whatever the worker count and batches: the same posterior draw
    # per clip (seeded by its id); oneDNN's convolutions round by batch size, so within float rounding
    a, b = _by_clip(one), _by_clip(two)
    assert sorted(a) == sorted(b) == sorted(expected)
    for clip_id in a:
        for field in ("video", "image", "clip_states", "llm_states"):
            assert np.allclose(getattr(a[clip_id], field), getattr(b[clip_id], field), rtol=1e-4, atol=1e-4), (clip_id, field)
        for field in ("clip_mask", "llm_mask"):
            assert np.array_equal(getattr(a[clip_id], field), getattr(b[clip_id], field)), (clip_id, field)
        assert a[clip_id].meta == b[clip_id].meta
    assert not np.array_equal(a["clip-0"].video, a["clip-1"].video)
    for key, value in load_negative(one).items():
        assert np.allclose(value, load_negative(two)[key], rtol=1e-4, atol=1e-4), key

    # the index lists every sample once, in shard order, with its own shape
    records = [json.loads(line) for line in storage.read_text(two["index_uri"]).splitlines()]
    assert two["index_uri"].endswith(LATENT_INDEX)
    assert sorted(r["key"] for r in records) == sorted(k.replace(".", "_") for k in expected)
    assert [(r["shard"], r["start"]) for r in records] == sorted((r["shard"], r["start"]) for r in records)
    indexed = IndexedLatents.from_manifest(two)
    for i in range(len(indexed)):
        sample = indexed[i]
        assert indexed.shape(i) == list(sample.video.shape) == list(b[sample.meta["clip_id"]].video.shape)
    cfg = load_config("tiny", ["t2i.data=videos", "t2i.batch_size=2"])
    batches = LatentBatches(indexed, load_negative(two), cfg.t2i)
    assert batches.buckets == [(3, 3, 5), (3, 4, 4)]
    assert {tuple(batches.next().latents.shape[1:]) for _ in range(6)} == {(3, 8, 3, 5), (3, 8, 4, 4)}

    run = mlflow.MlflowClient(models["tracking_uri"]).get_run(two["mlflow_run_id"])
    assert run.data.metrics["encode/bucket/17x32x32/samples"] == 4
    assert run.data.metrics["encode/bucket/17x24x40/samples"] == 3
    assert run.data.metrics["encode/skipped"] == 0


def test_a_corrupt_clip_is_skipped_with_its_reason_and_the_rest_are_encoded(models, tmp_path):
    clips = _clips_manifest(tmp_path / "clips", corrupt={1}, clips=CLIPS[:3])
    manifest = _encode(models, tmp_path / "run", clips, [])  # no buckets: every clip to 17 x 32x32
    summary = manifest["summary"]
    assert summary["samples"] == 2 and summary["buckets"] == {"17x32x32": 2}
    [skipped] = summary["skipped"]
    assert skipped["clip_id"] == "clip-1" and skipped["worker"] == 0 and skipped["reason"]
    assert sorted(_by_clip(manifest)) == ["clip-0", "clip-2"]
    run = mlflow.MlflowClient(models["tracking_uri"]).get_run(manifest["mlflow_run_id"])
    assert run.data.metrics["encode/skipped"] == 1 and run.data.metrics["encode/samples"] == 2


def test_a_failing_worker_fails_the_stage_naming_the_worker(models, tmp_path):
    clips = _clips_manifest(tmp_path / "clips", clips=CLIPS[:2])
    broken = {**models, "vae": {**models["vae"], "checkpoint_uri": str(tmp_path / "no-such-vae")}}
    with pytest.raises(StageError, match=r"encode: worker 0 of 2 failed: .*no-such-vae.*; worker 1 of 2 failed"):
        _encode(broken, tmp_path / "run", clips, ["encode.workers=2"])


def test_portrait_phone_video_curated_upright_is_encoded_in_a_portrait_bucket(models, tmp_path):
    # curate (output_keep_orientation) -> encode with buckets of both orientations: a phone's portrait
    # video gives portrait clips of its whole picture, which land in the portrait bucket, and a landscape
    # video's clips in the landscape one.
    from components.curate.stage import curate_shard, merge_manifests
    from tests.fixtures.curate_media import lavfi_frames, set_display_rotation, write_video

    raw = tmp_path / "raw"
    frames = lavfi_frames("testsrc2", (192, 108), 25, 1.6)
    write_video(raw / "landscape.mp4", frames)
    set_display_rotation(write_video(raw / "phone.mp4", frames), 90)  # shown 108 wide, 192 tall
    (raw / "metadata.jsonl").write_text(
        '{"file": "landscape.mp4", "video_id": "landscape", "title": "a wide clip"}\n'
        '{"file": "phone.mp4", "video_id": "phone", "title": "a tall clip"}\n'
    )
    cfg = load_config("tiny").curate.filters.model_copy(update={
        "output_height": 64, "output_width": 96, "output_keep_orientation": True, "output_fps": 25,
        "clip_min_frames": 17, "clip_max_frames": 20, "watermark_threshold": 1.0, "motion_max": 1000.0,
        "dedup_max_hamming": 0, "dedup_max_colour_distance": 0.0,  # the two show one picture: both kept
    })
    out = tmp_path / "curated"
    summary = curate_shard(raw, out, cfg)
    merge_manifests(out, [summary], cfg, str(raw))
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    videos = [k["clip_id"].split("-")[0] for k in kept]  # (clip ids are <video id>-<start>-<end>)
    assert set(videos) == {"landscape", "phone"}, kept
    clips = {
        "stage": "curate", "fingerprint": "test-e2e-orientation", "manifest_uri": str(out / "manifest.json"),
        "files": {
            **{f"shards/{p.name}": {"uri": str(p)} for p in sorted((out / "shards").glob("*.tar"))},
            "kept.jsonl": {"uri": str(out / "kept.jsonl")},
        },
    }
    manifest = _encode(models, tmp_path / "enc", clips, ['encode.buckets=["17x24x40", "17x40x24"]'])
    buckets = {s.meta["clip_id"].split("-")[0]: s.meta["bucket"] for s in load_latents(manifest)}
    assert buckets == {"landscape": "17x24x40", "phone": "17x40x24"}, buckets
    assert manifest["summary"]["buckets"] == {"17x24x40": videos.count("landscape"), "17x40x24": videos.count("phone")}
