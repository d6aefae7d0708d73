"""Storage by URI: ``file://`` paths, plain local paths and ``s3://bucket/key`` objects; ``http(s)://``
URLs can be read (downloaded: :func:`download_file`, :func:`local_file_for`), not listed or written.

Every stage reads and writes through these functions, so the same code runs against a local folder
(the embedded default) and any S3 API (AWS, SeaweedFS, MinIO) in production.

Writes are atomic for readers:

* local files are written to a hidden temporary name in the same folder and renamed into place;
* S3 objects become visible only when a ``put_object`` / multipart upload completes, so a crashed upload
  never leaves a half-written object under its final key.

Stages write bulk data first and their JSON manifest last, so a manifest that exists always points at
complete data.

S3 settings come from the environment, never from configs: the usual ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` and ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``) for a non-AWS endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from t2v.errors import UserError


class StorageError(UserError, RuntimeError):
    """A storage operation failed; the message names the URI and the reason in one line. ``kind`` sorts
    a failed read: ``missing`` (no such file or object: HTTP 404 or 410) or ``unavailable`` (it may
    exist but could not be had: refused, HTTP 401/403 or a server error after the retries, the network),
    None where it is not said."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


def _is_http(uri: str | Path) -> bool:
    return str(uri).startswith(("http://", "https://"))


#: HTTP(S) downloads: seconds to connect and between bytes; attempts for a request that fails (a refused
#: connection, 408/429/5xx, honouring Retry-After) and for a body cut off part-way (resumed with a Range
#: request where the server accepts one); bytes per chunk (each one a progress callback).
HTTP_TIMEOUT_S = (10.0, 60.0)
HTTP_ATTEMPTS = 4
HTTP_BACKOFF_S = 0.5
HTTP_CHUNK = 1 << 16


def _http_session():
    """One requests session per process (connections kept alive; a forked child makes its own rather
    than share its parent's sockets), retrying failed requests: urllib3's ``Retry`` with exponential
    backoff on connection errors and on 408, 429, 500, 502, 503, 504."""
    pid = os.getpid()
    if _HTTP_SESSIONS.get("pid") != pid:
        _HTTP_SESSIONS.update(pid=pid, session=_new_http_session())
    return _HTTP_SESSIONS["session"]


_HTTP_SESSIONS: dict[str, Any] = {}


def _new_http_session():
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=HTTP_ATTEMPTS - 1, backoff_factor=HTTP_BACKOFF_S, status_forcelist=(408, 429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "HEAD"}), respect_retry_after_header=True, raise_on_status=False,
    )
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(max_retries=retry))
    session.headers["User-Agent"] = "t2v-curate (python-requests)"
    session.headers["Accept-Encoding"] = "identity"  # the file's own bytes: Content-Length counts them
    return session


def _http_name(uri: str) -> str:
    """A file name for a download of ``uri``: its path's last part, without query or fragment."""
    from urllib.parse import urlsplit

    name = unquote(urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1])
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-120:].lstrip(".")
    return name or "download"


def _range_starts_at(content_range: str | None, start: int) -> bool:
    """Whether a 206 answer's ``Content-Range: bytes a-b/n`` starts at byte ``start``."""
    try:
        unit, _, rest = (content_range or "").partition(" ")
        return unit == "bytes" and int(rest.split("-", 1)[0]) == start
    except ValueError:
        return False


