"""Checkpoints in the released layout: sharded diffusers folders for the DiT, ``vae_v2.safetensors`` for the
VAE, read back into the project's networks; the full-size layout checked on the meta device."""

from __future__ import annotations

import json

import pytest
import torch
from release_layout import fake_release_dit_folder, write_header_only

from model.config import DiTConfig, VAEConfig
from model.dit import StepVideoDiT
from model.vae import CausalVideoVAE
from t2v import checkpoints, storage

SMALL_DIT = DiTConfig(
    num_layers=2, num_attention_heads=2, attention_head_dim=32, rope_split=(16, 8, 8), in_channels=8,
    out_channels=8, caption_channels=24, clip_channels=16,
)  # fmt: skip
SMALL_VAE = VAEConfig(
    z_channels=4, encoder_base_channels=8, encoder_channel_mult=(1, 2, 4), decoder_base_channels=8,
    decoder_channel_mult=(1, 2, 4), num_res_blocks=1, norm_groups=4, num_spatial_only_downsamples=0,
)  # fmt: skip


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_dit_saves_as_sharded_diffusers_folder_and_loads_back(tmp_path):
    torch.manual_seed(0)
    dit = StepVideoDiT(SMALL_DIT)
    uri = storage.to_uri(tmp_path / "dit")
    entries = checkpoints.save_dit(dit, uri, state={"step": 3}, max_shard_size=200_000)

    index = json.loads((tmp_path / "dit" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"diffusion_pytorch_model-00001-of-{len(shards):05d}.safetensors"
    assert set(index["weight_map"]) == set(dit.state_dict())
    assert set(entries) == {
        *shards,
        "diffusion_pytorch_model.safetensors.index.json",
        "config.json",
        "training_state.json",
    }

    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    assert config["_class_name"] == "StepVideoModel"
    assert config["caption_channels"] == [24, 16] and config["num_layers"] == 2
    assert config["_t2v_config"]["rope_split"] == [16, 8, 8]

    loaded = checkpoints.load_dit(uri)
    assert loaded.cfg == SMALL_DIT
    assert_same_state(loaded, dit)
    assert not any(p.is_meta for p in loaded.parameters())


def test_dit_loads_from_a_released_model_root(tmp_path):
    """The release's model folder keeps the DiT under transformer/; the root URI is enough."""
    torch.manual_seed(1)
    dit = StepVideoDiT(SMALL_DIT)
    checkpoints.save_dit(dit, storage.to_uri(tmp_path / "root" / "transformer"))
    assert_same_state(checkpoints.load_dit(str(tmp_path / "root")), dit)


def test_release_keys_without_our_config_give_the_matching_dit_config():
    keys = checkpoints.release_dit_config(DiTConfig())
    keys.pop("_t2v_config")
    assert checkpoints.dit_config_from_json(keys) == DiTConfig()
    small = checkpoints.release_dit_config(
        DiTConfig(num_layers=3, num_attention_heads=4, caption_channels=64)
    )
    small.pop("_t2v_config")
    got = checkpoints.dit_config_from_json(small)
    assert (got.num_layers, got.num_attention_heads, got.caption_channels, got.clip_channels) == (
        3,
        4,
        64,
        1024,
    )


def test_project_checkpoints_written_before_this_layout_still_load(tmp_path):
    torch.manual_seed(2)
    dit = StepVideoDiT(SMALL_DIT)
    uri = storage.to_uri(tmp_path / "old")
    checkpoints.save(dit, SMALL_DIT.model_dump(mode="json"), uri, checkpoints.DIT_WEIGHTS)
    assert_same_state(checkpoints.load_dit(uri), dit)

    vae = CausalVideoVAE(SMALL_VAE)
    old_vae = storage.to_uri(tmp_path / "old-vae")
    checkpoints.save(vae, SMALL_VAE.model_dump(mode="json"), old_vae, checkpoints.LEGACY_VAE_WEIGHTS)
    assert_same_state(checkpoints.load_vae(old_vae), vae)


def test_vae_saves_under_the_release_file_name_and_loads_from_a_release_root(tmp_path):
    torch.manual_seed(3)
    vae = CausalVideoVAE(SMALL_VAE)
    checkpoints.save_vae(vae, storage.to_uri(tmp_path / "root" / "vae"))
    assert (tmp_path / "root" / "vae" / "vae_v2.safetensors").is_file()
    assert_same_state(checkpoints.load_vae(str(tmp_path / "root")), vae)


def test_loading_casts_to_the_requested_dtype(tmp_path):
    dit = StepVideoDiT(SMALL_DIT)
    uri = storage.to_uri(tmp_path / "dit")
    checkpoints.save_dit(dit.to(torch.bfloat16), uri)
    assert {p.dtype for p in checkpoints.load_dit(uri).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in checkpoints.load_dit(uri, dtype=torch.float32).parameters()} == {torch.float32}


def test_a_checkpoint_of_another_shape_is_refused_naming_the_tensor(tmp_path):
    uri = storage.to_uri(tmp_path / "dit")
    checkpoints.save_dit(StepVideoDiT(SMALL_DIT), uri)
    config = json.loads((tmp_path / "dit" / "config.json").read_text())
    config["_t2v_config"]["clip_channels"] = 32
    (tmp_path / "dit" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"clip_projection.weight: shape \[64, 16\] in the checkpoint, \[64, 32\]",
    ):
        checkpoints.load_dit(uri)


def test_missing_weights_are_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        checkpoints.CheckpointError, match="no checkpoint weights .*transformer/diffusion_pytorch_model"
    ):
        checkpoints.load_dit(str(tmp_path / "empty"))
    uri = storage.to_uri(tmp_path / "dit")
    checkpoints.save_dit(StepVideoDiT(SMALL_DIT), uri, max_shard_size=200_000)
    sorted((tmp_path / "dit").glob("diffusion_pytorch_model-*.safetensors"))[0].unlink()
    with pytest.raises(checkpoints.CheckpointError, match="names shards that are not there"):
        checkpoints.load_dit(uri)


# --------------------------------------------------------------------------------------------------------
# the full-size released layout, from headers only


def test_full_size_released_dit_layout_matches_the_configuration_on_meta(tmp_path):
    fake_release_dit_folder(tmp_path / "stepvideo-t2v" / "transformer", DiTConfig())
    report = checkpoints.verify(str(tmp_path / "stepvideo-t2v"), "dit")
    assert report.ok, report.problems()
    assert (report.tensors, report.parameters) == (785, 29_342_478_400)
    assert report.dtypes == {"bfloat16": 785}
    shards = list((tmp_path / "stepvideo-t2v" / "transformer").glob("*-of-*.safetensors"))
    assert len(shards) == 6
    assert sum(p.stat().st_blocks for p in shards) * 512 < 50_000_000  # holes: nothing was written


def test_verify_names_what_does_not_fit(tmp_path):
    folder = tmp_path / "transformer"
    fake_release_dit_folder(folder, DiTConfig(num_layers=2))
    report = checkpoints.verify(str(folder), "dit", cfg=DiTConfig(num_layers=3, caption_channels=4096))
    assert not report.ok
    assert report.missing[0].startswith("transformer_blocks.2.")
    assert report.mismatched["caption_projection.linear_1.weight"] == ([6144, 4096], [6144, 6144])


def test_full_size_released_vae_file_matches_the_configuration_on_meta(tmp_path):
    with torch.device("meta"):
        state = CausalVideoVAE(VAEConfig()).state_dict()
    (tmp_path / "vae").mkdir()
    write_header_only(tmp_path / "vae" / "vae_v2.safetensors", state)  # the release stores the VAE in fp32
    report = checkpoints.verify(str(tmp_path), "vae")  # no config.json: the released configuration
    assert report.ok, report.problems()
    assert report.parameters == 498_818_819
    assert "decoder.conv_out.weight" in state  # the file's name for the decoder's last conv


def test_release_vae_folder_without_config_gets_the_released_configuration(tmp_path):
    assert checkpoints.vae_config_at(tmp_path) == VAEConfig()
