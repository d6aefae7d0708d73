"""The curate stage's input: a table of video URIs (JSONL, CSV or parquet), read in parts, sharded by a
stable hash.

A row names its video by ``uri`` (``s3://...``, ``http(s)://...``, ``file://...``, an absolute path) or ``file`` / ``path``
(relative to the table's folder); everything else in the row (``video_id``, ``title``, ``source``,
``license``, and the synthetic world's ``scenes``...) is metadata carried into the manifest. The
synthetic world's ``metadata.jsonl`` is one such table.

The table is streamed: JSONL and CSV line by line, parquet batch by batch, so a shard task holds only its
own rows. A row goes to shard ``sha256(key) mod num_shards``, its key the URI relative to the table's
folder (the whole URI for a video elsewhere, :func:`location_key`): stable across runs, machines, table
orders and a table moved with its videos, and two rows with the same URI always land in the same shard,
where the second one is recorded as ``duplicate_uri``. A line that is not valid JSON (or a row without a video) becomes a ``bad_metadata`` row
with its line number and reason, in the shard its text hashes to: every line of the table ends up in
exactly one shard's manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from t2v import storage

URI_KEYS = ("uri", "url", "file", "path", "video")
TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
PARQUET_BATCH = 65_536


@dataclass(frozen=True)
class InputRow:
    """One table row: ``index`` is its row number in the table (0-based, the canonical order)."""

    index: int
    video_id: str
    uri: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # a bad row: its one-line reason
    kind: str | None = None  # bad_metadata | duplicate_uri


def shard_of(key: str, num_shards: int) -> int:
    """The shard a key (a video URI) belongs to: the first 8 bytes of its SHA-256, mod ``num_shards``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % num_shards


def location_key(uri: str, base: str) -> str:
    """What a video's shard and default id are hashed from: its URI relative to the table's folder
    ``base`` when it lies under it, else the whole URI. The same URI always gives the same key, and a
    table copied to another folder or bucket with its videos keeps its shards and ids."""
    prefix = base.rstrip("/") + "/"
    if not uri.startswith(prefix):
        return uri
    rest = uri[len(prefix):]
    # (a file URI's name is percent-encoded: the key is the name, as it was before names were encoded)
    return unquote(rest) if uri.startswith("file://") else rest


def resolve_table(source: str | Path, name: str = "metadata.jsonl") -> str:
    """The table's URI: ``source`` itself when it names a table file, else ``source/name``."""
    text = str(source)
    if text.lower().endswith(TABLE_SUFFIXES):
        return storage.to_uri(text) if "://" not in text else text
    return storage.join(storage.to_uri(text) if "://" not in text else text, name)


def _parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


def resolve_uri(value: str, base: str) -> str:
    """A row's video location as a URI: absolute ones as they are, relative ones under the table's folder."""
    value = value.strip()
    if "://" in value:
        return value
    if value.startswith("/"):
        return storage.to_uri(value)
    return storage.file_uri_join(base, value)


def _video_id(meta: dict[str, Any], uri: str, base: str) -> str:
    if meta.get("video_id") not in (None, ""):
        return str(meta["video_id"])
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", uri.rsplit("/", 1)[-1].rsplit(".", 1)[0])[:40] or "video"
    return f"{stem}-{hashlib.sha256(location_key(uri, base).encode()).hexdigest()[:8]}"


def _rows_jsonl(handle) -> Iterator[tuple[int, dict | None, str | None, str]]:
    index = 0
    for lineno, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8", errors="replace"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            err = None if isinstance(row, dict) else f"line {lineno}: not a JSON object"
        except json.JSONDecodeError as exc:
            row, err = None, f"line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        yield index, (row if err is None else None), err, line.strip()
        index += 1


def _rows_csv(handle) -> Iterator[tuple[int, dict | None, str | None, str]]:
    reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline=""))
    for index, row in enumerate(reader):
        if None in row:  # more cells than the header has columns
            yield index, None, f"line {reader.line_num}: {len(row[None])} cells more than the header", str(row)
            continue
        yield index, {k: v for k, v in row.items() if v not in (None, "")}, None, ""


def _rows_parquet(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH):
        for row in batch.to_pylist():
            yield index, {k: v for k, v in row.items() if v is not None}, None, ""
            index += 1


def iter_rows(table_uri: str) -> Iterator[InputRow]:
    """Every row of the table, in order, without holding the table: good rows with their resolved URI,
    bad ones with their reason (``duplicate_uri`` is not decided here: see :func:`shard_rows`)."""
    base = _parent(table_uri)
    suffix = table_uri.lower().rsplit(".", 1)[-1]
    with ExitStack() as stack:
        local = stack.enter_context(storage.local_file_for(table_uri))
        if suffix == "parquet":
            rows = _rows_parquet(Path(local))
        else:
            handle = stack.enter_context(open(local, "rb"))
            rows = _rows_csv(handle) if suffix == "csv" else _rows_jsonl(handle)
        for index, row, err, text in rows:
            if err is not None:
                yield InputRow(index, f"row-{index:09d}", None, {"line": text[:200]}, err, "bad_metadata")
                continue
            value = next((row[k] for k in URI_KEYS if isinstance(row.get(k), str) and row[k].strip()), None)
            if value is None and row.get("video_id") not in (None, ""):
                value = f"{row['video_id']}.mp4"  # the world's convention: <video_id>.mp4 beside the table
            if value is None:
                yield InputRow(
                    index, f"row-{index:09d}", None, row, f"row {index}: no {'/'.join(URI_KEYS)} field", "bad_metadata"
                )
                continue
            uri = resolve_uri(value, base)
            yield InputRow(index, _video_id(row, uri, base), uri, row)


def shard_rows(table_uri: str, shard_index: int, num_shards: int) -> list[InputRow]:
    """The rows of one shard, in table order; a URI seen before in the table becomes ``duplicate_uri``."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    out: list[InputRow] = []
    first: dict[str, int] = {}
    ids: dict[str, int] = {}
    base = _parent(table_uri)
    for row in iter_rows(table_uri):
        key = location_key(row.uri, base) if row.uri is not None else f"bad:{row.index}:{row.meta.get('line', '')}"
        if shard_of(key, num_shards) != shard_index:
            continue
        if row.uri is not None and row.uri in first:
            row = InputRow(
                row.index,
                f"{row.video_id}-dup{row.index}",
                row.uri,
                row.meta,
                f"row {row.index}: duplicate of row {first[row.uri]} ({row.uri})",
                "duplicate_uri",
            )
        elif row.uri is not None:
            first[row.uri] = row.index
            if row.video_id in ids:  # two URIs, one id: keep ids unique (clip ids derive from them)
                row = InputRow(row.index, f"{row.video_id}-{row.index}", row.uri, row.meta)
            ids[row.video_id] = row.index
        out.append(row)
    return out
