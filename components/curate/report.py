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
from collections import Counter
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


def write_report(
    path: Path,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    cfg: CurateConfig,
    thumbs: dict[str, str] | None = None,
) -> None:
    """Write the HTML report atomically."""
    clips = [r for r in records if r["start_frame"] is not None]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Curation report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
        ".drop{color:#a00}.keep{color:#070}</style></head><body>",
        "<h1>Curation report</h1>",
        "<h2>Counts</h2>",
        _table(
            ["videos", "corrupt videos", "clips", "kept", "dropped", "shards"],
            [
                [
                    summary["videos"],
                    summary["corrupt"],
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
    parts.append(
        "<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.model_dump(), indent=1)) + "</pre>"
    )
    concepts = Counter(r["concept"] for r in clips if r["keep"])
    parts.append("<h2>Kept clips per concept</h2>")
    parts.append(_table(["concept", "kept"], [[k, v] for k, v in sorted(concepts.items())]))
    parts.append("<h2>Clips</h2>")
    score_keys = sorted({k for r in clips for k in r["scores"]})
    rows = [
        [r["clip_id"], "keep" if r["keep"] else "drop", ", ".join(r["drop_reasons"]), r["caption"]]
        + [r["scores"].get(k) for k in score_keys]
        for r in clips
    ]
    parts.append(_table(["clip", "decision", "reasons", "caption", *score_keys], rows))
    bad = [r for r in records if r["start_frame"] is None]
    if bad:
        parts.append("<h2>Unreadable videos</h2>")
        parts.append(_table(["video", "reason"], [[r["video_id"], r.get("error")] for r in bad]))
    parts.append("</body></html>\n")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(parts))
    os.replace(tmp, path)
