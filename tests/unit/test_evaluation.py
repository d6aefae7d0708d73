"""Evaluation on real videos: the automatic metrics, CLIP alignment from a model folder, a plugin,
champion vs challenger statistics, the prompt sets, and the report page."""

from __future__ import annotations

import numpy as np
import pytest

from components.evaluate import compare
from t2v.errors import StageError
from t2v.video_metrics import (
    ClipSimilarity,
    load_plugin,
    motion_magnitude,
    temporal_consistency,
    video_metrics,
)


def _square(frames: int, step: int, size: int = 64, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    video = np.full((frames, size, size, 3), 30, np.uint8)
    for t in range(frames):
        x = 8 + step * t
        video[t, 24:40, x : x + 16] = (220, 40, 40)
    if noise:
        video = np.clip(video + rng.normal(0, noise, video.shape), 0, 255).astype(np.uint8)
    return video


def test_a_still_video_is_consistent_and_does_not_move():
    still = _square(8, 0)
    assert temporal_consistency(still) == pytest.approx(1.0)
    assert motion_magnitude(still) == pytest.approx(0.0, abs=1e-3)


def test_motion_grows_with_speed_and_flicker_lowers_consistency():
    slow, fast = motion_magnitude(_square(8, 1)), motion_magnitude(_square(8, 3))
    assert 0 < slow < fast
    flicker = np.random.default_rng(1).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8)
    assert temporal_consistency(flicker) < 0.2 < temporal_consistency(_square(8, 2, noise=5.0))


def test_clip_alignment_from_a_model_folder(tmp_path):
    from tests.fixtures.tiny_clip import save_tiny_clip

    clip = ClipSimilarity(str(save_tiny_clip(tmp_path / "clip")))
    videos = [_square(6, 1), _square(6, 2, seed=3)]
    first = clip(videos, ["a red square moving right", "a blue circle"])
    assert len(first) == 2 and all(-1.0 <= v <= 1.0 for v in first)
    assert clip(videos, ["a red square moving right", "a blue circle"]) == first  # deterministic
    assert clip(videos[:1], ["something else entirely"]) != first[:1]  # the text matters
    rows = video_metrics(videos, ["a", "b"], clip=clip)
    assert set(rows[0]) == {"temporal_consistency", "motion_magnitude", "clip_similarity"}
    with pytest.raises(StageError, match="not a transformers CLIP model folder"):
        ClipSimilarity(str(tmp_path))


def test_a_plugin_is_loaded_by_name_and_bad_names_are_refused():
    scorer = load_plugin("numpy:mean")
    assert scorer([1, 2, 3]) == 2
    rows = video_metrics([_square(4, 1)], ["p"], aesthetic=lambda videos: [0.5 for _ in videos])
    assert rows[0]["aesthetic"] == 0.5
    for bad, message in (("numpy", "module:callable"), ("no_such_module_x:f", "cannot import"), ("numpy:nope", "has no nope")):
        with pytest.raises(StageError, match=message):
            load_plugin(bad)


def test_wins_ties_losses_win_rate_and_interval():
    challenger = [0.9, 0.5, 0.505, 0.2, 0.8, 0.6]
    champion = [0.7, 0.5, 0.5, 0.4, 0.6, 0.7]
    out = compare.compare(["a", "a", "b", "b", "c", "c"], challenger, champion, tie_tolerance=0.01, bootstrap_samples=4000)
    assert out["outcomes"] == ["win", "tie", "tie", "loss", "win", "loss"]
    assert (out["wins"], out["ties"], out["losses"]) == (2, 2, 2) and out["win_rate"] == 0.5
    low, high = out["win_rate_ci95"]
    assert low < 0.5 < high and 0.0 <= low and high <= 1.0
    assert out["categories"]["a"] == pytest.approx({"prompts": 2, "challenger": 0.7, "champion": 0.6, "delta": 0.1})
    assert out["categories"]["b"]["delta"] == pytest.approx(-0.0975)
    # all wins: the interval collapses to 1
    assert compare.bootstrap_interval(["win"] * 10) == (1.0, 1.0)
    with pytest.raises(ValueError):
        compare.outcomes([1.0], [1.0, 2.0], 0.0)


def test_the_128_prompts_fall_in_the_reports_11_categories():
    from collections import Counter

    from components.evaluate.stage import EVAL_CATEGORIES, step_video_eval_prompts

    pairs = step_video_eval_prompts()
    assert len(pairs) == 128 and len(EVAL_CATEGORIES) == 11
    assert Counter(c for c, _ in pairs) == dict(EVAL_CATEGORIES)
    assert sum(n for _, n in EVAL_CATEGORIES) == 128


def test_a_prompt_file_with_categories(tmp_path):
    from components.evaluate.stage import evaluation_prompts
    from t2v.config import ConfigError, load_config

    path = tmp_path / "prompts.txt"
    path.write_text("Animals\ta cat on a sofa\n\na dog running\nFood\tnoodles\n")

    class Ctx:
        config = load_config("tiny", ["evaluate.prompts=file", f"evaluate.prompt_file={path}", "evaluate.num_prompts=2"])

    specs, categories, prompts = evaluation_prompts(Ctx())
    assert specs is None and categories == ["Animals", "prompts"] and prompts == ["a cat on a sofa", "a dog running"]
    with pytest.raises(ConfigError, match="prompt_file"):
        load_config("tiny", ["evaluate.prompts=file"])
