"""The evaluation report renders in headless Chromium: its tables are there and every video of the grid
(challenger beside champion) has loaded; the screenshot is kept for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.evaluate import compare, report
from t2v.video import write_gif

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian package chromium; `make env` installs it as root)")


def _video(colour, step: int) -> np.ndarray:
    video = np.full((8, 32, 32, 3), 90, np.uint8)
    for t in range(8):
        video[t, 10:20, 2 + step * t : 12 + step * t] = colour
    return video


def _page(folder: Path) -> Path:
    prompts = ["a red square moving right on gray", "a blue square moving right on gray", "a green square moving right on gray"]
    categories = ["Animals", "Animals", "Food"]
    grid, rows = [], []
    for i, (prompt, colour) in enumerate(zip(prompts, [(220, 30, 30), (30, 30, 220), (30, 200, 30)])):
        videos = {}
        for name, step in (("challenger", 2), ("champion", 1)):
            relative = f"videos/{i:03d}-{name}.gif"
            write_gif(folder / relative, _video(colour, step), 8)
            videos[name] = relative
        grid.append({"prompt": prompt, "category": categories[i], "videos": videos})
        rows.append({"index": i, "category": categories[i], "prompt": prompt,
                     "challenger.checker_total": 0.8 - 0.1 * i, "champion.checker_total": 0.7})
    challenger = [r["challenger.checker_total"] for r in rows]
    champion = [r["champion.checker_total"] for r in rows]
    summary = {
        "prompts": 3, "prompt_set": "heldout", "gate_passed": True, "gate_reason": "passed",
        "gate_notes": ["champion 0.700, delta +0.000"], "sampler": {"num_steps": 25, "guidance_scale": 4.0, "seed": 1234},
        "model_means": {"challenger": {"checker_total": float(np.mean(challenger))}, "champion": {"checker_total": 0.7}},
        "champion_comparison": compare.compare(categories, challenger, champion, 0.01, 500),
        "score_metric": "checker_total",
    }
    page = folder / "index.html"
    page.write_text(report.render(summary, rows, ["challenger", "champion"], grid), encoding="utf-8")
    return page


def test_the_report_shows_its_tables_and_every_video_in_chromium(tmp_path):
    page = _page(tmp_path / "report")
    shot = Path(os.environ.get("T2V_REPORT_SCREENSHOT", tmp_path / "report.png"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        try:
            view = browser.new_page(viewport={"width": 1100, "height": 900})
            view.goto(page.as_uri())
            view.wait_for_load_state("load")
            images = view.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.complete && e.naturalWidth])")
            category_rows = view.eval_on_selector_all("table.categories tbody tr", "els => els.map(e => e.innerText)")
            text = view.inner_text("body")
            view.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert len(images) == 6 and all(width == 32 for _, width in images), images  # 3 prompts x (challenger, champion)
    assert [src for src, _ in images][:2] == ["videos/000-challenger.gif", "videos/000-champion.gif"]
    assert len(category_rows) == 2 and category_rows[0].startswith("Animals")
    assert "win / tie / loss: 1 / 1 / 1" in text and "gate passed" in text
    assert shot.stat().st_size > 10_000
