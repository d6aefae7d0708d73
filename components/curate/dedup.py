"""Near-duplicate search and concept balancing that scale: a faiss index instead of pairwise comparison.

**Near-duplicates.** A clip's signature is the ``imagehash`` perceptual hashes and CIELAB thumbnails of
the same ``dedup_frames`` evenly spaced frames, with their frame indices
(:func:`components.curate.filters.clip_signature`). Candidates come from a faiss index over *every* frame
hash of every clip, each key pointing back to its clip, queried with every frame hash: a re-used shot cut
a few frames off the original, or one whose hashes flip bits, still meets it at some pair of frames. A 0/1
bit vector's squared L2 distance is its Hamming distance, so the index is a float one (``IndexFlatL2``
up to ``dedup_exact_max`` keys, an ``IndexIVFFlat`` trained with a fixed seed on one thread above).
A candidate is a duplicate when the mean, over its frame hashes, of the Hamming distance to the closest
frame hash of the other is at most ``dedup_max_hamming`` and its thumbnails, lined up in time with the
other's at the offset that fits best, differ by at most ``dedup_max_colour_distance``
(:func:`sequence_colour_distance`): single frames that look alike are not enough, the sequence has to
agree. The index can only miss a pair (in the IVF case, when no frame's neighbours lie in the probed
lists), never invent one.

**Balancing.** :func:`cluster_cap` clusters the kept clips' embeddings (the colour thumbnails, or a CLIP
model's image features when one is given) with faiss k-means (fixed seed) and keeps at most
``balance_cluster_cap`` clips per cluster, the sharpest first.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from components.curate import filters
from t2v.config.curate import CurateConfig

log = logging.getLogger(__name__)

Signature = tuple[np.ndarray, ...]  # (hashes [K, bits], thumbnails [K, g, g, 3], frame indices [K])


def _single_thread():
    import faiss

    class _Ctx:
        def __enter__(self):
            self.n = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)

        def __exit__(self, *exc):
            faiss.omp_set_num_threads(self.n)

    return _Ctx()


#: Frame hashes turned into float keys, added and searched at a time: the index's own copy of the keys is
#: the only one held whole (the search's distances and neighbours, and the pairs, come a chunk at a time).
KEY_CHUNK = 1 << 16


def _chunks(n: int) -> list[tuple[int, int]]:
    """``[start, end)`` bounds of ``KEY_CHUNK`` rows; a short tail joins the chunk before it (faiss's flat
    search takes batches under 20 queries another way, whose order among equal distances may differ)."""
    starts = list(range(0, n, KEY_CHUNK))
    if len(starts) > 1 and n - starts[-1] < 32:
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def _index(bits: np.ndarray, cfg: CurateConfig):
    """A faiss index over the 0/1 frame hashes ``bits`` ([keys, bits] bool; as float vectors, squared L2
    is Hamming): exhaustive up to ``dedup_exact_max`` keys, inverted lists above. (A binary index,
    Hamming by popcount, measured slower here: its coarse quantizer and list assignment are not batched
    as the float ones are.)"""
    import faiss

    n, d = bits.shape
    if n <= cfg.dedup_exact_max:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = max(16, int(4 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = 1234
        rng = np.random.default_rng(0)
        train = bits[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))].astype(np.float32)
        with _single_thread():  # the same lists on every machine
            index.train(train)
        index.nprobe = cfg.dedup_nprobe
    for s, e in _chunks(n):
        index.add(bits[s:e].astype(np.float32))
    return index


def _candidate_pairs(index, bits: np.ndarray, owner: np.ndarray, k: int, limit: float) -> np.ndarray:
    """Every (clip, earlier clip) pair with a frame hash of one among the ``k`` nearest of a frame hash of
    the other within ``limit`` bits, sorted and unique ([pairs, 2])."""
    found = [np.empty((0, 2), dtype=np.int64)]
    for s, e in _chunks(len(bits)):
        dist, nbr = index.search(bits[s:e].astype(np.float32), k)
        theirs = np.where(nbr >= 0, owner[np.maximum(nbr, 0)], -1)
        mine = np.repeat(owner[s:e, None], k, axis=1)
        ok = (nbr >= 0) & (theirs < mine) & (dist <= limit + 1e-3)
        found.append(np.unique(np.stack([mine[ok], theirs[ok]], axis=1), axis=0))
    return np.unique(np.concatenate(found), axis=0)


def _times(sig: Signature, count: int) -> np.ndarray:
    """The frame indices of a signature's thumbnails (0, 1, 2... when it does not say)."""
    return np.asarray(sig[2], dtype=np.float64) if len(sig) > 2 else np.arange(count, dtype=np.float64)


