"""The evaluation report: one HTML page (``report/index.html``, GIFs beside it in ``report/videos/``),
logged to MLflow and linked from the evaluate run.

It shows the gate's decision and reasons, the sampler settings, each model's mean scores, champion vs
challenger (win / tie / loss, the win rate with its bootstrap interval), a table per category, a grid
of videos (challenger beside champion, same prompt and seed) and the per-prompt table.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if value == "":
        return "''"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]], css: str = "") -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='{css}'><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def render(summary: dict[str, Any], rows: list[dict[str, Any]], models: list[str], grid: list[dict[str, Any]]) -> str:
    """``summary``: the evaluate summary; ``rows``: per prompt (index, category, prompt, ``<model>.<metric>``);
    ``models``: the scored models in column order; ``grid``: ``{prompt, category, videos: {model: relative
    GIF path}}`` entries."""
    gate = "passed" if summary.get("gate_passed") else "not passed"
    notes = "; ".join(summary.get("gate_notes") or [])
    sampler = summary.get("sampler", {})
    parts = [
        f"<h1>Evaluation: {html.escape(str(summary.get('prompt_set')))} ({summary.get('prompts')} prompts)</h1>",
        f"<p class='gate {'ok' if summary.get('gate_passed') else 'fail'}'>gate <b>{gate}</b>"
        + ("" if summary.get("gate_passed") else f": {html.escape(str(summary.get('gate_reason')))}")
        + (f" ({html.escape(notes)})" if notes else "") + "</p>",
        "<p>sampler: " + ", ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in sampler.items()) + "</p>",
    ]
    means = summary.get("model_means", {})
    metric_names = sorted({k for m in means.values() for k in m})
    parts.append("<h2>Mean scores</h2>" + _table(["model", *metric_names], [[m, *[means[m].get(k) for k in metric_names]] for m in means], "means"))
    versus = summary.get("champion_comparison")
    if versus:
        low, high = versus["win_rate_ci95"]
        parts.append(
            f"<h2>Challenger vs champion</h2><p>win / tie / loss: {versus['wins']} / {versus['ties']} / {versus['losses']}; "
            f"win rate {versus['win_rate']:.3f} (95% bootstrap interval {low:.3f}–{high:.3f})</p>"
        )
        parts.append(_table(
            ["category", "prompts", "challenger", "champion", "delta"],
            [[c, d["prompts"], d["challenger"], d["champion"], d["delta"]] for c, d in versus["categories"].items()],
            "categories",
        ))
    else:
        by_category: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_category.setdefault(row["category"], []).append(row)
        score = summary.get("score_metric")
        if score:
            parts.append("<h2>By category</h2>" + _table(
                ["category", "prompts", *models],
                [[c, len(r), *[_mean([x.get(f"{m}.{score}") for x in r]) for m in models]] for c, r in by_category.items()],
                "categories",
            ))
    if grid:
        cells = []
        for entry in grid:
            figures = "".join(
                f"<figure><img src='{html.escape(path)}' alt='{html.escape(model)}'><figcaption>{html.escape(model)}</figcaption></figure>"
                for model, path in entry["videos"].items()
            )
            cells.append(f"<div class='cell'><p>{html.escape(entry['category'])}: {html.escape(entry['prompt'])}</p><div class='pair'>{figures}</div></div>")
        parts.append("<h2>Videos (same prompt and seed)</h2><div class='grid'>" + "".join(cells) + "</div>")
    keys = [k for k in rows[0] if k not in ("index", "category", "prompt")] if rows else []
    parts.append("<details><summary>Per prompt</summary>" + _table(
        ["#", "category", "prompt", *keys], [[r["index"], r["category"], r["prompt"], *[r.get(k) for k in keys]] for r in rows], "prompts"
    ) + "</details>")
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".gate.ok{color:#060}.gate.fail{color:#a00}.grid{display:flex;flex-wrap:wrap;gap:1em}"
        ".cell{border:1px solid #ddd;padding:.4em;flex:0 0 auto}.cell p{max-width:420px}.pair{display:flex;gap:.4em}"
        "figure{margin:0;text-align:center}img{width:128px;image-rendering:pixelated}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"


def _mean(values: list[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def self_contained(page: str, folder: Path) -> str:
    """The page with every image it links under ``folder`` embedded as a data: URI, for the MLflow UI,
    whose artifact view shows an HTML file without the files beside it."""
    import base64
    import re

    def embed(match: re.Match) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"src='data:image/gif;base64,{data}'"

    return re.sub(r"src='([^':]+\.gif)'", embed, page)
