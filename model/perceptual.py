"""LPIPS (Zhang et al. 2018, the ``lpips`` package's ``net="vgg"``, version 0.1) and video LPIPS, in pure PyTorch.

    d(x, y) = sum over 5 VGG16 layers l of  mean_{h,w}  w_l . (n(f_l(x)) - n(f_l(y)))^2

with ``f_l`` the relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 activations of a VGG16 trunk fed with the LPIPS
scaling layer's input ((x - shift) / scale, x in [-1, 1]), ``n`` a unit normalisation over channels at each
position, and ``w_l`` the non-negative 1x1 linear head of layer l. Video LPIPS folds the frames into the
batch and averages the per-frame distances.

Parameter names, so the published weights load by name without conversion:

- trunk: those of torchvision's ``vgg16().features`` (``features.0.weight`` ... ``features.28.bias``); a whole
  torchvision VGG16 state dict loads as is (its ``classifier.*`` keys are not needed and are skipped);
- heads: those of ``lpips.LPIPS`` (``lin0.model.1.weight`` ... ``lin4.model.1.weight``; ``model.0`` is the
  head's dropout). A full ``lpips.LPIPS`` state dict (trunk under ``net.slice<k>.<i>.*``, the scaling
  constants under ``scaling_layer.*``) is renamed on loading.

The network is frozen: no parameter requires a gradient and it stays in eval mode (``train()`` is a no-op),
so a loss built on it sends gradients to its inputs (the reconstruction) only. No I/O here: the train-vae
stage reads the weight files and hands the state dicts to :meth:`LPIPS.load_weights`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

# torchvision's VGG16 ("D") layer list; "M" is a 2x2 max pool.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# indices in ``features`` of the ReLUs LPIPS reads (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)
TAPS = (3, 8, 15, 22, 29)
TAP_CHANNELS = (64, 128, 256, 512, 512)
# the lpips ScalingLayer constants: (x - shift) / scale maps [-1, 1] images to ImageNet-normalised input
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# lpips normalises with x / (sqrt(sum x^2) + 1e-10); x * rsqrt(sum x^2 + 1e-20) equals it in fp32 wherever the
# norm is not ~0 and, unlike it, has a finite gradient where a whole feature column is zero after the ReLU.
_NORM_EPS = 1e-20


def vgg16_features() -> nn.Sequential:
    """The convolutional trunk of torchvision's ``vgg16()`` (same modules, same indices, same names)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers)


class NetLinLayer(nn.Module):
    """lpips' head: dropout then a 1x1 convolution to one channel without bias (``model.1.weight``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + _NORM_EPS)


class LPIPS(nn.Module):
    """Frozen LPIPS distance. ``forward(x, y)``: images [N, 3, H, W] -> [N]; videos [B, T, 3, H, W] -> [B, T].
    Inputs in [-1, 1]. Randomly initialised until :meth:`load_weights` (trunk as torchvision initialises
    VGG16, heads non-negative like trained LPIPS heads)."""

    def __init__(self):
        super().__init__()
        # constants, not state: lpips stores them as buffers, a loaded ``scaling_layer.*`` is checked against them
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = vgg16_features()
        for i, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", NetLinLayer(channels))
        self._init_random()
        self.requires_grad_(False)
        super().train(False)

    def _init_random(self) -> None:
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for lin in self.lins:
            nn.init.uniform_(lin.model[1].weight, 0.0, 2.0 / lin.model[1].in_channels)

    @property
    def lins(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{i}") for i in range(len(TAPS))]

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval: the network is a fixed metric (its heads' dropout must stay off)."""
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        h = (x - self.shift) / self.scale
        for index, module in enumerate(self.features[: TAPS[-1] + 1]):
            h = module(h)
            if index in TAPS:
                outs.append(h)
        return outs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        lead = x.shape[:-3]
        if x.ndim not in (4, 5) or x.shape[-3] != 3:
            raise ValueError(f"LPIPS takes [N, 3, H, W] images or [B, T, 3, H, W] videos, got {tuple(x.shape)}")
        x, y = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])  # frames folded into the batch
        n = x.shape[0]
        feats = self._taps(torch.cat([x, y]).float())
        total = x.new_zeros(n, dtype=torch.float32)
        for feat, lin in zip(feats, self.lins):
            fx, fy = _unit_normalise(feat[:n]), _unit_normalise(feat[n:])
            total = total + lin((fx - fy).pow(2)).mean(dim=(1, 2, 3))  # 1 channel, spatial average
        return total.view(lead)

    # --- weights ----------------------------------------------------------------------------------------

    def load_weights(self, *state_dicts: Mapping[str, torch.Tensor]) -> None:
        """Load the trunk and the heads from one or more state dicts (for example torchvision's VGG16 file and
        lpips' ``vgg.pth``), by name; raises ValueError naming any missing or unknown key."""
        state = lpips_state_dict(*state_dicts)
        for name in ("shift", "scale"):
            given = state.pop(f"scaling_layer.{name}", None)
            if given is not None and not torch.allclose(given.float().flatten(), getattr(self, name).flatten(), atol=1e-6):
                raise ValueError(f"scaling_layer.{name} {given.flatten().tolist()} is not LPIPS's constant")
        expected = set(self.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(
                "LPIPS weights do not match by name: "
                + (f"missing {_short(missing)}" if missing else "")
                + ("; " if missing and unexpected else "")
                + (f"unexpected {_short(unexpected)}" if unexpected else "")
            )
        self.load_state_dict(state, strict=True)
        self.requires_grad_(False)


_LPIPS_SLICE = re.compile(r"^net\.slice[1-5]\.(\d+)\.(weight|bias)$")
_SKIPPED = re.compile(r"^classifier\.")


def lpips_state_dict(*state_dicts: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge state dicts into :class:`LPIPS`'s names: ``features.*`` and ``lin*`` kept, ``net.slice<k>.<i>.*``
    (lpips) renamed to ``features.<i>.*``, a leading ``module.`` (DataParallel) dropped, torchvision's
    ``classifier.*`` skipped. A key given twice with different values is an error."""
    merged: dict[str, torch.Tensor] = {}
    for state in state_dicts:
        for key, value in state.items():
            key = key.removeprefix("module.")
            match = _LPIPS_SLICE.match(key)
            if match:
                key = f"features.{match.group(1)}.{match.group(2)}"
            if _SKIPPED.match(key):
                continue
            if key in merged and not torch.equal(merged[key], value):
                raise ValueError(f"LPIPS weights: {key} is given twice with different values")
            merged[key] = value
    return merged


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def video_lpips(net: LPIPS, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean LPIPS over all frames of [B, T, 3, H, W] videos (frames folded into the batch)."""
    return net(recon, target).mean()
