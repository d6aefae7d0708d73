"""Human preference labels for Video-DPO: a labelling sheet out, the raters' labels back in.

A sheet is a folder:

    sheet.html        every pair's two videos side by side, with the prompt and the pair id
    labels.csv        one row per pair: pair_id, prompt, video_a, video_b, suggested, preferred, rater, note
    videos/<pair>-a.mp4, <pair>-b.mp4
    pairs.npz         the pairs' clean latents and text states, so the labels can be trained on later

A rater (or several) fills ``preferred`` with ``a``, ``b`` or ``tie`` (a blank row is not labelled yet);
``suggested`` is the automatic reward's choice, there to be overruled. Several rows for one pair (one per
rater) are counted as votes: the majority side wins, a tie or an even split drops the pair.
:func:`read_labels` checks every row and names the bad ones; :func:`labelled_pairs` turns the votes into
(pair id, preferred side).
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("pair_id", "prompt", "video_a", "video_b", "suggested", "preferred", "rater", "note")
SIDES = ("a", "b", "tie")


class LabelsError(ValueError):
    """A labels file that cannot be read as the sheet it claims to be; the message names the row."""


@dataclass(frozen=True)
class SheetPair:
    pair_id: str
    prompt: str
    video_a: str  # path relative to the sheet folder
    video_b: str
    suggested: str = ""  # a, b, tie or "" (no automatic reward)


def write_sheet(folder: Path, pairs: list[SheetPair], title: str = "Which video fits the prompt better?") -> tuple[Path, Path]:
    """Write ``sheet.html`` and ``labels.csv`` for ``pairs`` (their videos already under ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for pair in pairs:
        writer.writerow({"pair_id": pair.pair_id, "prompt": pair.prompt, "video_a": pair.video_a, "video_b": pair.video_b,
                         "suggested": pair.suggested, "preferred": "", "rater": "", "note": ""})
    labels = folder / "labels.csv"
    labels.write_text(buffer.getvalue(), encoding="utf-8")
    rows = "".join(
        f"<section class='pair' id='{html.escape(p.pair_id)}'><h2>{html.escape(p.pair_id)}</h2>"
        f"<p class='prompt'>{html.escape(p.prompt)}</p><div class='videos'>"
        f"<figure><video src='{html.escape(p.video_a)}' controls loop muted autoplay></video><figcaption>a</figcaption></figure>"
        f"<figure><video src='{html.escape(p.video_b)}' controls loop muted autoplay></video><figcaption>b</figcaption></figure>"
        "</div></section>"
        for p in pairs
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:1em}.videos{display:flex;gap:1em}"
        "video{width:256px;image-rendering:pixelated;background:#000}figure{margin:0;text-align:center}"
        ".pair{border-top:1px solid #ccc;padding:.5em 0}.prompt{font-style:italic}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(pairs)} pairs. For each pair write <b>a</b>, <b>b</b> or "
        "<b>tie</b> in the <code>preferred</code> column of <code>labels.csv</code> (one row per pair and rater; "
        "add rows for more raters).</p>"
        f"{rows}</body></html>"
    )
    sheet = folder / "sheet.html"
    sheet.write_text(page, encoding="utf-8")
    return sheet, labels


@dataclass(frozen=True)
class Label:
    pair_id: str
    preferred: str  # a, b or tie
    rater: str = ""


def read_labels(text: str, known_pairs: set[str] | None = None) -> list[Label]:
    """The labelled rows of a filled ``labels.csv`` (blank ``preferred``: skipped). LabelsError naming
    the row for a missing column, an unknown pair or a value other than a / b / tie."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("pair_id", "preferred") if c not in (reader.fieldnames or [])]
    if missing:
        raise LabelsError(f"labels: missing column(s) {missing}; expected {list(COLUMNS)}")
    labels = []
    for line, row in enumerate(reader, start=2):
        pair_id = (row.get("pair_id") or "").strip()
        value = (row.get("preferred") or "").strip().lower()
        if not value:
            continue
        if value not in SIDES:
            raise LabelsError(f"labels line {line}: preferred {row.get('preferred')!r} must be a, b or tie")
        if known_pairs is not None and pair_id not in known_pairs:
            raise LabelsError(f"labels line {line}: pair {pair_id!r} is not on this sheet")
        labels.append(Label(pair_id, value, (row.get("rater") or "").strip()))
    return labels


def labelled_pairs(labels: list[Label]) -> list[tuple[str, str]]:
    """(pair id, ``a`` or ``b``) for every pair whose votes have a strict majority side, in pair order."""
    votes: dict[str, Counter] = {}
    for label in labels:
        votes.setdefault(label.pair_id, Counter())[label.preferred] += 1
    out = []
    for pair_id in sorted(votes):
        count = votes[pair_id]
        if count["a"] > count["b"] and count["a"] > count["tie"]:
            out.append((pair_id, "a"))
        elif count["b"] > count["a"] and count["b"] > count["tie"]:
            out.append((pair_id, "b"))
    return out
