"""The Video-VAE's perceptual (video LPIPS) and adversarial (3D PatchGAN, hinge, adaptive weight) terms, their
config, and one short train-vae run with both on. No weights are downloaded: the LPIPS network is randomly
initialised, written to disk and read back by the stage's own loading code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from components.train_vae import stage as train_vae
from model.discriminator import PatchDiscriminator3D
from model.losses import VideoVAELoss, adaptive_weight, generator_loss, hinge_d_loss, vae_loss
from model.perceptual import LPIPS, video_lpips
from t2v.config import ConfigError, VAETrainConfig, load_config

# torchvision's vgg16().features: conv layers at these indices (ReLU after each, max pools at 4, 9, 16, 23, 30)
TORCHVISION_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


@pytest.fixture(scope="module")
def lpips_net() -> LPIPS:
    torch.manual_seed(0)
    return LPIPS()


def clips(b: int = 2, t: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=gen) * 2 - 1


def train_cfg(**over) -> VAETrainConfig:
    base = dict(steps=1, batch_size=1, lr=1e-3, resolution=(32, 32))
    return VAETrainConfig(**{**base, **over})


# --- LPIPS -------------------------------------------------------------------------------------------------


def test_lpips_is_zero_for_identical_inputs_positive_otherwise_and_symmetric(lpips_net):
    x, y = clips(seed=1), clips(seed=2)
    same = lpips_net(x, x)
    assert same.shape == (2, 3)
    assert float(same.abs().max()) < 1e-6
    d_xy, d_yx = lpips_net(x, y), lpips_net(y, x)
    assert bool((d_xy > 1e-4).all())
    assert torch.allclose(d_xy, d_yx, rtol=1e-5, atol=1e-8)
    slightly = lpips_net(x, x + 0.05 * (y - x))  # closer input, smaller distance
    assert bool((slightly < d_xy).all())


def _lpips_the_packages_way(net: LPIPS, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS as the lpips package computes it (vgg, v0.1), over the same modules: ScalingLayer, torchvision
    features cut into slices [0:4], [4:9], [9:16], [16:23], [23:30], normalize_tensor, lin, spatial average."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    cuts = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
    hx, hy, total = (x - shift) / scale, (y - shift) / scale, 0.0
    for k, (a, b) in enumerate(cuts):
        for i in range(a, b):
            hx, hy = net.features[i](hx), net.features[i](hy)
        nx = hx / (torch.sqrt(torch.sum(hx**2, dim=1, keepdim=True)) + 1e-10)
        ny = hy / (torch.sqrt(torch.sum(hy**2, dim=1, keepdim=True)) + 1e-10)
        total = total + getattr(net, f"lin{k}").model((nx - ny) ** 2).mean([2, 3], keepdim=True)
    return total.flatten()


def test_lpips_matches_the_package_formula(lpips_net):
    x, y = clips(seed=10)[0], clips(seed=11)[0]
    assert torch.allclose(lpips_net(x, y), _lpips_the_packages_way(lpips_net, x, y), rtol=1e-4, atol=1e-7)


def test_video_lpips_is_the_mean_of_per_frame_distances(lpips_net):
    x, y = clips(seed=3), clips(seed=4)
    per_frame = [float(lpips_net(x[b, t : t + 1], y[b, t : t + 1])) for b in range(2) for t in range(3)]
    assert float(video_lpips(lpips_net, x, y)) == pytest.approx(sum(per_frame) / len(per_frame), rel=1e-5)


def test_lpips_gradient_reaches_the_reconstruction_not_the_frozen_net(lpips_net):
    recon = clips(seed=5).requires_grad_(True)
    target = clips(seed=6)
    lpips_net.train()  # stays a fixed metric: eval mode, dropout off
    assert not lpips_net.training and not any(m.training for m in lpips_net.modules())
    assert not any(p.requires_grad for p in lpips_net.parameters())
    video_lpips(lpips_net, recon, target).backward()
    assert recon.grad is not None and torch.isfinite(recon.grad).all() and float(recon.grad.abs().sum()) > 0
    assert all(p.grad is None for p in lpips_net.parameters())
    assert torch.equal(lpips_net(recon.detach(), target), lpips_net(recon.detach(), target))  # deterministic


def test_lpips_trunk_has_torchvision_vgg16_names_and_heads_lpips_names(lpips_net):
    state = lpips_net.state_dict()
    convs = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    assert convs == TORCHVISION_VGG16_CONVS
    assert tuple(state["features.0.weight"].shape) == (64, 3, 3, 3)
    assert tuple(state["features.28.weight"].shape) == (512, 512, 3, 3)
    heads = {k: tuple(v.shape) for k, v in state.items() if k.startswith("lin")}
    assert heads == {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate([64, 128, 256, 512, 512])}
    assert set(state) == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")} | set(heads)


def _split_like_the_published_files(net: LPIPS) -> tuple[dict, dict]:
    """(a torchvision-style VGG16 state dict with its classifier, the lpips heads)."""
    state = net.state_dict()
    trunk = {k: v.clone() for k, v in state.items() if k.startswith("features.")}
    trunk["classifier.0.weight"] = torch.randn(16, 8)  # torchvision's head: present in the file, not needed
    trunk["classifier.0.bias"] = torch.randn(16)
    heads = {k: v.clone() for k, v in state.items() if k.startswith("lin")}
    return trunk, heads


@pytest.mark.parametrize("trunk_format", ["pth", "safetensors"])
def test_saved_random_weights_load_back_by_name_through_the_stage(tmp_path, trunk_format):
    torch.manual_seed(11)
    original = LPIPS()
    trunk, heads = _split_like_the_published_files(original)
    trunk_path = tmp_path / f"vgg16.{trunk_format}"
    if trunk_format == "pth":
        torch.save(trunk, trunk_path)
    else:
        save_file(trunk, str(trunk_path))
    heads_path = tmp_path / "lpips_vgg.pth"
    torch.save(heads, heads_path)
    cfg = train_cfg(perceptual_weight=1.0, perceptual_weights_uri=str(heads_path), perceptual_vgg_uri=trunk_path.as_uri())
    torch.manual_seed(12)
    loaded = train_vae.load_perceptual(cfg)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x, y = clips(seed=7), clips(seed=8)
    assert torch.equal(loaded(x, y), original(x, y))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_one_file_with_lpips_package_names_loads_and_a_missing_head_is_named(tmp_path):
    torch.manual_seed(13)
    original = LPIPS()
    state = original.state_dict()
    # the lpips package's own state dict: trunk in slices (original feature indices kept), scaling constants
    slice_of = {i: 1 + sum(i > end for end in (3, 8, 15, 22)) for i in TORCHVISION_VGG16_CONVS}
    packaged = {
        (f"net.slice{slice_of[int(k.split('.')[1])]}.{k.split('.', 1)[1]}" if k.startswith("features.") else k): v
        for k, v in state.items()
    }
    packaged["scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    packaged["scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    path = tmp_path / "lpips.safetensors"
    save_file(packaged, str(path))
    loaded = train_vae.load_perceptual(train_cfg(perceptual_weight=1.0, perceptual_weights_uri=str(path)))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())

    del packaged["lin3.model.1.weight"]
    save_file(packaged, str(path))
    with pytest.raises(train_vae.StageError, match=r"missing lin3\.model\.1\.weight"):
        train_vae.load_perceptual(train_cfg(perceptual_weight=1.0, perceptual_weights_uri=str(path)))


# --- adversarial maths -------------------------------------------------------------------------------------


def test_hinge_and_generator_losses_on_hand_made_logits():
    real = [2.0, 0.5, -1.0, 1.0]
    fake = [-2.0, 0.0, 1.5, -0.25]
    by_hand = 0.5 * (
        sum(max(0.0, 1.0 - r) for r in real) / len(real) + sum(max(0.0, 1.0 + f) for f in fake) / len(fake)
    )
    assert float(hinge_d_loss(torch.tensor(real), torch.tensor(fake))) == pytest.approx(by_hand)
    # a confident, correct discriminator has zero loss; swapping the logits is penalised
    assert float(hinge_d_loss(torch.tensor([1.5, 3.0]), torch.tensor([-1.0, -2.0]))) == 0.0
    assert float(hinge_d_loss(torch.tensor(fake), torch.tensor(real))) > by_hand
    assert float(generator_loss(torch.tensor(fake))) == pytest.approx(-sum(fake) / len(fake))


def _toy_decoder(seed: int = 0):
    torch.manual_seed(seed)
    decoder = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6))
    critic = torch.nn.Linear(6, 1)
    z = torch.randn(5, 4)
    target = torch.randn(5, 6)
    return decoder, critic, z, target


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    decoder, critic, z, target = _toy_decoder()
    out = decoder(z)
    rec = (out - target).abs().mean()
    g = generator_loss(critic(out))
    weight = adaptive_weight(rec, g, decoder[2].weight)
    # by hand: out = h W^T + b, so d rec / dW = sign(out - t)^T h / (N*6) and d g / dW = -(v ⊗ sum_n h_n) / N
    h = decoder[1](decoder[0](z)).detach()
    n, d = out.shape
    grad_rec = torch.sign(out.detach() - target).T @ h / (n * d)
    grad_g = -torch.outer(critic.weight.detach()[0], h.sum(0)) / n
    expected = grad_rec.norm() / (grad_g.norm() + 1e-4)
    assert float(weight) == pytest.approx(float(expected), rel=1e-5)
    assert not weight.requires_grad
    capped = adaptive_weight(rec, g, decoder[2].weight, max_weight=0.5 * float(expected))
    assert float(capped) == pytest.approx(0.5 * float(expected))

    # vae_loss adds adversarial_weight * that weight * g to the reconstruction (+ KL, zero here)
    zeros = torch.zeros(1, 1, 1, 1, 1)
    total, parts = vae_loss(
        out.view(1, 5, 6, 1, 1), target.view(1, 5, 6, 1, 1), zeros, zeros, kl_weight=1.0,
        adversarial_term=g, adversarial_weight=0.3, last_layer=decoder[2].weight,
    )
    assert float(total.detach()) == pytest.approx(float(rec.detach()) + 0.3 * float(expected) * float(g.detach()), rel=1e-5)
    assert parts["adaptive_weight"] == pytest.approx(float(expected), rel=1e-5)
    assert parts["adversarial"] == pytest.approx(float(g.detach()))


def test_discriminator_gives_patch_logits_for_17_frame_clips():
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(channels=8, layers=3)
    video = clips(b=2, t=17, size=32).requires_grad_(True)
    logits = disc(video)
    # conv arithmetic: 3 stride-2 stages (k=3 pad 1 in time, k=4 pad 1 in space), then two stride-1 k=4 convs
    t, s = 17, 32
    for _ in range(3):
        t, s = (t - 1) // 2 + 1, s // 2
    assert tuple(logits.shape) == (2, 1, t, s - 2, s - 2) and t > 1 and s - 2 > 1
    assert float(logits.std()) > 0  # one logit per patch, not a constant
    logits.mean().backward()
    assert video.grad is not None and float(video.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="at least 24 pixels"):
        disc(clips(b=1, t=17, size=16))


def test_discriminator_convolutions_are_spectrally_normalised():
    torch.manual_seed(1)
    disc = PatchDiscriminator3D(channels=8, layers=2).train()
    with torch.no_grad():
        for _ in range(60):  # one power iteration per training forward
            disc(clips(b=1, t=5, size=24))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 4
    for conv in convs:
        weight = conv.weight  # the parametrised (normalised) weight
        sigma = torch.linalg.matrix_norm(weight.detach().reshape(weight.shape[0], -1), ord=2)
        assert 0.99 < float(sigma) < 1.1


def test_no_adversarial_part_before_disc_start_step():
    decoder, _, z, target = _toy_decoder()
    torch.manual_seed(2)
    disc = PatchDiscriminator3D(channels=4, layers=1)
    criterion = VideoVAELoss(kl_weight=0.0, discriminator=disc, adversarial_weight=0.5, disc_start_step=3)
    mean = logvar = torch.zeros(1, 1, 1, 1, 1)
    target_video = clips(b=1, t=2, size=8, seed=9)
    weight = torch.nn.Parameter(torch.randn(1, 2, 3, 8, 8) * 0.1)  # the "last layer": the output itself

    def recon():
        return target_video + weight

    plain, plain_parts = vae_loss(recon(), target_video, mean, logvar, kl_weight=0.0)
    for step in (1, 2):
        assert not criterion.adversarial_active(step)
        total, parts = criterion.generator_loss(recon(), target_video, mean, logvar, step, last_layer=weight)
        assert "adversarial" not in parts and "adaptive_weight" not in parts
        assert float(total) == pytest.approx(float(plain))
        assert criterion.discriminator_loss(recon(), target_video, step) == (None, {})
    total, parts = criterion.generator_loss(recon(), target_video, mean, logvar, 3, last_layer=weight)
    assert {"adversarial", "adaptive_weight"} <= set(parts)
    assert float(total) == pytest.approx(float(plain) + 0.5 * parts["adaptive_weight"] * parts["adversarial"], rel=1e-5)
    total.backward()
    assert all(p.grad is None for p in disc.parameters())  # the generator update does not train the critic
    assert all(p.requires_grad for p in disc.parameters())
    d_loss, d_parts = criterion.discriminator_loss(recon(), target_video, 3)
    assert d_loss is not None and d_parts["disc_loss"] == pytest.approx(float(d_loss))
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())


# --- config ------------------------------------------------------------------------------------------------


def test_defaults_keep_both_terms_off():
    for profile in ("tiny", "step-video-t2v-30b"):
        train = load_config(profile).vae.train
        assert train.perceptual_weight == 0 and train.adversarial_weight == 0


def test_perceptual_weight_without_weights_uri_is_rejected_naming_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"vae\.train.*perceptual_weights_uri is required"):
        load_config("tiny", ["vae.train.perceptual_weight=0.1"])
    cfg = load_config("tiny", ["vae.train.perceptual_weight=0.1", f"vae.train.perceptual_weights_uri={tmp_path}/w.pth"])
    assert cfg.vae.train.perceptual_weights_uri == f"{tmp_path}/w.pth"
    with pytest.raises(ConfigError, match="disc_layers=4 needs a resolution of at least 48"):
        load_config("tiny", ["vae.train.adversarial_weight=0.1", "vae.train.disc_layers=4"])


# --- the stage ---------------------------------------------------------------------------------------------


def _clips_manifest(root: Path, n: int = 3) -> dict:
    """A curate-like manifest over one webdataset shard of small moving-square clips."""
    from t2v.shards import write_shards
    from t2v.video import encode_mp4_bytes

    samples = []
    for i in range(n):
        frames = np.full((17, 32, 32, 3), 40 + 30 * i, np.uint8)
        for t in range(17):
            frames[t, 8:20, t : t + 12] = (200, 60 + 50 * i, 90)
        meta = {"clip_id": f"clip-{i}", "caption": f"clip {i}"}
        samples.append({"__key__": f"clip-{i}", "mp4": encode_mp4_bytes(frames, 25), "json": json.dumps(meta)})
    shards = write_shards(samples, root / "shards", "clips", shard_size=16)
    return {
        "stage": "curate",
        "fingerprint": "test-clips",
        "manifest_uri": str(root / "manifest.json"),
        "files": {f"shards/{p.name}": {"uri": str(p)} for p in shards},
    }


def test_train_vae_runs_with_lpips_and_gan_and_logs_the_parts(tmp_path):
    import mlflow

    from components.framework import catalog
    from components.framework.context import StageContext
    from t2v import tracking

    torch.manual_seed(0)
    weights = tmp_path / "lpips-random.pth"
    torch.save(LPIPS().state_dict(), weights)
    cfg = load_config(
        "tiny",
        [
            "vae.train.steps=3",
            "vae.train.batch_size=2",
            "vae.train.log_every=1",
            "vae.train.num_eval_clips=1",
            "vae.train.perceptual_weight=0.5",
            f"vae.train.perceptual_weights_uri={weights}",
            "vae.train.adversarial_weight=0.1",
            "vae.train.disc_start_step=2",
            "vae.train.disc_channels=8",
        ],
    )
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = tracking.start_parent_run(
        tracking_uri, "test-vae-losses", "r", tags={}, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    ctx = StageContext(config=cfg, run_root=str(tmp_path / "runs"), tracking_uri=tracking_uri, parent_run_id=parent)
    manifest = catalog.get("train-vae")(ctx, clips=_clips_manifest(tmp_path / "clips"))

    assert manifest["summary"]["steps"] == 3 and np.isfinite(manifest["summary"]["final_loss"])
    disc_file = manifest["files"]["checkpoint/discriminator.safetensors"]
    assert Path(disc_file["uri"]).is_file()
    disc = PatchDiscriminator3D(channels=8, layers=3)
    disc.load_state_dict(load_file(disc_file["uri"]))
    state = json.loads(Path(manifest["checkpoint_uri"], "training_state.json").read_text())
    assert state["discriminator"] == {"channels": 8, "layers": 3}

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(manifest["mlflow_run_id"])
    for name in ("l1", "kl", "mse", "perceptual", "adversarial", "adaptive_weight", "disc_loss", "logits_real"):
        assert f"train/{name}" in run.data.metrics, name
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/perceptual")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/adversarial")] == [2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/disc_loss")] == [2, 3]

    # a later stage starting from this checkpoint continues with the same discriminator
    later = train_vae.build_discriminator(cfg.vae.train.model_copy(update={"init_from": manifest["checkpoint_uri"]}))
    for key, value in disc.state_dict().items():
        assert torch.equal(later.state_dict()[key], value), key
