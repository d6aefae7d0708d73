"""The configuration tree: profiles load and validate; bad values fail up front naming the field."""

from __future__ import annotations

import shutil

import pytest

from t2v.config import ConfigError, ProjectConfig, available_profiles, load_config


@pytest.mark.parametrize("profile", ["tiny", "step-video-t2v-30b"])
def test_profiles_load_and_roundtrip_through_json(profile):
    cfg = load_config(profile)
    assert cfg.profile == profile
    again = ProjectConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()


def test_profiles_listed():
    assert {"tiny", "step-video-t2v-30b"} <= set(available_profiles())
    assert "eval" not in available_profiles()


def test_full_profile_has_the_released_shapes():
    cfg = load_config("step-video-t2v-30b")
    assert (cfg.dit.num_layers, cfg.dit.num_attention_heads, cfg.dit.attention_head_dim) == (48, 48, 128)
    assert cfg.dit.in_channels == cfg.vae.model.z_channels == 64
    assert (cfg.vae.model.spatial_compression, cfg.vae.model.temporal_compression) == (16, 8)
    assert (cfg.evaluate.num_steps, cfg.evaluate.guidance_scale, cfg.evaluate.shift) == (50, 9.0, 13.0)


def test_override_changes_value_and_hash():
    base = load_config("tiny")
    changed = load_config("tiny", ["t2i.steps=70", "evaluate.seed=9"])
    assert changed.t2i.steps == 70 and changed.evaluate.seed == 9
    assert changed.config_hash() != base.config_hash()


@pytest.mark.parametrize(
    "override, field, words",
    [
        ("t2i.lr=-1", "t2i.lr", "greater than 0"),
        ("evaluate.guidance_scale=100", "evaluate.guidance_scale", "less than or equal to 30"),
        ("t2v.data=audio", "t2v.data", "'images'"),
        ("t2i.warmup_steps=100000", "t2i", "warmup_steps"),
        ("curate.num_shards=0", "curate.num_shards", "greater than or equal to 1"),
        ("t2i.stepz=3", "t2i.stepz", "Extra inputs"),
    ],
)
def test_bad_values_fail_naming_the_field(override, field, words):
    with pytest.raises(ConfigError) as info:
        load_config("tiny", [override])
    message = str(info.value)
    assert field in message and words in message


def test_cross_section_consistency_is_checked():
    with pytest.raises(ConfigError, match=r"dit.in_channels \(4\) must equal vae.model.z_channels"):
        load_config("tiny", ["dit.in_channels=4"])


def test_error_names_the_file(tmp_path):
    profile = tmp_path / "mine"
    shutil.copytree(load_config.__globals__["config_dir"]() / "tiny", profile)
    (profile / "t2vi.yaml").write_text((profile / "t2vi.yaml").read_text() + "\nbatch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(profile)
    assert "t2vi.yaml: t2vi.batch_size" in str(info.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*tiny"):
        load_config("nope")


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected section.field=value"):
        load_config("tiny", ["t2i.steps"])
