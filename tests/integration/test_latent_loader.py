"""The trainer's latent reader: samples fetched by ranged reads through the encode stage's shard index,
the same as the whole-shard reader, on local files and on a real S3 API, in memory that does not grow
with the data set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from t2v import storage
from t2v.shards import IndexedLatents, load_latents
from t2v.world.latents import write_synthetic_latents

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _latents(root, samples: int, size: int = 4, frames: int = 2):
    return write_synthetic_latents(root, samples=samples, frames=frames, channels=8, height=size, width=size,
                                   llm_tokens=6, llm_channels=16, clip_tokens=4, clip_channels=8, shard_size=7)


def _same(a, b) -> None:
    assert a.key == b.key and a.meta == b.meta
    for field in ("video", "image", "clip_states", "clip_mask", "llm_states", "llm_mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_indexed_samples_equal_the_whole_shard_reader(tmp_path):
    manifest = _latents(tmp_path, 17)
    whole = load_latents(manifest)
    indexed = IndexedLatents.from_manifest(manifest)
    assert len(indexed) == 17 and len({r["shard"] for r in indexed.records}) == 3
    for i in (0, 6, 7, 16):  # first, last of a shard, first of the next, the very last
        _same(indexed[i], whole[i])
    assert indexed.records[3]["shape"] == [2, 8, 4, 4]
    good = indexed.where(lambda r: r["quality"] >= 0.75)
    assert 0 < len(good) < 17 and all(s.meta["quality"] >= 0.75 for s in (good[i] for i in range(len(good))))


def test_a_manifest_without_an_index_falls_back_and_a_wrong_index_is_named(tmp_path):
    manifest = _latents(tmp_path, 3)
    assert IndexedLatents.from_manifest({k: v for k, v in manifest.items() if k != "index_uri"}) is None
    broken = dict(manifest, files={})
    with pytest.raises(Exception, match="lists no shards"):
        IndexedLatents.from_manifest(broken)


@pytest.mark.s3
def test_indexed_reads_over_s3_are_ranged_reads_of_the_shards(tmp_path, s3_bucket):
    manifest = _latents(tmp_path / "local", 9)
    prefix = f"s3://{s3_bucket}/encode"
    storage.upload_dir(tmp_path / "local", prefix)
    remote = dict(manifest, index_uri=f"{prefix}/latents.index.jsonl",
                  files={k: {"uri": f"{prefix}/{k}"} for k in manifest["files"]})
    local, over_s3 = IndexedLatents.from_manifest(manifest), IndexedLatents.from_manifest(remote)
    for i in range(9):
        _same(over_s3[i], local[i])


MEASURE = r"""
import json, sys, psutil
from trainer.train import resident_peak
from t2v.config import load_config
from t2v.shards import IndexedLatents, load_latents, load_negative
from trainer.data import LatentBatches
manifest = json.loads(open(sys.argv[1]).read()); how = sys.argv[2]
base = psutil.Process().memory_info().rss
source = IndexedLatents.from_manifest(manifest) if how == "indexed" else load_latents(manifest)
cfg = load_config("tiny").t2i.model_copy(update={"batch_size": 4, "data": "videos"})
batches = LatentBatches(source, load_negative(manifest), cfg)
for _ in range(30):
    batches.next()
peak = resident_peak()
print(json.dumps({"grew_mib": (peak - base) / 2**20}))
"""


@pytest.mark.slow
def test_resident_memory_does_not_grow_with_the_data_set(tmp_path):
    grew = {}
    for scale in (1, 10):
        manifest = _latents(tmp_path / f"x{scale}", 24 * scale, size=48, frames=4)  # 288 KiB video latents
        path = tmp_path / f"x{scale}.json"
        path.write_text(json.dumps(manifest))
        for how in ("indexed", "whole"):
            out = subprocess.run([sys.executable, "-c", MEASURE, str(path), how], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=REPO, MALLOC_MMAP_THRESHOLD_="65536"))
            grew[how, scale] = json.loads(out.stdout.strip().splitlines()[-1])["grew_mib"]
    print({f"{how} x{scale}": round(v, 1) for (how, scale), v in grew.items()})
    assert grew["indexed", 10] < grew["indexed", 1] + 8  # flat: the index is ~0.3 KiB a sample
    assert grew["whole", 10] > grew["whole", 1] + 40  # the whole-set reader holds ~75 MiB more (and can fail this)
