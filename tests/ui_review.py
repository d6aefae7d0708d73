"""Review a pipeline run in the MLflow UI as a person would, in headless Chromium, and keep screenshots.

    .venv/bin/python -m tests.ui_review --tracking-uri http://127.0.0.1:5000 --run-id <parent run id> --out shots/
    (or `make ui-review TRACKING_URI=... RUN_ID=...`)

It opens the parent run's page in the model-training view and reads what a reviewer reads there (the
description with the gate decision and scores, the headline metrics, the child runs, the registered model
versions), then the run's artifacts: the sample video's preview and the evaluation report with its videos.
Returns what it saw, so a test can check it; the screenshots (parent-run.png, sample.png, report.png) are
for a person to look at. Needs playwright (the dev extra) and Chromium (`make browser`).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

VIEW = "?workflowType=machine_learning"  # the MLflow UI's model-training view (not its GenAI one)


def _section(text: str, title: str, until: tuple[str, ...]) -> str:
    """The lines of the run page's ``title`` section, up to the next section title."""
    lines = text.splitlines()
    if title not in lines:
        return ""
    out = []
    for line in lines[lines.index(title) + 1 :]:
        if line in until or line.startswith(("Metrics (", "Parameters (")):
            break
        out.append(line)
    return "\n".join(out)[:2000]


def review_run(tracking_uri: str, run_id: str, out: Path, chromium: str | None = None) -> dict[str, Any]:
    import mlflow
    from playwright.sync_api import sync_playwright

    run = mlflow.MlflowClient(tracking_uri).get_run(run_id)
    base = tracking_uri.rstrip("/")
    url = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}{VIEW}"
    out.mkdir(parents=True, exist_ok=True)
    chromium = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    seen: dict[str, Any] = {"url": url}
    titles = ("Datasets", "Tags", "Registered models", "Description", "About this run", "Source", "Logged models",
              "MLflow Assistant")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_text("Registered models", exact=True).first.wait_for()
        close = page.get_by_role("button", name="Close")  # the assistant side panel, when it opens
        if close.count():
            close.first.click()
        more = page.get_by_role("button", name="Load more")
        while more.count():
            more.first.click()
            page.wait_for_timeout(500)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "parent-run.png"), full_page=True)
        text = page.inner_text("body")
        seen["view"] = "model training" if "Model registry" in text else "genai"
        seen["description"] = _section(text, "Description", titles)
        seen["registered_models"] = _section(text, "Registered models", titles)
        metrics_title = next((line for line in text.splitlines() if line.startswith("Metrics (")), "")
        seen["metrics"] = _section(text, metrics_title, titles) if metrics_title else ""
        links = page.locator("a").evaluate_all("as => as.map(a => [a.innerText.trim(), a.getAttribute('href') || ''])")
        seen["child_runs"] = sorted({name for name, href in links if "/runs/" in href and run_id not in href and name})

        page.get_by_role("tab", name="Artifacts").click()
        page.get_by_text("samples", exact=True).first.click()
        page.get_by_text("sample-00.gif", exact=True).first.click()
        shown = "Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.naturalWidth > 0)"  # the preview
        page.wait_for_function(f"{shown}.length > 0")
        seen["sample_width"] = page.evaluate(f"Math.max(...{shown}.map(i => i.naturalWidth))")
        page.screenshot(path=str(out / "sample.png"), full_page=True)

        page.get_by_text("evaluation", exact=True).first.click()
        page.get_by_text("report.html", exact=True).first.click()
        report = page.frame_locator("iframe").first
        report.get_by_text("Mean scores").wait_for()
        seen["report_images"] = report.locator("img").evaluate_all(
            "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length"
        )
        seen["report_text"] = report.locator("body").inner_text()[:4000]
        page.screenshot(path=str(out / "report.png"), full_page=True)
        browser.close()
    seen["screenshots"] = sorted(str(p) for p in out.glob("*.png"))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server (http://...)")
    parser.add_argument("--run-id", required=True, help="the pipeline's parent run")
    parser.add_argument("--out", default="ui-review", help="folder for the screenshots")
    args = parser.parse_args()
    seen = review_run(args.tracking_uri, args.run_id, Path(args.out))
    print(json.dumps({k: v for k, v in seen.items() if k != "report_text"}, indent=2))


if __name__ == "__main__":
    main()
