"""The storage layer against a real S3 API: SeaweedFS's S3 gateway on loopback (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest

from t2v import storage

pytestmark = pytest.mark.s3


def test_s3_roundtrip_list_and_exists(s3_bucket):
    root = f"s3://{s3_bucket}/runs/r1"
    storage.write_json(storage.join(root, "stage", "manifest.json"), {"ok": True})
    storage.write_bytes(storage.join(root, "stage", "shards", "a.tar"), b"\x00" * 10)
    assert storage.read_json(storage.join(root, "stage", "manifest.json")) == {"ok": True}
    assert storage.exists(storage.join(root, "stage", "shards", "a.tar"))
    assert not storage.exists(storage.join(root, "stage", "missing"))
    assert storage.list_uris(storage.join(root, "stage")) == [
        f"{root}/stage/manifest.json",
        f"{root}/stage/shards/a.tar",
    ]


def test_s3_multipart_upload_and_dir_mirroring(s3_bucket, tmp_path):
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    payload = os.urandom(9 * 1024 * 1024)  # above boto3's 8 MiB multipart threshold
    big.write_bytes(payload)
    (tmp_path / "src" / "small.txt").write_text("hello")
    prefix = f"s3://{s3_bucket}/mirror"
    storage.upload_dir(tmp_path / "src", prefix)
    with storage.local_dir_for(prefix) as local:
        assert (local / "big.bin").read_bytes() == payload
        assert (local / "small.txt").read_text() == "hello"
    with storage.staged_output_dir(f"s3://{s3_bucket}/staged") as staging:
        (staging / "x.json").write_text("{}")
    assert storage.exists(f"s3://{s3_bucket}/staged/x.json")


def test_s3_errors_are_one_line(s3_server):
    with pytest.raises(storage.StorageError) as info:
        storage.read_bytes("s3://no-such-bucket-t2v/key")
    message = str(info.value)
    assert message.startswith("s3://no-such-bucket-t2v/key:") and "\n" not in message


def test_s3_keys_with_url_characters_are_keys_as_written(s3_bucket, tmp_path):
    # '#', '?', '%' and spaces in a key are the key's own characters, not a URL's fragment, query or
    # escapes (a video named after its title).
    names = ["clip #1?.mp4", "100% real.mp4", "a%20b.mp4", "dir with space/été.mp4"]
    for i, name in enumerate(names):
        storage.write_bytes(storage.file_uri_join(f"s3://{s3_bucket}/odd", name), bytes([i]) * 3)
    for i, name in enumerate(names):
        uri = storage.file_uri_join(f"s3://{s3_bucket}/odd", name)
        assert storage.exists(uri) and storage.read_bytes(uri) == bytes([i]) * 3, uri
    assert sorted(storage.list_uris(f"s3://{s3_bucket}/odd")) == sorted(f"s3://{s3_bucket}/odd/{n}" for n in names)
