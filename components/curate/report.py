"""Curation report: counts, drop reasons, and each filter's precision/recall against the planted truth.

:func:`evaluate` is the only place that reads the world's ``defects``: it compares the reasons the filters
gave (from pixels) with the defects the world generator planted in the scene each clip overlaps most.
:func:`write_report` renders a self-contained HTML page (no external assets, no timestamps, so re-running
gives the same file).
"""

from __future__ import annotations

import html
import json
import os
from array import array
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from components.curate.filters import DEFECT_REASONS
from t2v.config.curate import CurateConfig

CUT_TOLERANCE = 2  # frames


def _truth_scene(video: dict[str, Any], start: int, end: int) -> dict[str, Any] | None:
    best, best_overlap = None, 0
    for scene in video.get("scenes") or []:
        overlap = min(end, int(scene["end_frame"])) - max(start, int(scene["start_frame"]))
        if overlap > best_overlap:
            best, best_overlap = scene, overlap
    return best


def _pr(tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": tp + fn,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / (tp + fn), 4) if tp + fn else None,
    }


def evaluate(
    records: list[dict[str, Any]], scenes: list[dict[str, Any]], truth: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per-filter precision/recall (clip level), corrupt-file detection (video level), scene-cut
    precision/recall (within ``CUT_TOLERANCE`` frames) and caption agreement, against the world truth."""
    by_id = {str(v["video_id"]): v for v in truth}
    counts = {reason: [0, 0, 0] for reason in DEFECT_REASONS}
    caption_ok = caption_n = 0
    for r in records:
        if r["start_frame"] is None or "too_short" in r["drop_reasons"]:
            continue  # unreadable videos and scene remainders too short to be clips were never scored
        video = by_id.get(r["video_id"])
        scene = _truth_scene(video, r["start_frame"], r["end_frame"]) if video else None
        if scene is None:
            continue
        planted = set(scene.get("defects") or [])
        flagged = set(r["drop_reasons"])
        for reason in DEFECT_REASONS:
            c = counts[reason]
            if reason in flagged and reason in planted:
                c[0] += 1
            elif reason in flagged:
                c[1] += 1
            elif reason in planted:
                c[2] += 1
        caption_n += 1
        caption_ok += int(r.get("caption") == scene.get("caption"))
    filters_pr = {reason: _pr(*c) for reason, c in counts.items()}

    flagged_corrupt = {r["video_id"] for r in records if "corrupt" in r["drop_reasons"]}
    planted_corrupt = {str(v["video_id"]) for v in truth if v.get("corrupt")}
    corrupt = _pr(
        len(flagged_corrupt & planted_corrupt),
        len(flagged_corrupt - planted_corrupt),
        len(planted_corrupt - flagged_corrupt),
    )

    tp = fp = fn = 0
    for s in scenes:
        video = by_id.get(s["video_id"])
        if video is None:
            continue
        planted = sorted({int(sc["start_frame"]) for sc in video.get("scenes") or []} - {0})
        planted = [c for c in planted if c < s["num_frames"]]
        found = list(s["cuts"])
        matched_found = set()
        for c in planted:
            near = [i for i, f in enumerate(found) if abs(f - c) <= CUT_TOLERANCE and i not in matched_found]
            if near:
                matched_found.add(near[0])
                tp += 1
            else:
                fn += 1
        fp += len(found) - len(matched_found)
    cuts = _pr(tp, fp, fn)
    cuts["tolerance_frames"] = CUT_TOLERANCE

    return {
        "filters": filters_pr,
        "corrupt": corrupt,
        "scene_cuts": cuts,
        "caption_agreement": round(caption_ok / caption_n, 4) if caption_n else None,
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# Score -> the thresholds drawn on its histogram (config field names).
THRESHOLDS = {
    "brightness": ("dark_max_luma",),
    "sharpness": ("blur_min_sharpness",),
    "contrast": ("blur_min_contrast",),
    "motion": ("motion_min", "motion_max"),
    "border_fraction": ("border_min_fraction",),
    "subtitle": ("subtitle_threshold",),
    "watermark": ("watermark_threshold",),
    "saturation": ("saturation_max",),
    "ocr_text_area": ("ocr_text_max_area",),
    "ocr_subtitle_area": ("ocr_subtitle_max_area",),
    "ocr_corner_area": ("ocr_watermark_max_area",),
    "nsfw": ("nsfw_threshold",),
    "aesthetic": ("aesthetic_min",),
    "clip_similarity": ("clip_min_similarity",),
    "raft_motion": ("raft_motion_min",),
}


def histogram_png(name: str, values: list[float], thresholds: list[float], kept: list[bool]) -> str:
    """A histogram of one score over the clips (kept and dropped stacked) with its thresholds drawn, as
    a base64 PNG without metadata (the same data give the same bytes)."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arr = np.asarray(values, dtype=float)
    keep = np.asarray(kept, dtype=bool)
    lo, hi = float(arr.min()), float(arr.max())
    for t in thresholds:
        if np.isfinite(t) and abs(t) < 1e6:
            lo, hi = min(lo, t), max(hi, t)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 31)
    fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=80)
    ax.hist([arr[keep], arr[~keep]], bins=bins, stacked=True, color=["#4a8", "#c66"], label=["kept", "dropped"])
    for t in thresholds:
        if np.isfinite(t) and abs(t) < 1e6:
            ax.axvline(t, color="k", linestyle="--", linewidth=1.2)
    ax.set_title(name, fontsize=10)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


