"""The promotion gate as a pure function: pass, fail on score, fail on regression, no champion yet; a
champion lookup that fails is an error of evaluate, never "no champion"."""

from __future__ import annotations

import pytest

from components.evaluate.gate import decide


def test_passes_above_the_minimum_and_within_the_regression_tolerance():
    decision = decide(0.80, min_score=0.5, max_regression=0.02, untrained_score=0.1, champion_score=0.81)
    assert decision.passed and decision.reason == "passed" and "delta -0.010" in decision.notes[0]


def test_fails_on_the_minimum_score():
    decision = decide(0.40, min_score=0.5, max_regression=0.02, untrained_score=0.1)
    assert not decision.passed and "gate_min_score 0.5" in decision.reason


def test_fails_on_a_regression_beyond_the_tolerance():
    decision = decide(0.70, min_score=0.5, max_regression=0.02, champion_score=0.75)
    assert not decision.passed and "regresses from the champion's 0.750" in decision.reason


def test_fails_when_it_does_not_beat_the_untrained_floor():
    assert not decide(0.6, min_score=0.5, max_regression=0.02, untrained_score=0.6).passed


def test_no_champion_yet_passes_and_says_so():
    decision = decide(0.7, min_score=0.5, max_regression=0.02, champion_score=None)
    assert decision.passed and decision.notes == ["no champion yet"]


def test_no_score_fails_with_the_reason():
    assert not decide(None, 0.5, 0.02).passed


def test_a_failing_champion_lookup_fails_evaluate(monkeypatch):
    from mlflow.exceptions import MlflowException

    from components.evaluate import stage
    from t2v.config import load_config
    from t2v.errors import StageError

    def down(*args, **kwargs):
        raise MlflowException("connection refused")

    monkeypatch.setattr(stage.registry, "version_by_alias", down)

    class Ctx:
        config = load_config("tiny")
        tracking_uri = "http://127.0.0.1:1"

    with pytest.raises(StageError, match=r"looking up step-video-t2v-tiny-dit@champion: connection refused"):
        stage._champion_checkpoint(Ctx())