def _http_download(uri: str, tmp: Path, progress: Callable[[int], None] | None) -> None:
    """GET ``uri`` into ``tmp`` in chunks. A body cut off part-way (the connection dropped, fewer bytes
    than its Content-Length) is asked for again, from where it stopped when the server accepts ranges
    (``Accept-Ranges: bytes``, answered 206) and from the start otherwise, up to ``HTTP_ATTEMPTS`` times."""
    import time

    import requests

    session = _http_session()
    have, last_error = 0, ""
    with open(tmp, "wb") as out:
        for attempt in range(HTTP_ATTEMPTS):
            if attempt:
                time.sleep(HTTP_BACKOFF_S * 2 ** (attempt - 1))
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with session.get(uri, stream=True, timeout=HTTP_TIMEOUT_S, headers=headers) as resp:
                    if resp.status_code in (404, 410):
                        raise StorageError(f"{uri}: HTTP {resp.status_code} {resp.reason}", kind="missing")
                    if resp.status_code not in (200, 206):
                        raise StorageError(f"{uri}: HTTP {resp.status_code} {resp.reason}", kind="unavailable")
                    if have and resp.status_code == 200:  # the range was not honoured: from the start
                        out.seek(0)
                        out.truncate()
                        have = 0
                    elif resp.status_code == 206 and not _range_starts_at(resp.headers.get("Content-Range"), have):
                        out.seek(0)  # another range than the one asked for: the next attempt from the start
                        out.truncate()
                        have, last_error = 0, f"asked for bytes from {have}, sent {resp.headers.get('Content-Range')}"
                        continue
                    length = resp.headers.get("Content-Length")
                    expected = have + int(length) if length and length.isdigit() else None
                    if expected is not None:
                        free = shutil.disk_usage(tmp.parent).free
                        if expected - have > free:
                            raise StorageError(
                                f"{uri}: {expected - have} bytes to download, {free} free on {tmp.parent}",
                                kind="unavailable",
                            )
                    for chunk in resp.iter_content(HTTP_CHUNK):
                        out.write(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(len(chunk))
                    if expected is None or have >= expected:
                        return
                    last_error = f"the connection closed after {have} of {expected} bytes"
            except requests.RequestException as exc:
                last_error = " ".join(str(exc).split()) or type(exc).__name__
            out.flush()
    raise StorageError(f"{uri}: download failed after {HTTP_ATTEMPTS} attempts ({last_error})", kind="unavailable")


def _is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def _split_s3(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of ``s3://bucket/key``. The key is taken as it is written: S3 keys may hold
    ``#``, ``?``, ``%`` and spaces, which are not a URL's fragment, query or escapes here."""
    bucket, _, key = str(uri)[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: an s3 URI needs a bucket (s3://bucket/key)")
    return bucket, key.lstrip("/")


def local_path(uri: str | Path) -> Path:
    """The local path of a ``file://`` URI or a plain path. Raises for s3 URIs."""
    uri = str(uri)
    if _is_s3(uri):
        raise StorageError(f"{uri}: not a local path")
    if uri.startswith("file://"):
        # A file URI is percent-encoded (as Path.as_uri and file_uri write it); '#' and '?' in one are
        # part of the name, not a fragment or a query.
        rest = uri[len("file://"):]
        if not rest.startswith("/"):  # file://host/path: only the local host is served
            host, _, rest = rest.partition("/")
            if host not in ("", "localhost"):
                raise StorageError(f"{uri}: a file URI on another host ({host})")
            rest = "/" + rest
        return Path(unquote(rest))
    if "://" in uri:
        raise StorageError(f"{uri}: unsupported URI scheme (use file://, s3:// or a local path)")
    return Path(uri)


def to_uri(path_or_uri: str | Path) -> str:
    """Normalise a local path or URI to a URI (``file:///abs/path`` or ``s3://...``)."""
    text = str(path_or_uri)
    if _is_s3(text) or text.startswith("file://"):
        return text.rstrip("/") if text not in ("s3://",) else text
    return Path(text).resolve().as_uri()


def file_uri_join(base: str, relative: str) -> str:
    """``relative`` (a plain path, taken literally: a name may hold ``#``, ``?``, ``%`` or spaces) under
    the URI ``base``: percent-encoded below a ``file://`` base, so that :func:`local_path` gives the name
    back, and below an ``http(s)://`` one, so that the server is asked for that name; as written below
    any other (an S3 key is the text itself)."""
    if str(base).startswith("file://") or _is_http(base):
        return join(base, quote(relative, safe="/"))
    return join(base, relative)


def join(uri: str, *parts: str) -> str:
    out = str(uri).rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


@functools.lru_cache(maxsize=4)
def _s3_client(endpoint_url: str | None):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
    )


def s3_client():
    """A boto3 S3 client honouring ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return _s3_client(endpoint)


@contextlib.contextmanager
def _s3_errors(uri: str, only: type | None = None) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise StorageError(
            f"{uri}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        ) from None
    except ClientError as exc:
        if only is not None and not isinstance(exc, only):
            raise
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        message = error.get("Message") or code
        raise StorageError(f"{uri}: {message} ({code})") from None
    except BotoCoreError as exc:
        raise StorageError(f"{uri}: {exc}") from None


def exists(uri: str) -> bool:
    if _is_s3(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = _split_s3(uri)
        try:
            with _s3_errors(uri, only=BotoCoreError):  # no credentials, no endpoint: one line naming the URI
                s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            with _s3_errors(uri):
                raise
    if _is_http(uri):  # a HEAD request (retried as a GET is): 404/410 is no such object
        import requests

        try:
            resp = _http_session().head(uri, timeout=HTTP_TIMEOUT_S, allow_redirects=True)
        except requests.RequestException as exc:
            raise StorageError(f"{uri}: {' '.join(str(exc).split())}", kind="unavailable") from None
        if resp.status_code in (404, 410):
            return False
        if resp.status_code >= 400:
            raise StorageError(f"{uri}: HTTP {resp.status_code} {resp.reason}", kind="unavailable")
        return True
    return local_path(uri).exists()


def read_bytes(uri: str) -> bytes:
    if _is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    path = local_path(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StorageError(f"{uri}: no such file") from None
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from None


def read_range(uri: str, start: int, length: int) -> bytes:
    """``length`` bytes of the object at ``uri`` from offset ``start`` (an HTTP range on S3, a seek locally)."""
    if _is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            body = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")["Body"]
            return body.read()
    try:
        with open(local_path(uri), "rb") as handle:
            handle.seek(start)
            data = handle.read(length)
    except FileNotFoundError:
        raise StorageError(f"{uri}: no such file") from None
    if len(data) != length:
        raise StorageError(f"{uri}: {length} bytes at {start} asked for, {len(data)} there")
    return data


@contextlib.contextmanager
def renamed_into_place(final: Path) -> Iterator[Path]:
    """A hidden temporary sibling of ``final`` to write; renamed onto ``final`` when the block ends
    cleanly (replacing what was there), removed when it raises. Readers see the old or the whole new."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.is_dir() and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _atomic_local_write(path: Path, data: bytes) -> None:
    with renamed_into_place(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_bytes(uri: str, data: bytes) -> None:
    if _is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    try:
        _atomic_local_write(local_path(uri), data)
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str):
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def write_json(uri: str, obj) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8"))


def upload_file(local: str | Path, uri: str) -> None:
    """Copy a local file to ``uri`` (multipart for large files on S3; atomic rename locally)."""
    local = Path(local)
    if _is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri):
            s3_client().upload_file(str(local), bucket, key)
        return
    dest = local_path(uri)
    if dest.resolve() == local.resolve():
        return
    try:
        with renamed_into_place(dest) as tmp:
            shutil.copyfile(local, tmp)
    except OSError as exc:
        raise StorageError(f"{uri}: {exc.strerror or exc}") from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(local: Path, uri: str) -> dict[str, Any]:
    """What a stage manifest records of one file it published: URI, sha256 and size."""
    return {"uri": uri, "sha256": sha256_file(local), "size": local.stat().st_size}


def upload_files(local_dir: str | Path, names: Iterable[str], uri_prefix: str) -> dict[str, dict[str, Any]]:
    """Upload ``local_dir/<name>`` to ``<uri_prefix>/<name>`` for each name, in the order given (bulk
    files first, small files last); returns the manifest entries (:func:`file_entry`) keyed by name."""
    local_dir = Path(local_dir)
    entries = {}
    for name in names:
        uri = join(uri_prefix, name)
        upload_file(local_dir / name, uri)
        entries[name] = file_entry(local_dir / name, uri)
    return entries


def download_file(uri: str, local: str | Path, progress: Callable[[int], None] | None = None) -> Path:
    """Copy ``uri`` to the local path ``local`` (renamed into place). ``progress(bytes)`` is called as
    chunks of an S3 object (boto3's transfer callback) or of an HTTP(S) body arrive."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if _is_s3(uri):
        bucket, key = _split_s3(uri)
        with _s3_errors(uri), renamed_into_place(local) as tmp:
            s3_client().download_file(bucket, key, str(tmp), Callback=progress)
        return local
    if _is_http(uri):
        with renamed_into_place(local) as tmp:
            _http_download(uri, tmp, progress)
        return local
    src = local_path(uri)
    if not src.exists():
        raise StorageError(f"{uri}: no such file")
    if src.resolve() != local.resolve():
        shutil.copyfile(src, local)
    return local


def list_uris(prefix: str) -> list[str]:
    """Every object (file) under ``prefix``, recursively, sorted. Hidden temporary files are skipped."""
    prefix = prefix.rstrip("/")
    if _is_http(prefix):
        raise StorageError(f"{prefix}: an http(s) URL cannot be listed (give a table of its videos)")
    if _is_s3(prefix):
        bucket, key = _split_s3(prefix)
        out: list[str] = []
        with _s3_errors(prefix):
            paginator = s3_client().get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=f"{key}/" if key else ""):
                out.extend(f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", []))
        return sorted(out)
    root = local_path(prefix)
    if not root.exists():
        return []
    base = prefix if "://" in prefix else to_uri(root)
    return sorted(
        join(base, str(path.relative_to(root)))
        for path in root.rglob("*")
        if path.is_file() and not path.name.startswith(".")
    )


def delete_prefix(prefix: str) -> None:
    """Remove every object under ``prefix`` (a folder locally); nothing there is not an error."""
    prefix = prefix.rstrip("/")
    if _is_s3(prefix):
        bucket, _ = _split_s3(prefix)
        keys = [_split_s3(uri)[1] for uri in list_uris(prefix)]
        with _s3_errors(prefix):
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": key} for key in keys[start : start + 1000]]
                s3_client().delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
        return
    shutil.rmtree(local_path(prefix), ignore_errors=True)


def upload_dir(local_dir: str | Path, uri_prefix: str) -> list[str]:
    """Upload every file under ``local_dir`` to ``uri_prefix`` keeping relative paths."""
    local_dir = Path(local_dir)
    written = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        uri = join(uri_prefix, str(path.relative_to(local_dir)))
        upload_file(path, uri)
        written.append(uri)
    return written


def download_dir(uri_prefix: str, local_dir: str | Path) -> Path:
    """Mirror every object under ``uri_prefix`` into ``local_dir`` (no-op when it is the same folder)."""
    local_dir = Path(local_dir)
    if not _is_s3(uri_prefix):
        src = local_path(uri_prefix)
        if not src.is_dir():
            raise StorageError(f"{uri_prefix}: no such folder")
        if src.resolve() == local_dir.resolve():
            return local_dir
    prefix = uri_prefix.rstrip("/")
    uris = list_uris(prefix)
    if not uris and _is_s3(prefix):
        raise StorageError(f"{uri_prefix}: no objects under this prefix")
    for uri in uris:
        download_file(uri, local_dir / uri[len(prefix) + 1 :])
    return local_dir


@contextlib.contextmanager
def local_dir_for(uri_prefix: str) -> Iterator[Path]:
    """A local folder holding the objects under ``uri_prefix``: the folder itself for local URIs, a
    temporary download for S3 (removed afterwards)."""
    if not _is_s3(uri_prefix):
        path = local_path(uri_prefix)
        if not path.is_dir():
            raise StorageError(f"{uri_prefix}: no such folder")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="t2v-dl-") as tmp:
        yield download_dir(uri_prefix, tmp)


@contextlib.contextmanager
def local_file_for(uri: str, progress: Callable[[int], None] | None = None) -> Iterator[Path]:
    """A local path holding the bytes at ``uri``: the file itself for local URIs, a temporary download for S3
    and HTTP(S) (``progress``: see :func:`download_file`)."""
    if not _is_s3(uri) and not _is_http(uri):
        path = local_path(uri)
        if not path.is_file():
            raise StorageError(f"{uri}: no such file")
        yield path
        return
    name = _http_name(uri) if _is_http(uri) else Path(_split_s3(uri)[1]).name
    with tempfile.TemporaryDirectory(prefix="t2v-dl-") as tmp:
        yield download_file(uri, Path(tmp) / name, progress)


@contextlib.contextmanager
def staged_output_dir(uri_prefix: str) -> Iterator[Path]:
    """A local folder to write a stage's outputs into; on clean exit its files are published under
    ``uri_prefix``. Locally the folder is a hidden sibling renamed into place, so readers never see a
    partial folder; on S3 every object is uploaded (each upload is atomic) by the caller's manifest-last
    discipline. On error nothing is published."""
    if _is_s3(uri_prefix):
        with tempfile.TemporaryDirectory(prefix="t2v-out-") as tmp:
            yield Path(tmp)
            upload_dir(tmp, uri_prefix)
        return
    with renamed_into_place(local_path(uri_prefix)) as tmp:
        tmp.mkdir()
        yield tmp
