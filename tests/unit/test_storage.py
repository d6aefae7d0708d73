"""Storage by URI: local paths and file:// URIs here; the same calls against a real S3 API server are in
tests/integration/test_storage_s3.py."""

from __future__ import annotations

import os

import pytest

from t2v import storage


def test_write_read_json_roundtrip_and_atomic_tempfiles(tmp_path):
    uri = storage.to_uri(tmp_path / "a" / "b.json")
    assert uri.startswith("file://")
    storage.write_json(uri, {"x": 1, "y": [1, 2]})
    assert storage.read_json(uri) == {"x": 1, "y": [1, 2]}
    # nothing but the final file is left behind
    assert os.listdir(tmp_path / "a") == ["b.json"]


def test_join_list_and_exists(tmp_path):
    root = storage.to_uri(tmp_path)
    for name in ("x/1.txt", "x/2.txt", "x/sub/3.txt"):
        storage.write_text(storage.join(root, name), name)
    uris = storage.list_uris(storage.join(root, "x"))
    assert [u.rsplit("/x/", 1)[1] for u in uris] == ["1.txt", "2.txt", "sub/3.txt"]
    assert storage.exists(storage.join(root, "x", "1.txt"))
    assert not storage.exists(storage.join(root, "x", "nope.txt"))
    assert storage.list_uris(storage.join(root, "missing")) == []


def test_missing_file_is_a_one_line_storage_error(tmp_path):
    uri = storage.to_uri(tmp_path / "nope.json")
    with pytest.raises(storage.StorageError) as info:
        storage.read_json(uri)
    assert "nope.json" in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_names_the_uri(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(storage.StorageError, match="bad.json: not valid JSON"):
        storage.read_json(str(path))


def test_unknown_scheme_rejected():
    with pytest.raises(storage.StorageError, match="unsupported URI scheme"):
        storage.read_bytes("gs://bucket/key")


def test_staged_output_dir_publishes_only_on_success(tmp_path):
    target = storage.to_uri(tmp_path / "out")
    with pytest.raises(RuntimeError):
        with storage.staged_output_dir(target) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir()]  # the hidden staging folder is gone too
    with storage.staged_output_dir(target) as staging:
        (staging / "whole.bin").write_bytes(b"y")
    assert (tmp_path / "out" / "whole.bin").read_bytes() == b"y"


def test_upload_and_download_dir_mirror_relative_paths(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.bin").write_bytes(b"123")
    (src / "g.txt").write_text("g")
    dest = storage.to_uri(tmp_path / "remote")
    written = storage.upload_dir(src, dest)
    assert len(written) == 2
    back = storage.download_dir(dest, tmp_path / "back")
    assert (back / "d" / "f.bin").read_bytes() == b"123"
    assert (back / "g.txt").read_text() == "g"