EXAMPLES_PER_GROUP = 6
#: Rows of the report's clip and rejected-video tables (the rest are in manifest.parquet).
TABLE_ROWS = 5000


class ReportData:
    """What the report shows of a run's records, gathered one record at a time (:meth:`add`, in
    canonical order): each threshold's score over the scored clips with their decisions, the first clips
    of each group (kept, and per drop reason) and the groups' sizes, the kept clips per concept, and the
    first ``TABLE_ROWS`` clips and rejected videos for the tables."""

    def __init__(self, per_group: int = EXAMPLES_PER_GROUP, table_rows: int = TABLE_ROWS):
        self.per_group, self.table_rows = per_group, table_rows
        self.values: dict[str, array] = {name: array("d") for name in THRESHOLDS}
        self.kept: dict[str, bytearray] = {name: bytearray() for name in THRESHOLDS}
        self.groups: dict[str, list[str]] = {"kept": []}
        self.group_sizes: Counter[str] = Counter()
        self.concepts: Counter[Any] = Counter()
        self.clip_rows: list[tuple[str, bool, list[str], Any, dict[str, Any]]] = []
        self.clips = 0
        self.score_keys: set[str] = set()
        self.bad_rows: list[tuple[str, Any]] = []
        self.bad = 0
        self.scored = 0

    def add(self, r: dict[str, Any]) -> None:
        if r["start_frame"] is None:
            self.bad += 1
            if len(self.bad_rows) < self.table_rows:
                self.bad_rows.append((r["video_id"], r.get("error")))
            return
        self.clips += 1
        scores = r.get("scores") or {}
        self.score_keys.update(scores)
        if r["keep"]:
            self.concepts[r["concept"]] += 1
        if len(self.clip_rows) < self.table_rows:
            self.clip_rows.append((r["clip_id"], bool(r["keep"]), list(r["drop_reasons"]), r["caption"], dict(scores)))
        if not scores:
            return
        self.scored += 1
        for name in THRESHOLDS:
            v = scores.get(name)
            if isinstance(v, (int, float)):
                self.values[name].append(float(v))
                self.kept[name].append(bool(r["keep"]))
        names = (["kept"] if r["keep"] else []) + [x for x in r["drop_reasons"] if x != "too_short"]
        for name in names:
            self.group_sizes[name] += 1
            shown = self.groups.setdefault(name, [])
            if len(shown) < self.per_group:
                shown.append(r["clip_id"])

    @classmethod
    def of(cls, records: Iterable[dict[str, Any]]) -> ReportData:
        data = cls()
        for r in records:
            data.add(r)
        return data

    def example_ids(self) -> set[str]:
        """The clips whose thumbnails the report shows: the first few kept, and per drop reason."""
        return {cid for ids in self.groups.values() for cid in ids}


def _histograms(data: ReportData, cfg: CurateConfig) -> list[str]:
    out = []
    for name, fields in THRESHOLDS.items():
        if not data.values[name]:
            continue
        thresholds = [float(getattr(cfg, f)) for f in fields]
        png = histogram_png(name, list(data.values[name]), thresholds, [bool(x) for x in data.kept[name]])
        drawn = ", ".join(f"{f} = {getattr(cfg, f)}" for f in fields)
        out.append(
            f"<figure style='display:inline-block;margin:4px'><img alt='{html.escape(name)}' "
            f"src='data:image/png;base64,{png}'><figcaption style='font-size:11px'>{html.escape(drawn)}"
            "</figcaption></figure>"
        )
    return out


def _examples(data: ReportData, thumbs: dict[str, str]) -> list[str]:
    out = []
    for name in ["kept", *sorted(k for k in data.groups if k != "kept")]:
        shown = [cid for cid in data.groups[name] if thumbs.get(cid)]
        if not shown:
            continue
        cells = "".join(
            f"<figure style='display:inline-block;margin:3px;font-size:10px'>"
            f"<img src='data:image/jpeg;base64,{thumbs[cid]}'><figcaption>{html.escape(cid)}"
            "</figcaption></figure>"
            for cid in shown
        )
        out.append(f"<h3>{html.escape(name)} ({data.group_sizes[name]})</h3><div>{cells}</div>")
    return out


