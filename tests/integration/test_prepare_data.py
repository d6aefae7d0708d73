"""prepare-data with videos of one's own (``source.kind: uri``): the prefix's own table in any of the
curate stage's formats, or, with no table, every video file under it listed as one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.framework import catalog
from components.framework.context import StageContext
from t2v import storage, tracking
from t2v.config import load_config
from tests.fixtures.curate_media import lavfi_frames, write_video


def _prepare(root: Path, raw_uri: str, overrides: list[str] = ()) -> dict:
    cfg = load_config("tiny", ["source.kind=uri", f"source.raw_uri={raw_uri}", *overrides])
    uri = f"sqlite:///{root}/mlflow.db"
    parent = tracking.start_parent_run(uri, "test-prepare", root.name, tags={}, artifact_location=(root / "art").as_uri())
    ctx = StageContext(config=cfg, run_root=str(root / "run"), tracking_uri=uri, parent_run_id=parent)
    return catalog.get("prepare-data")(ctx)


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory) -> Path:
    """A phone dump: videos at any depth, under names as they come, beside files that are not videos."""
    root = tmp_path_factory.mktemp("own") / "videos"
    frames = lavfi_frames("testsrc2", (96, 64), 25, 1.2)
    for name in ("beach.mp4", "2024/trip #1/IMG_0001.MOV", "2024/trip #1/clip two.mkv"):
        write_video(root / name, frames)
    (root / "notes.txt").write_text("not a video")
    (root / ".DS_Store").write_bytes(b"\0\1")
    write_video(root / ".thumbnails" / "hidden.mp4", frames)  # a hidden folder is not the user's videos
    return root


def test_a_folder_without_a_table_is_curated_from_a_listing(own_videos, tmp_path):
    from components.curate.stage import curate_shard

    raw = _prepare(tmp_path, own_videos.as_uri())
    assert raw["summary"]["raw_videos"] == 3 and raw["summary"]["raw_indexed"] is True
    rows = [json.loads(x) for x in storage.read_text(raw["raw_uri"]).splitlines()]
    assert [Path(r["uri"]).relative_to(own_videos).as_posix() for r in rows] == [
        "2024/trip #1/IMG_0001.MOV", "2024/trip #1/clip two.mkv", "beach.mp4",
    ]
    cfg = load_config("tiny").curate.filters.model_copy(
        update={"output_height": 64, "output_width": 96, "clip_min_frames": 8, "watermark_threshold": 1.0}
    )
    curate_shard(raw["raw_uri"], tmp_path / "curated", cfg)
    records = [json.loads(x) for x in (tmp_path / "curated" / "manifest-000.jsonl").read_text().splitlines()]
    assert not [r for r in records if r["start_frame"] is None], [r["error"] for r in records if r["start_frame"] is None]
    assert len({r["video_id"] for r in records}) == 3


def test_the_prefix_table_in_the_format_curate_is_told_to_read(own_videos, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "with-table"
    folder.mkdir()
    (folder / "beach.mp4").write_bytes((own_videos / "beach.mp4").read_bytes())
    pq.write_table(pa.table({"file": ["beach.mp4", "gone.mp4"], "title": ["a beach", "a missing one"]}), folder / "videos.parquet")
    raw = _prepare(tmp_path, folder.as_uri(), ["curate.filters.input_table=videos.parquet"])
    assert raw["raw_uri"] == folder.as_uri() and raw["summary"]["raw_videos"] == 2
    assert raw["summary"]["raw_table"] == storage.join(folder.as_uri(), "videos.parquet")
    assert "raw_indexed" not in raw["summary"]


@pytest.mark.s3
def test_an_s3_prefix_without_a_table_is_listed(own_videos, tmp_path, s3_bucket):
    prefix = f"s3://{s3_bucket}/phone"
    storage.upload_dir(own_videos, prefix)
    raw = _prepare(tmp_path, prefix)
    rows = [json.loads(x)["uri"] for x in storage.read_text(raw["raw_uri"]).splitlines()]
    assert rows == [f"{prefix}/2024/trip #1/IMG_0001.MOV", f"{prefix}/2024/trip #1/clip two.mkv", f"{prefix}/beach.mp4"]


def test_a_web_folder_with_a_table_is_handed_on_and_one_without_is_refused(own_videos, tmp_path, monkeypatch):
    from tests.fixtures.http_server import Server

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = Server()
    try:
        server.files["set/beach.mp4"] = (own_videos / "beach.mp4").read_bytes()
        server.files["set/metadata.jsonl"] = b'{"file": "beach.mp4"}\n{"file": "gone.mp4"}\n'
        raw = _prepare(tmp_path / "a", f"{server.url}/set")
        assert raw["raw_uri"] == f"{server.url}/set" and raw["summary"]["raw_videos"] == 2
        with pytest.raises(storage.StorageError, match="cannot be listed"):
            _prepare(tmp_path / "b", f"{server.url}/empty")
    finally:
        server.close()
