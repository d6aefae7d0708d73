"""The base-model stage: the released folder, a registered version and a checkpoint folder resolve into the
DiT, VAE and text encoders a fine-tune starts from, checked against the profile before any work."""

from __future__ import annotations

import mlflow
import pytest

from components.framework.skeleton import manifest_as
from model.dit import StepVideoDiT
from pipelines.stage_runner import run_stage
from t2v import storage
from t2v.config import load_config
from t2v.errors import StageError
from tests.release_layout import tiny_release_folder


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """The release's folder layout with tiny networks: transformer/, vae/, hunyuan_clip/, step_llm/."""
    tmp = tmp_path_factory.mktemp("release")
    root = tmp / "stepvideo"
    tiny_release_folder(root, tmp)
    return root


def _run(tmp_path, overrides, run_name="ft"):
    cfg = load_config("tiny", overrides)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking)
    client = mlflow.MlflowClient(tracking)
    if client.get_experiment_by_name(cfg.tracking.experiment) is None:  # its artifacts under tmp_path, not ./mlruns
        client.create_experiment(cfg.tracking.experiment, artifact_location=(tmp_path / "artifacts").as_uri())
    return run_stage(cfg, "base-model", run_name, tracking, str(tmp_path / "data"), None, {}), tracking


def test_the_released_folder_is_a_dit_a_vae_and_text_encoders(tmp_path, released):
    manifest, _ = _run(tmp_path, [f"base_model.uri={released}"])
    assert manifest_as(manifest, "dit")["checkpoint_uri"].endswith("/transformer")
    assert manifest_as(manifest, "vae")["checkpoint_uri"].endswith("/vae")
    text = manifest_as(manifest, "raw")["text_encoders"]
    assert text["clip"].endswith("/hunyuan_clip") and text["llm"].endswith("/step_llm")
    summary = manifest["summary"]
    assert summary["dit"]["parameters"] == sum(p.numel() for p in StepVideoDiT(load_config("tiny").dit).parameters())
    assert summary["video_latent_shape"] == [3, 8, 4, 4]  # 17 frames of 32x32 pixels (encode.resolution) in latents
    assert storage.exists(manifest["negative_uri"])  # the negative prompt, through the base's own encoders


def test_a_registered_version_names_its_parts_and_is_recorded(tmp_path, released):
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking)
    mlflow.set_tracking_uri(tracking)
    client.create_registered_model("base-dit")
    client.create_registered_model("base-vae")
    vae = client.create_model_version("base-vae", source=str(released / "vae"), tags={"t2v.checkpoint_uri": str(released / "vae")})
    client.create_model_version("base-dit", source=str(released / "transformer"), tags={
        "t2v.checkpoint_uri": str(released / "transformer"), "t2v.vae_model": f"base-vae/{vae.version}",
        "t2v.text_encoders.clip": str(released / "hunyuan_clip"), "t2v.text_encoders.llm": str(released / "step_llm"),
    })
    client.set_registered_model_alias("base-dit", "champion", "1")
    manifest, _ = _run(tmp_path, ["base_model.uri=models:/base-dit@champion"])
    assert manifest["summary"]["version"] == "base-dit/1"
    assert manifest["base_model"] == {"reference": "models:/base-dit@champion", "version": "base-dit/1", "vae_version": "base-vae/1"}
    assert manifest_as(manifest, "vae")["checkpoint_uri"] == str(released / "vae")


def test_a_base_that_does_not_fit_the_profile_is_refused_naming_the_section(tmp_path, released):
    with pytest.raises(StageError, match="does not fit the profile's dit section"):
        _run(tmp_path, [f"base_model.uri={released}", "dit.num_layers=4"])


def test_a_checkpoint_without_a_vae_asks_for_base_model_vae_uri(tmp_path, released):
    with pytest.raises(StageError, match=r"names no vae.*base_model\.vae_uri"):
        _run(tmp_path, [f"base_model.uri={released / 'transformer'}",
                        f"base_model.clip_uri={released / 'hunyuan_clip'}", f"base_model.llm_uri={released / 'step_llm'}"])


def test_a_missing_registered_model_is_one_line_naming_the_field(tmp_path):
    with pytest.raises(StageError, match=r"base_model\.uri: models:/no-such-model@champion"):
        _run(tmp_path, ["base_model.uri=models:/no-such-model@champion"])