def _costs(summary: dict[str, Any]) -> str:
    steps = summary.get("step_seconds") or {}
    total = sum(steps.values()) or 1.0
    rows = [[k, round(v, 3), round(100 * v / total, 1)] for k, v in sorted(steps.items(), key=lambda kv: -kv[1])]
    return _table(["step", "seconds (all shards)", "share %"], rows)


def write_report(
    path: Path,
    records: list[dict[str, Any]] | ReportData,
    summary: dict[str, Any],
    cfg: CurateConfig,
    thumbs: dict[str, str] | None = None,
) -> None:
    """Write the HTML report atomically, from the run's records or what :class:`ReportData` gathered
    of them."""
    data = records if isinstance(records, ReportData) else ReportData.of(records)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Curation report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
        ".drop{color:#a00}.keep{color:#070}</style></head><body>",
        "<h1>Curation report</h1>",
        "<h2>Counts</h2>",
        _table(
            ["videos", "rejected rows/videos", "clips", "kept", "dropped", "shards"],
            [
                [
                    summary["videos"],
                    summary.get("rejected", summary["corrupt"]),
                    summary["clips"],
                    summary["kept"],
                    summary["dropped"],
                    len(summary.get("shards") or []),
                ]
            ],
        ),
        "<h2>Drop reasons</h2><p>A clip can have several reasons; counts are per reason.</p>",
        _table(["reason", "clips"], [[k, v] for k, v in sorted(summary["dropped_by_reason"].items())]),
    ]
    ev = summary.get("evaluation")
    if ev:
        parts.append("<h2>Filters against the planted truth</h2>")
        parts.append(
            "<p>Clip level: a clip's truth is the defects planted in the world scene it overlaps most. "
            "The filters decide from pixels only.</p>"
        )
        rows = [
            [k, v["support"], v["tp"], v["fp"], v["fn"], v["precision"], v["recall"]]
            for k, v in ev["filters"].items()
        ]
        for name in ("corrupt", "scene_cuts"):
            v = ev[name]
            rows.append([name, v["support"], v["tp"], v["fp"], v["fn"], v["precision"], v["recall"]])
        parts.append(_table(["filter", "planted", "TP", "FP", "FN", "precision", "recall"], rows))
        parts.append(f"<p>Caption agreement with the scene's caption: {ev['caption_agreement']}</p>")
    rejected = summary.get("rejected_by_reason") or {}
    if rejected:
        parts.append("<h2>Rejected rows and videos</h2>")
        parts.append(_table(["reason", "rows"], [[k, v] for k, v in sorted(rejected.items())]))
    if data.scored:
        parts.append("<h2>Scores</h2><p>Each score over the clips (kept and dropped), thresholds dashed.</p>")
        parts.extend(_histograms(data, cfg))
    if thumbs:
        parts.append("<h2>Examples</h2><p>Middle frames of kept clips and of dropped clips per reason.</p>")
        parts.extend(_examples(data, thumbs))
    if summary.get("step_seconds"):
        parts.append("<h2>Costs</h2><p>Time per step, summed over the shards (models as model:*).</p>")
        parts.append(_costs(summary))
    parts.append(
        "<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.model_dump(), indent=1)) + "</pre>"
    )
    parts.append("<h2>Kept clips per concept</h2>")
    parts.append(_table(["concept", "kept"], [[k, v] for k, v in sorted(data.concepts.items())]))
    parts.append("<h2>Clips</h2>")
    if data.clips > len(data.clip_rows):
        parts.append(f"<p>The first {len(data.clip_rows)} of {data.clips} clips; every clip is in manifest.parquet.</p>")
    score_keys = sorted(data.score_keys)
    rows = [
        [cid, "keep" if keep else "drop", ", ".join(reasons), caption] + [scores.get(k) for k in score_keys]
        for cid, keep, reasons, caption, scores in data.clip_rows
    ]
    parts.append(_table(["clip", "decision", "reasons", "caption", *score_keys], rows))
    if data.bad_rows:
        parts.append("<h2>Unreadable videos</h2>")
        if data.bad > len(data.bad_rows):
            parts.append(f"<p>The first {len(data.bad_rows)} of {data.bad}; every one is in manifest.parquet.</p>")
        parts.append(_table(["video", "reason"], [list(row) for row in data.bad_rows]))
    parts.append("</body></html>\n")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(parts))
    os.replace(tmp, path)
