"""Model-based curate scores: the packaged OCR text detector and NSFW detector, and the plugins that load
a user's model folder (aesthetic head on CLIP, CLIP alignment, a BLIP captioner), each recorded with its
name and version in the manifest. Models are tiny and random (saved in their libraries' formats), except
the two detectors that ship inside their wheels."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

from components.curate.models import NsfwDetector, TextDetector
from components.curate.stage import curate_shard
from t2v.config import CurateConfig
from tests.fixtures.curate_media import burn_text, lavfi_frames, write_video
from tests.fixtures.curate_models import save_aesthetic, save_tiny_blip


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def plain():
    return lavfi_frames("mandelbrot", (192, 108), 25, 1.6)


def test_text_detector_finds_burnt_in_subtitles(plain):
    det = TextDetector(CurateConfig(ocr=True))
    clean = det.score(plain)
    subbed = det.score(burn_text(plain, "where are we going now"))
    logo = det.score(burn_text(plain, "NEWS 24", where="corner"))
    assert clean["ocr_text_area"] < 0.002, clean
    assert subbed["ocr_subtitle_area"] > 0.01, subbed
    assert logo["ocr_text_area"] > 0.003 and logo["ocr_subtitle_area"] < 0.002, logo


def test_nsfw_detector_runs_and_stays_low_on_patterns(plain):
    # No explicit test image is planted (none is shipped with a package); the benign patterns score ~0.
    assert NsfwDetector(CurateConfig(nsfw=True)).score(plain)["nsfw"] < 0.2


@pytest.mark.slow  # loads five models (~30 s on 2 shared cores)
def test_curate_with_every_model_records_scorers(tmp_path, plain):
    raw = tmp_path / "raw"
    write_video(raw / "clean.mp4", plain)
    write_video(raw / "subs.mp4", burn_text(plain, "thank you for watching"))
    rows = [{"uri": "clean.mp4", "title": "Clean fractal", "source": "lavfi", "license": "cc0"},
            {"uri": "subs.mp4", "title": "Subtitled fractal", "source": "lavfi", "license": "cc0"}]
    (raw / "videos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    aes, blip = save_aesthetic(tmp_path / "aesthetic"), save_tiny_blip(tmp_path / "blip")
    cfg = CurateConfig(
        input_table="videos.jsonl", clip_min_frames=8, clip_max_frames=40, output_height=108, output_width=192,
        motion_min=0.0, motion_max=1000.0, blur_min_sharpness=0.0, subtitle_threshold=1.0, watermark_threshold=1.0,
        ocr=True, nsfw=True, aesthetic_model=str(aes), clip_model=str(aes), caption_model=str(blip),
        caption_dense_tokens=12,
    )
    summary = curate_shard(raw, tmp_path / "out", cfg)
    records = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if r["start_frame"] is not None]
    by_title = {r["title"]: r for r in records}
    clean, subs = by_title["Clean fractal"], by_title["Subtitled fractal"]
    assert clean["video_id"].startswith("clean-")  # an id derived from the URI when the row gives none
    assert "subtitles" in subs["drop_reasons"] and "subtitles" not in clean["drop_reasons"]
    assert clean["keep"], clean["drop_reasons"]
    assert set(clean["scores"]) >= {"ocr_text_area", "nsfw", "aesthetic", "clip_similarity"}
    assert set(clean["scorers"]) == {"ocr", "nsfw", "aesthetic", "clip"}
    assert clean["scorers"]["ocr"].startswith("rapidocr-onnxruntime/") and "/" in clean["scorers"]["nsfw"]
    caps = clean["captions"]
    assert caps["title"] == "Clean fractal" and caps["short"] and caps["dense"] and caps["model"]
    assert clean["caption"] == caps["short"] and clean["source"] == "lavfi" and clean["license"] == "cc0"
    steps = summary["step_seconds"]
    assert {"model:ocr", "model:nsfw", "model:aesthetic", "model:clip"} <= set(steps)


def test_raft_flow_plugin(tmp_path):
    """RAFT loads from a user's folder (weights really loaded, not a fresh init), its flow is reported in
    the clip's own pixels, and curate records the scorer beside Farneback's motion."""
    pytest.importorskip("torchvision", exc_type=ImportError)
    import torch
    from safetensors.torch import save_file
    from torchvision.models.optical_flow import raft_small

    from components.curate.models import FlowScorer

    torch.manual_seed(0)
    original = raft_small(weights=None).eval()
    (tmp_path / "raft").mkdir()
    save_file(original.state_dict(), str(tmp_path / "raft" / "raft.safetensors"))
    (tmp_path / "raft" / "raft.json").write_text('{"arch": "raft_small"}')
    scorer = FlowScorer(str(tmp_path / "raft"), pairs=2)
    assert scorer.name == f"torchvision-{importlib.metadata.version('torchvision')}:raft_small"
    a, b = torch.rand(1, 3, 128, 128) * 2 - 1, torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(original(a, b, num_flow_updates=2)[-1], scorer.model(a, b, num_flow_updates=2)[-1])

    frames = lavfi_frames("testsrc2", (160, 96), 25, 0.4)  # RAFT sees 160x128: y stretched by 4/3
    real = scorer.score(frames)["raft_motion"]
    assert np.isfinite(real) and real >= 0.0

    class ConstantFlow(torch.nn.Module):  # 8 px right and 8 px down at the model's size
        def forward(self, x, y):
            flow = torch.zeros(x.shape[0], 2, *x.shape[2:])
            flow[:, 0], flow[:, 1] = 8.0, 8.0
            return [flow]

    scorer.model = ConstantFlow()
    # in the clip's pixels: 8 px across, 6 px down -> 10 px, 6.25 % of the 160 px width per frame
    assert scorer.score(frames)["raft_motion"] == pytest.approx(6.25, abs=1e-3)

    raw = tmp_path / "raw"
    write_video(raw / "pattern.mp4", lavfi_frames("testsrc2", (160, 96), 25, 1.2))
    (raw / "metadata.jsonl").write_text(json.dumps({"uri": "pattern.mp4", "title": "Test pattern"}) + "\n")
    cfg = CurateConfig(clip_min_frames=8, clip_max_frames=40, output_height=96, output_width=160, motion_min=0.0,
                       motion_max=1000.0, blur_min_sharpness=0.0, flow_model=str(tmp_path / "raft"))
    curate_shard(raw, tmp_path / "out", cfg)
    records = [r for r in _jsonl(tmp_path / "out" / "manifest-000.jsonl") if r["start_frame"] is not None]
    assert records and all(r["scorers"].get("flow", "").startswith("torchvision-") for r in records), records
    assert all(np.isfinite(r["scores"]["raft_motion"]) for r in records)
