"""Videos at http(s) URLs (t2v.storage): downloaded in chunks from a real HTTP server on loopback that
fails the ways servers and networks do -- a 503 before it answers, a connection dropped part-way through
the body (resumed with a Range request, or from the start where ranges are not served), 404, 403 -- and
curated from a table of URLs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from t2v import storage
from tests.fixtures.http_server import Server


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(storage, "HTTP_BACKOFF_S", 0.01)
    # a session made by an earlier test of this process would keep its own retries' backoff (0.5 s)
    monkeypatch.setattr(storage, "_HTTP_SESSIONS", {})
    s = Server()
    yield s
    s.close()


def _bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_a_download_is_the_servers_bytes_and_reports_its_progress(server, tmp_path):
    server.files["v.mp4"] = _bytes(3 * storage.HTTP_CHUNK + 123)
    seen = []
    with storage.local_file_for(f"{server.url}/v.mp4?token=abc", progress=seen.append) as path:
        assert path.read_bytes() == server.files["v.mp4"] and path.name == "v.mp4"
    assert sum(seen) == len(server.files["v.mp4"]) and len(seen) >= 4
    assert not path.exists()  # a temporary download


def test_a_server_error_is_retried_and_a_dropped_body_resumed_where_it_stopped(server, tmp_path):
    body = _bytes(32 * storage.HTTP_CHUNK + 7)
    server.files["v.mp4"] = body
    server.plan["v.mp4"] = ["503", "cut", "cut"]
    got = storage.download_file(f"{server.url}/v.mp4", tmp_path / "v.mp4")
    assert got.read_bytes() == body
    ranges = [r for name, r in server.seen if name == "v.mp4"]
    assert ranges[0] is None and ranges[1] is None  # the 503, then the first try of the body
    # resumed from the bytes it had written (whole chunks: a chunk cut off part-way is asked for again)
    starts = [int(r.split("=")[1].rstrip("-")) for r in ranges[2:]]
    assert len(starts) == 2 and 0 < starts[0] <= len(body) // 2 < starts[1] < len(body), ranges


def test_without_ranges_a_dropped_body_is_fetched_again_from_the_start(server, tmp_path):
    server.ranges = False
    body = _bytes(storage.HTTP_CHUNK + 99, seed=1)
    server.files["v.mp4"] = body
    server.plan["v.mp4"] = ["cut"]
    assert storage.download_file(f"{server.url}/v.mp4", tmp_path / "v.mp4").read_bytes() == body


def test_a_resumed_body_from_another_offset_is_not_appended(server, tmp_path):
    body = _bytes(8 * storage.HTTP_CHUNK + 5, seed=2)
    server.files["v.mp4"] = body
    server.plan["v.mp4"] = ["cut", "wrongrange"]
    assert storage.download_file(f"{server.url}/v.mp4", tmp_path / "v.mp4").read_bytes() == body
    ranges = [r for name, r in server.seen if name == "v.mp4"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[2] is None and len(ranges) == 3, ranges


def test_missing_refused_and_never_whole_are_errors_of_their_kind(server, tmp_path):
    server.files["cut.mp4"] = _bytes(1000)
    server.plan["cut.mp4"] = ["cut"] * storage.HTTP_ATTEMPTS
    server.files["secret.mp4"] = _bytes(10)
    server.plan["secret.mp4"] = ["403"]
    server.plan["down.mp4"] = ["503"] * storage.HTTP_ATTEMPTS
    server.files["down.mp4"] = _bytes(10)
    cases = {"gone.mp4": ("missing", "HTTP 404"), "secret.mp4": ("unavailable", "HTTP 403"),
             "down.mp4": ("unavailable", "HTTP 503"), "cut.mp4": ("unavailable", "after 4 attempts")}
    for name, (kind, said) in cases.items():
        with pytest.raises(storage.StorageError) as err:
            storage.download_file(f"{server.url}/{name}", tmp_path / name)
        assert err.value.kind == kind and said in str(err.value) and f"{server.url}/{name}" in str(err.value), err.value
        assert not (tmp_path / name).exists() and not list(tmp_path.glob(f".{name}*"))  # nothing half-written


def test_a_table_of_urls_is_curated_each_failure_recorded_and_the_unavailable_tried_again(server, tmp_path):
    from components.curate.stage import curate_shard
    from t2v.config import CurateConfig
    from tests.fixtures.curate_media import moving_pattern, write_video

    write_video(tmp_path / "a.mp4", moving_pattern(40))
    server.files["a.mp4"] = (tmp_path / "a.mp4").read_bytes()
    server.files["b.mp4"] = server.files["a.mp4"]
    server.plan["b.mp4"] = ["503", "cut"]  # curated all the same
    server.files["locked.mp4"] = b"x"
    server.plan["locked.mp4"] = ["403"]
    rows = [{"uri": f"{server.url}/{n}", "video_id": n.split(".")[0]} for n in ("a.mp4", "b.mp4", "gone.mp4", "locked.mp4")]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CurateConfig(clip_min_frames=8, clip_max_frames=16, scene_min_len=4, output_height=64, output_width=96)
    curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest-000.jsonl").read_text().splitlines()]
    by = {v: [r for r in records if r["video_id"] == v] for v in ("a", "b", "gone", "locked")}
    assert by["a"] and all(r["start_frame"] is not None for r in by["a"] + by["b"])
    assert [(r["start_frame"], r["end_frame"]) for r in by["a"]] == [(r["start_frame"], r["end_frame"]) for r in by["b"]]
    ((gone,), (locked,)) = by["gone"], by["locked"]
    assert gone["drop_reasons"] == ["missing"] and "HTTP 404" in gone["error"], gone
    assert locked["drop_reasons"] == ["unavailable"] and "HTTP 403" in locked["error"], locked
    assert list((tmp_path / "out" / "shards").glob(".work-000/videos/*.json"))  # kept for the retry

    server.seen.clear()  # unless asked not to
    assert curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg.model_copy(update={"retry_unavailable": False}))["skipped"]
    assert not server.seen
    # The shard's next run tries the refused video again (the server lets it through now), and only it:
    # the other videos, the missing one included, are the first run's results.
    server.files["locked.mp4"] = server.files["a.mp4"]
    server.seen.clear()
    summary = curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg)
    assert {name for name, _ in server.seen} == {"locked.mp4"}, server.seen
    assert "unavailable" not in summary["rejected_by_reason"], summary
    records = [json.loads(x) for x in (tmp_path / "out" / "manifest-000.jsonl").read_text().splitlines()]
    again = [r for r in records if r["video_id"] == "locked"]
    assert [(r["start_frame"], r["end_frame"]) for r in again] == [(r["start_frame"], r["end_frame"]) for r in by["a"]]
    assert not list((tmp_path / "out" / "shards").glob(".work-*"))
    server.seen.clear()
    assert curate_shard(tmp_path / "t.jsonl", tmp_path / "out", cfg).get("skipped") and not server.seen


def test_a_shard_whose_videos_are_mostly_unavailable_fails_and_its_retry_curates_only_those(server, tmp_path):
    # An outage (or a table of signed URLs that expired): two of three videos answer 503 through every
    # retry. The shard fails saying so rather than finishing with a third of its data; its retry, once the
    # server is back, asks only for those two.
    from components.curate.stage import curate_shard
    from t2v.config import CurateConfig
    from t2v.errors import StageError
    from tests.fixtures.curate_media import moving_pattern, write_video

    write_video(tmp_path / "a.mp4", moving_pattern(40))
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        server.files[name] = (tmp_path / "a.mp4").read_bytes()
    server.plan["b.mp4"] = ["503"] * 50
    server.plan["c.mp4"] = ["503"] * 50
    rows = [{"uri": f"{server.url}/{n}", "video_id": n.split(".")[0]} for n in ("a.mp4", "b.mp4", "c.mp4")]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CurateConfig(clip_min_frames=8, clip_max_frames=16, scene_min_len=4, output_height=64, output_width=96)
    out = tmp_path / "out"
    with pytest.raises(StageError, match=r"2 of 3 videos unavailable, more than max_unavailable_fraction \(0\.5\).*HTTP 503"):
        curate_shard(tmp_path / "t.jsonl", out, cfg)
    assert not (out / "done-000.json").exists() and not (out / "manifest-000.jsonl").exists()
    server.plan.clear()
    server.seen.clear()
    summary = curate_shard(tmp_path / "t.jsonl", out, cfg)
    assert sorted({name for name, _ in server.seen}) == ["b.mp4", "c.mp4"], server.seen
    assert summary["rejected"] == 0 and summary["clips"] > 0, summary
    # with the limit at 1, the same outage is recorded and the shard finishes
    server.plan.update({"b.mp4": ["503"] * 50, "c.mp4": ["503"] * 50})
    done = curate_shard(tmp_path / "t.jsonl", tmp_path / "out2", cfg.model_copy(update={"max_unavailable_fraction": 1.0}))
    assert done["rejected_by_reason"] == {"unavailable": 2}, done


def test_a_table_at_a_url_names_its_videos_relative_to_it(server, tmp_path):
    # A data set published as a folder on a web server: the table beside its videos, names relative to
    # it (one with a space and a '#', which the request must carry as the name, not as a fragment).
    from components.curate import inputs
    from tests.fixtures.curate_media import moving_pattern, write_video

    write_video(tmp_path / "a.mp4", moving_pattern(20))
    server.files["clips/take 1#a.mp4"] = (tmp_path / "a.mp4").read_bytes()
    server.files["clips/metadata.jsonl"] = (json.dumps({"file": "take 1#a.mp4", "title": "t"}) + "\n").encode()
    (row,) = inputs.iter_rows(inputs.resolve_table(f"{server.url}/clips"))
    assert row.uri == f"{server.url}/clips/take%201%23a.mp4", row
    with storage.local_file_for(row.uri) as path:
        assert path.read_bytes() == server.files["clips/take 1#a.mp4"] and path.name == "take_1_a.mp4"


def test_exists_asks_the_server_and_a_url_is_not_listed(server):
    server.files["t.jsonl"] = b"{}\n"
    assert storage.exists(f"{server.url}/t.jsonl") and not storage.exists(f"{server.url}/none.jsonl")
    server.plan["secret.jsonl"] = ["403"]
    with pytest.raises(storage.StorageError, match="HTTP 403"):
        storage.exists(f"{server.url}/secret.jsonl")
    with pytest.raises(storage.StorageError, match="cannot be listed"):
        storage.list_uris(f"{server.url}/clips")


def test_a_forked_process_makes_its_own_session(server):
    # (a pool worker forked after its parent downloaded the table must not share its kept-alive sockets)
    first = storage._http_session()
    assert storage._http_session() is first
    storage._HTTP_SESSIONS["pid"] = -1  # as a child sees its parent's
    assert storage._http_session() is not first


def test_https_is_verified_against_the_trusted_authorities(tmp_path, monkeypatch):
    # The same download over TLS: trusted through REQUESTS_CA_BUNDLE (how a pod is given a private
    # authority), and refused, as unavailable with the reason, where the certificate is not trusted.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setattr(storage, "HTTP_BACKOFF_S", 0.01)
    monkeypatch.setattr(storage, "_HTTP_SESSIONS", {})
    tls = Server(tls_folder=tmp_path / "tls")
    try:
        assert tls.url.startswith("https://")
        tls.files["v.mp4"] = _bytes(3 * storage.HTTP_CHUNK + 1, seed=5)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "tls" / "ca.pem"))
        got = storage.download_file(f"{tls.url}/v.mp4", tmp_path / "v.mp4")
        assert got.read_bytes() == tls.files["v.mp4"]
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(storage.StorageError) as err:
            storage.download_file(f"{tls.url}/v.mp4", tmp_path / "w.mp4")
        assert err.value.kind == "unavailable" and "CERTIFICATE_VERIFY_FAILED" in str(err.value).upper().replace(" ", "_")
    finally:
        tls.close()