def sequence_colour_distance(a: np.ndarray, ta: np.ndarray, b: np.ndarray, tb: np.ndarray) -> float:
    """How far two clips' colour thumbnails are as *sequences*: at the time offset that fits best, each
    thumbnail of ``a`` is compared with the one of ``b`` nearest in time (within half a sampling step),
    by its largest CIELAB cell difference, and the median of the differences is taken. An offset counts only when
    at least half of the shorter clip's thumbnails find a counterpart: a copy agrees frame for frame in
    order, and a cut a few frames off the original's shifts the offset, not the agreement; two different
    pans over look-alike pictures match here and there, at no single offset. Returns ``inf`` when no
    offset overlaps enough."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    cell = np.sqrt(((fa[:, None] - fb[None]) ** 2).sum(-1))  # [Ka, Kb, g, g]
    d = cell.reshape(len(a), len(b), -1).max(-1)  # [Ka, Kb]
    step = max(float(np.median(np.diff(ta))) if len(ta) > 1 else 1.0,
               float(np.median(np.diff(tb))) if len(tb) > 1 else 1.0, 1.0)
    need = (min(len(a), len(b)) + 1) // 2
    offsets = np.unique(tb[None, :] - ta[:, None])  # every offset that lines up a pair of sampled frames
    target = ta[None, :] + offsets[:, None]  # [offsets, Ka]: where each frame of a falls in b
    j = np.clip(np.searchsorted(tb, target), 1, len(tb) - 1) if len(tb) > 1 else np.zeros(target.shape, int)
    if len(tb) > 1:
        j = np.where(np.abs(tb[j - 1] - target) <= np.abs(tb[j] - target), j - 1, j)
    near = np.abs(tb[j] - target) <= step / 2 + 1e-6
    ok = near.sum(1) >= need
    if not ok.any():
        return float("inf")
    # the median over the frames lined up: a stray frame (a flash, a cut detected a frame late) that is
    # in one clip and not the other does not break the agreement of the rest
    per = np.where(near, d[np.arange(len(a))[None, :], j], np.nan)[ok]
    return float(np.nanmedian(per, axis=1).min())


def _pair_hash_distances(
    packed: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, pairs: np.ndarray, chunk: int = 4096
) -> np.ndarray:
    """:func:`components.curate.filters.hash_distance` of many clip pairs at once: ``packed`` holds every
    frame hash as bytes, ``rows_a[c]`` / ``rows_b[c]`` the rows of clip ``c``'s hashes."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        ha = packed[rows_a[p[:, 0]]]  # [P, Ka, bytes]
        hb = packed[rows_b[p[:, 1]]]
        x = np.bitwise_count(ha[:, :, None, :] ^ hb[:, None, :, :]).sum(-1, dtype=np.int32)  # [P, K, K]
        out[s : s + chunk] = x.min(axis=2).mean(axis=1)
    return out


