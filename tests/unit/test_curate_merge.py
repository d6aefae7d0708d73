"""The streamed merge (components.curate.merge): the same outputs however the records lie in the shards
(one file or several, in table order or not), near-duplicates found across shards as within one, the
parquet table the same in row groups of any size, capped report tables, and the packed dedup equal to
the list one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.curate import dedup, filters, merge
from components.curate.stage import merge_manifests
from t2v.config import CurateConfig


def _records(n_videos: int = 40, seed: int = 0) -> list[dict]:
    """Clip records as a shard writes them: 3 clips a video, every 7th clip a near-copy of a clip of an
    earlier video, every 11th without thumbnails (no signature), one rejected video, too-short remainders."""
    rng = np.random.default_rng(seed)
    out, sigs = [], []
    for v in range(n_videos):
        if v == 5:
            out.append({"clip_id": f"v{v:03d}-corrupt", "video_id": f"v{v:03d}", "video_index": v, "uri": f"file:///v{v}.mp4",
                        "start_frame": None, "end_frame": None, "keep": False, "drop_reasons": ["corrupt"],
                        "error": "cannot open", "caption": None, "title": None, "scores": {}})
            continue
        for k in range(3):
            i = len(sigs)
            if i % 7 == 6 and i > 10:
                h, t = sigs[i - 9]
                h = h ^ (rng.random(h.shape) < 0.03)
            else:
                h, t = rng.random((5, 64)) < 0.5, rng.integers(-60, 60, (5, 8, 8, 3)).astype(np.int8)
            sigs.append((h, t))
            rec = {"clip_id": f"v{v:03d}-{k * 40:06d}-{k * 40 + 30:06d}", "video_id": f"v{v:03d}", "video_index": v,
                   "scene_index": k, "start_frame": k * 40, "end_frame": k * 40 + 30, "num_frames": 30, "fps": 25,
                   "height": 64, "width": 64, "keep": True, "drop_reasons": [], "caption": f"caption {i}",
                   "title": f"video {v}", "concept": f"concept {i % 4}", "spec": {"n": i}, "captions": {}, "scorers": {},
                   "scores": {"sharpness": float(rng.random()), "brightness": float(100 * rng.random()),
                              "motion": float(rng.random())},
                   "duplicate_of": None, "shard": f"shards/clips-{v % 3:03d}-0000.tar", "source": None, "license": None,
                   "phash": filters.hashes_to_hex(h)}
            if i % 11 != 3:
                rec["thumbs"] = filters.thumbnails_to_hex(t)
            out.append(rec)
            if k == 2:
                out.append({**{key: rec[key] for key in ("video_id", "video_index", "title")},
                            "clip_id": f"v{v:03d}-remainder", "start_frame": 110, "end_frame": 115, "num_frames": 5,
                            "keep": False, "drop_reasons": ["too_short"], "caption": None, "scores": {}})
    return out


def _write(folder: Path, records: list[dict], shards: int, reverse: set[int] = frozenset()) -> Path:
    folder.mkdir(parents=True)
    for s in range(shards):
        mine = [r for r in records if r["video_index"] % shards == s]
        if s in reverse:
            mine = mine[::-1]
        (folder / f"manifest-{s:03d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
        (folder / f"scenes-{s:03d}.jsonl").write_text("")
        (folder / f"done-{s:03d}.json").write_text(json.dumps({"summary": {"num_shards": shards, "seconds": 1.0}}))
    return folder


CFG = CurateConfig(concept_cap=20, balance_clusters=3, balance_cluster_cap=15)


def _outputs(folder: Path) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    for key in ("seconds", "num_shards", "shard_seconds"):
        summary.pop(key)
    return {"manifest": (folder / "manifest.jsonl").read_text(), "kept": (folder / "kept.jsonl").read_text(),
            "summary": summary, "parquet": pq.read_table(folder / "manifest.parquet").to_pylist()}


def test_the_merge_is_the_same_however_the_records_lie_in_the_shards(tmp_path):
    records = _records()
    folders = {"one": _write(tmp_path / "one", records, 1), "four": _write(tmp_path / "four", records, 4),
               "unordered": _write(tmp_path / "unordered", records, 3, reverse={1})}
    for folder in folders.values():
        merge_manifests(folder, cfg=CFG)
    one = _outputs(folders["one"])
    assert _outputs(folders["four"]) == one  # near-duplicates across shards are found as within one
    assert _outputs(folders["unordered"]) == one  # a shard out of table order is sorted
    got = [json.loads(x) for x in one["manifest"].splitlines()]
    assert [merge.canonical_key(r) for r in got] == sorted(merge.canonical_key(r) for r in got)
    dups = [r for r in got if "duplicate" in r["drop_reasons"]]
    assert len(dups) >= 3 and all(r["duplicate_of"] < r["clip_id"] for r in dups)
    s = one["summary"]
    assert s["dropped_by_reason"].get("concept_cap") and s["dropped_by_reason"].get("cluster_cap")
    assert s["rejected_by_reason"] == {"corrupt": 1} and s["too_short_segments"] == 39
    assert len(one["kept"].splitlines()) == s["kept"] == sum(r["keep"] for r in got if r["start_frame"] is not None)
    assert not list(folders["one"].glob(".merge-*"))  # the scratch folder is gone


def test_the_merge_finds_the_duplicates_the_list_search_finds(tmp_path):
    records = _records(seed=1)
    folder = _write(tmp_path / "m", records, 2)
    cfg = CurateConfig()
    merge_manifests(folder, cfg=cfg)
    got = {json.loads(x)["clip_id"]: json.loads(x) for x in (folder / "manifest.jsonl").read_text().splitlines()}
    clips = [r for r in records if merge.is_clip(r)]
    sigs = [(filters.hashes_from_hex(r["phash"], 64), filters.thumbnails_from_hex(r["thumbs"]),
             filters.sample_indices(r["num_frames"], 5)) if r.get("thumbs") else None for r in clips]
    want = dedup.find_duplicates(sigs, cfg)
    assert sum(m is not None for m in want) >= 3
    for r, m in zip(clips, want, strict=True):
        assert got[r["clip_id"]]["duplicate_of"] == (clips[m[0]]["clip_id"] if m else None)


def test_parquet_row_groups_hold_the_same_table(tmp_path):
    records = _records(n_videos=12)
    keys = {k for r in records for k in r.get("scores") or {}}
    tables = []
    for rows in (5, 10_000):
        writer = merge.ParquetRows(tmp_path / f"m{rows}.parquet", keys, rows=rows)
        for r in records:
            writer.add(r)
        writer.close()
        tables.append(pq.read_table(tmp_path / f"m{rows}.parquet"))
    assert tables[0].num_rows == len(records) and tables[0].to_pylist() == tables[1].to_pylist()
    assert pq.ParquetFile(tmp_path / "m5.parquet").num_row_groups > 1


def test_the_report_tables_are_capped_and_say_so(tmp_path):
    from components.curate import report

    records = _records()
    data = report.ReportData(table_rows=10)
    for r in records:
        data.add(r)
    summary = merge.SummaryCounts()
    for r in records:
        summary.add(r)
    report.write_report(tmp_path / "report.html", data, {**summary.summary(), "shards": []}, CurateConfig())
    html = (tmp_path / "report.html").read_text()
    assert f"The first 10 of {data.clips} clips" in html
    assert html.count("<tr>") < 60  # (a table row per clip would be 150 more)


def test_jsonl_blocks_read_every_record(tmp_path, monkeypatch):
    monkeypatch.setattr(merge, "JSONL_BLOCK", 3)
    path = tmp_path / "x.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" + ("\n" if i % 4 == 0 else "") for i in range(20)))
    assert [r["i"] for r in merge.read_jsonl(path)] == list(range(20))


@pytest.mark.parametrize("keys", [30, 1000])
def test_packed_search_equals_the_list_search(keys):
    rng = np.random.default_rng(keys)
    base = rng.random((keys // 10 + 1, 5, 64)) < 0.5
    which = rng.integers(0, len(base), keys)
    hashes = base[which] ^ (rng.random((keys, 5, 64)) < 0.04)
    thumbs = rng.integers(-60, 60, (len(base), 5, 8, 8, 3)).astype(np.int8)[which]
    sigs = [(h, t, np.arange(5) * 6.0) for h, t in zip(hashes, thumbs, strict=True)]
    cfg = CurateConfig(dedup_exact_max=200)  # the 1000-clip set goes through the inverted lists
    listed = dedup.find_duplicates(sigs, cfg)
    packed = dedup.find_duplicates_packed(
        np.packbits(hashes.reshape(-1, 64), axis=1), np.full(keys, 5), thumbs.reshape(-1, 8, 8, 3), np.full(keys, 5),
        np.tile(np.arange(5) * 6.0, keys), cfg)
    assert listed == packed and sum(m is not None for m in listed) > keys // 4


def test_a_new_batch_is_checked_against_the_clips_earlier_runs_kept(tmp_path):
    # Batch 1 curated and merged; batch 2 holds ten of its videos again (renamed: other ids, other rows)
    # and new ones. With dedup_against batch 1, the re-used clips batch 1 kept are dropped as duplicates
    # naming batch 1's manifest; those batch 1 dropped are not reference (nothing of them is in the data
    # set); the new ones are decided as without it; batch 1's clips are neither written nor counted.
    first = _records(n_videos=30, seed=3)
    run1 = _write(tmp_path / "run1", first, 2)
    merge_manifests(run1, cfg=CurateConfig())
    kept1 = {json.loads(x)["clip_id"] for x in (run1 / "kept.jsonl").read_text().splitlines()}
    again = [r for r in first if 10 <= r["video_index"] < 20]
    renamed = [{**r, "clip_id": "b2-" + r["clip_id"], "video_id": "b2-" + r["video_id"], "video_index": r["video_index"] + 100}
               for r in again]
    new = _records(n_videos=12, seed=4)
    batch2 = [{**r, "clip_id": "new-" + r["clip_id"], "video_id": "new-" + r["video_id"]} for r in new] + renamed
    alone, checked = _write(tmp_path / "alone", batch2, 2), _write(tmp_path / "checked", batch2, 2)
    merge_manifests(alone, cfg=CurateConfig())
    merge_manifests(checked, cfg=CurateConfig(dedup_against=[str(run1)]))
    a = {r["clip_id"]: r for r in map(json.loads, (alone / "manifest.jsonl").read_text().splitlines())}
    c = {r["clip_id"]: r for r in map(json.loads, (checked / "manifest.jsonl").read_text().splitlines())}
    assert set(a) == set(c)  # the same records: nothing of batch 1 is written
    # (a clip without thumbnails has no signature: nothing to compare)
    reference = {r["clip_id"][3:] for r in renamed if r.get("thumbs") and r["clip_id"][3:] in kept1}
    assert reference
    for cid, r in c.items():
        original = cid[3:]
        if cid.startswith("b2-") and original in reference and a[cid]["keep"]:
            assert "duplicate" in r["drop_reasons"] and not r["keep"], r
            assert r["duplicate_source"] == str(run1 / "manifest.jsonl")
            assert r["duplicate_of"] in kept1
        elif cid.startswith("new-"):
            assert (r["keep"], r["drop_reasons"], r.get("duplicate_of")) == (a[cid]["keep"], a[cid]["drop_reasons"], a[cid].get("duplicate_of"))
    assert sum(r.get("duplicate_source") is not None for r in c.values()) >= 10
    s_alone, s_checked = (json.loads((f / "summary.json").read_text()) for f in (alone, checked))
    assert s_checked["clips"] == s_alone["clips"] and s_checked["kept"] < s_alone["kept"]
    assert pq.read_table(checked / "manifest.parquet").column("duplicate_source").null_count < len(c)


def test_a_missing_earlier_run_is_refused_before_the_merge(tmp_path):
    folder = _write(tmp_path / "m", _records(n_videos=4), 1)
    with pytest.raises(Exception, match="dedup_against.*no such manifest"):
        merge_manifests(folder, cfg=CurateConfig(dedup_against=[str(tmp_path / "nowhere")]))
    assert not (folder / "manifest.jsonl").exists()
