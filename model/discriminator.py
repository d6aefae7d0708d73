"""A 3D PatchGAN discriminator for Video-VAE training (the report's "GAN term added later").

VQGAN's N-layer PatchGAN with 3D convolutions: clips [B, T, 3, H, W] in [-1, 1] -> patch logits [B, 1, t, h, w],
one logit per space-time patch (its receptive field), so the adversarial term judges local texture and motion
rather than whole clips.

Normalisation: spectral norm on every convolution, no feature normalisation. Why, for a video-VAE trainer:

- the per-GPU batch of a large video VAE is 1-2 clips (the 30B profile trains with batch 1), where BatchNorm
  (VQGAN's choice for images) estimates its statistics from a single clip and differs between the real and
  the fake pass; spectral norm is independent of the batch, so real and fake clips can share one forward and
  nothing needs synchronising across processes;
- it bounds the discriminator's Lipschitz constant (SNGAN/BigGAN with the hinge loss used here), which keeps
  a discriminator switched on late, against an already good decoder, from saturating and sending the decoder
  large, noisy gradients; the adaptive weight then works on a well-scaled generator gradient;
- GroupNorm would also be batch-independent, but renormalises away the feature scale the hinge loss acts on
  and adds no Lipschitz control, so a GroupNorm discriminator typically needs a gradient penalty
  (R1 / LeCAM, as MAGVIT-v2 does) to be as stable; spectral norm gives that for one power iteration per step.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

KERNEL = (3, 4, 4)  # (time, height, width)
PADDING = (1, 1, 1)


def _conv(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Module:
    return spectral_norm(nn.Conv3d(cin, cout, KERNEL, stride=stride, padding=PADDING))


class PatchDiscriminator3D(nn.Module):
    """``layers`` stride-2 stages (time, height, width halved; channels doubled up to 8x ``channels``), one
    stride-1 stage, then a stride-1 convolution to one logit per patch. With ``layers=3``: 17x32x32 clips give
    3x2x2 logits, 17x256x256 clips 3x30x30. Height and width must be at least ``3 * 2**layers``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3):
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"discriminator needs layers >= 1 and channels >= 1, got {layers}, {channels}")
        self.layers = layers
        mods: list[nn.Module] = [_conv(in_channels, channels, (2, 2, 2)), nn.LeakyReLU(0.2)]
        mult = 1
        for n in range(1, layers):
            prev, mult = mult, min(2**n, 8)
            mods += [_conv(channels * prev, channels * mult, (2, 2, 2)), nn.LeakyReLU(0.2)]
        prev, mult = mult, min(2**layers, 8)
        mods += [_conv(channels * prev, channels * mult, (1, 1, 1)), nn.LeakyReLU(0.2)]
        mods.append(_conv(channels * mult, 1, (1, 1, 1)))
        self.main = nn.Sequential(*mods)

    def min_size(self) -> int:
        return 3 * 2**self.layers

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """[B, T, 3, H, W] -> patch logits [B, 1, t, h, w]."""
        if video.ndim != 5:
            raise ValueError(f"discriminator takes [B, T, C, H, W] clips, got {tuple(video.shape)}")
        if min(video.shape[-2:]) < self.min_size():
            raise ValueError(
                f"discriminator with {self.layers} layers needs frames of at least {self.min_size()} pixels, "
                f"got {tuple(video.shape[-2:])}"
            )
        return self.main(video.transpose(1, 2))
