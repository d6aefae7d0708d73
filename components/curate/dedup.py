"""Near-duplicate search and concept balancing that scale: a faiss index instead of pairwise comparison.

**Near-duplicates.** A clip's signature is the ``imagehash`` perceptual hashes of 5 of its frames and
CIELAB thumbnails of 3 (:func:`components.curate.filters.clip_signature`). A clip duplicates an earlier
one when the mean, over its frame hashes, of the Hamming distance to the closest frame hash of the other
is at most ``dedup_max_hamming`` and their thumbnails differ by at most ``dedup_max_colour_distance``.
Candidates come from a faiss index over one hash per clip (its middle frame), queried with every frame
hash of every clip for its ``dedup_neighbours`` nearest entries: a 0/1 bit vector's squared L2 distance is
its Hamming distance, so the index is a float one (``IndexFlatL2`` while the corpus is small, an
``IndexIVFFlat`` trained with a fixed seed on one thread above ``dedup_exact_max`` clips). Every
candidate is then checked with the exact test, so the index can only miss a pair (in the IVF case, when
the clip's neighbours lie in lists that are not probed), never invent one.

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

Signature = tuple[np.ndarray, np.ndarray]


def _single_thread():
    import faiss

    class _Ctx:
        def __enter__(self):
            self.n = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)

        def __exit__(self, *exc):
            faiss.omp_set_num_threads(self.n)

    return _Ctx()


def _index(keys: np.ndarray, cfg: CurateConfig):
    import faiss

    n, d = keys.shape
    if n <= cfg.dedup_exact_max:
        index = faiss.IndexFlatL2(d)
    else:
        nlist = max(16, int(4 * math.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = 1234
        rng = np.random.default_rng(0)
        train = keys[np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))]
        with _single_thread():  # the same lists on every machine
            index.train(train)
        index.nprobe = cfg.dedup_nprobe
    index.add(keys)
    return index


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
    keys = np.stack([h[len(h) // 2] for h in hashes]).astype(np.float32)  # one entry per clip
    queries = np.concatenate(hashes).astype(np.float32)
    owner = np.repeat(np.arange(len(live)), [len(h) for h in hashes])
    k = min(cfg.dedup_neighbours, len(live))
    index = _index(keys, cfg)
    dist, nbr = index.search(queries, k)
    limit = cfg.dedup_max_hamming
    # Candidate pairs (clip, earlier clip with one frame hash close enough), vectorised, in order.
    mine = np.repeat(owner[:, None], k, axis=1)
    ok = (nbr >= 0) & (nbr < mine) & (dist <= limit + 1e-3)
    pairs = np.unique(np.stack([mine[ok], nbr[ok]], axis=1), axis=0) if ok.any() else np.zeros((0, 2), int)
    candidates: dict[int, list[int]] = {}
    for i, j in pairs.tolist():
        candidates.setdefault(i, []).append(j)
    for i, js in candidates.items():
        h, t = signatures[live[i]]
        for j in js:
            hj, tj = signatures[live[j]]
            dh = filters.hash_distance(h, hj)
            if dh > limit:
                continue
            dt = filters.thumbnail_distance(t, tj)
            if dt <= cfg.dedup_max_colour_distance:
                out[live[i]] = (live[j], round(float(dh), 3), round(dt, 3))
                break
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