def find_duplicates(signatures: list[Signature | None], cfg: CurateConfig) -> list[tuple[int, float, float] | None]:
    """For each clip (in canonical order): (index of the first earlier clip it duplicates, hash
    distance, colour distance), or None."""
    out: list[tuple[int, float, float] | None] = [None] * len(signatures)
    live = [i for i, s in enumerate(signatures) if s is not None]
    if len(live) < 2:
        return out
    bits = {signatures[i][0].shape[1] for i in live}
    if len(bits) != 1:
        raise ValueError(f"signatures mix hash sizes {sorted(bits)}")
    hashes = [signatures[i][0] for i in live]
    counts = np.array([len(h) for h in hashes])
    flat = np.concatenate(hashes)
    # Every frame hash is a key pointing back to its clip, and every one is a query: a re-used shot cut a
    # few frames off the original (or a hash that flips bits on a low-contrast picture) still meets the
    # original at some pair of frames.
    owner = np.repeat(np.arange(len(live)), counts)
    k = min(cfg.dedup_neighbours + int(counts.max()), len(flat))  # a clip's own frames are among its hits
    limit = cfg.dedup_max_hamming
    # Candidate pairs (clip, earlier clip with one frame hash close enough), vectorised, in order.
    pairs = _candidate_pairs(_index(flat, cfg), flat, owner, k, limit)
    if not len(pairs):
        return out
    # The exact hash test on every candidate at once (clips grouped by their number of frame hashes).
    packed = np.packbits(flat, axis=1)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dh = np.full(len(pairs), np.inf)
    for ca in np.unique(counts):
        for cb in np.unique(counts):
            sel = (counts[pairs[:, 0]] == ca) & (counts[pairs[:, 1]] == cb)
            if not sel.any():
                continue
            ra = first[:, None] + np.arange(ca)[None, :]
            rb = first[:, None] + np.arange(cb)[None, :]
            p = pairs[sel]
            dh[sel] = _pair_hash_distances(packed, ra, rb, p)
    for (i, j), h in zip(pairs.tolist(), dh.tolist(), strict=True):
        if h > limit or out[live[i]] is not None:
            continue  # pairs are sorted by (clip, earlier clip): the first that confirms is kept
        si, sj = signatures[live[i]], signatures[live[j]]
        dt = sequence_colour_distance(si[1], _times(si, len(si[1])), sj[1], _times(sj, len(sj[1])))
        if dt <= cfg.dedup_max_colour_distance:
            out[live[i]] = (live[j], round(float(h), 3), round(dt, 3))
    return out


def embedding(rec: dict[str, Any]) -> np.ndarray | None:
    """A clip's balancing embedding: its CLIP image features when a model gave them, else its colour
    thumbnails (mean over frames, flattened)."""
    if rec.get("embedding"):
        return np.asarray(rec["embedding"], dtype=np.float32)
    if not rec.get("thumbs"):
        return None
    return filters.thumbnails_from_hex(rec["thumbs"]).astype(np.float32).mean(axis=0).ravel()


def cluster_cap(records: list[dict[str, Any]], cfg: CurateConfig) -> dict[str, Any]:
    """k-means over the kept clips' embeddings; at most ``balance_cluster_cap`` kept per cluster (the
    sharpest first, ties by clip id), the others dropped as ``cluster_cap``. Every kept clip gets its
    ``cluster``. Returns the cluster sizes before and after."""
    import faiss

    kept = [r for r in records if r["keep"]]
    if not cfg.balance_clusters or len(kept) < 2:
        return {}
    vecs = [embedding(r) for r in kept]
    pairs = [(r, v) for r, v in zip(kept, vecs, strict=True) if v is not None]
    if len(pairs) < 2:
        return {}
    x = np.stack([v for _, v in pairs]).astype(np.float32)
    k = min(cfg.balance_clusters, len(pairs))
    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=1234, verbose=False)
    with _single_thread():
        km.train(x)
    _, labels = km.index.search(x, 1)
    groups: dict[int, list[dict[str, Any]]] = {}
    for (r, _), label in zip(pairs, labels[:, 0], strict=True):
        r["cluster"] = int(label)
        groups.setdefault(int(label), []).append(r)
    before = {c: len(g) for c, g in sorted(groups.items())}
    cap = cfg.balance_cluster_cap or len(pairs)
    for g in groups.values():
        g.sort(key=lambda r: (-float(r["scores"].get("sharpness", 0.0)), r["clip_id"]))
        for r in g[cap:]:
            r["keep"] = False
            r["drop_reasons"].append("cluster_cap")
    after = {c: sum(1 for r in g if r["keep"]) for c, g in sorted(groups.items())}
    return {"clusters": k, "sizes_before": before, "sizes_after": after}
