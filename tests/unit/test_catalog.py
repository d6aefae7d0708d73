"""The catalog finds each input's producer within a pipeline, and a stage with views is read as each kind."""

from __future__ import annotations

import pytest

from components.framework import catalog
from components.framework.skeleton import manifest_as
from pipelines.pipeline import PIPELINES


def test_the_producer_of_an_input_depends_on_the_pipeline():
    pretrain, finetune = PIPELINES["pretrain"].stages, PIPELINES["finetune"].stages
    assert catalog.feeding("encode", "vae", among=pretrain).name == "train-vae"
    assert catalog.feeding("encode", "vae", among=finetune).name == "base-model"
    assert catalog.feeding("encode", "raw", among=finetune).name == "base-model"  # the base's text encoders
    assert catalog.feeding("dpo", "dit", among=pretrain).name == "t2v"
    assert catalog.feeding("dpo", "dit", among=finetune).name == "finetune"
    assert catalog.feeding("evaluate", "latents", among=PIPELINES["evaluate"].stages).name == "base-model"


def test_candidates_are_every_earlier_producer_nearest_first():
    names = [s.name for s in catalog.candidates("dpo", "dit")]
    assert names[:3] == ["finetune", "t2v", "t2vi"] and names[-1] == "base-model"
    with pytest.raises(ValueError, match="no stage before 'register' produces 'dit'"):
        catalog.candidates("register", "dit", among=("register",))


def test_a_manifest_reads_as_each_kind_it_serves():
    manifest = {"checkpoint_uri": "s3://m/transformer", "text_encoders": None,
                "views": {"vae": {"checkpoint_uri": "s3://m/vae"}, "raw": {"text_encoders": {"clip": "c", "llm": "l"}}}}
    assert manifest_as(manifest, "vae")["checkpoint_uri"] == "s3://m/vae"
    assert manifest_as(manifest, "dit")["checkpoint_uri"] == "s3://m/transformer"
    assert manifest_as(manifest, "raw")["text_encoders"] == {"clip": "c", "llm": "l"}
    assert manifest_as({"checkpoint_uri": "x"}, "vae") == {"checkpoint_uri": "x"}
    assert catalog.get("base-model").serves("vae") and not catalog.get("train-vae").serves("dit")
