"""The Step-Video-T2V causal video VAE (``AutoencoderKL(z_channels=64, version=2)``), readable top to bottom.

Video in: ``[B, T, 3, H, W]`` in [-1, 1]. Latents out: ``[B, F, z, h, w]`` (frames before channels).

The video is cut into chunks of ``chunk_frames`` (17) frames that are encoded independently. Inside a
chunk every time operation is causal: 3D convolutions pad the past with zeros (never the future), group
norms normalise each frame on its own, and the mid-block attention is causal over the flattened
(time, height, width) tokens. The first frame of a chunk maps to the first latent frame on its own
("causal first frame"): 17 frames -> 3 latent frames with 8x temporal compression.

Encoder (released widths 128/256/512/512, 2 residual blocks per level):
    conv_in -> level 0 -> spatial-only 2x downsample -> level 1 -> causal 3D 2x -> level 2 -> causal 3D 2x
    -> level 3 -> mid (res, causal attention, res) -> GroupNorm+SiLU
    -> dual-path head: [causal conv + 2x2x2 pixel-unshuffle] + [pixel-unshuffle, average channel groups]
    -> [causal conv to 2z] + [average channel groups to 2z]  ==> mean, log-variance
Decoder: the mirror (dual-path pixel-shuffle head with channel-duplicating shortcuts, mid, levels with
3 residual blocks, causal 3D 2x upsamples at the top two levels, a 2D upsample below), then the first
``2**k - 1`` frames are dropped so a chunk of 3 latent frames decodes to 17 frames. Decoded chunks are
blended at their boundary frames 0.6 / 0.4 as the release does.

``num_spatial_only_downsamples`` and ``dual_path`` in :class:`~model.config.VAEConfig` make the tiny model
cheap; module and parameter names follow the release so the full configuration's ``state_dict`` loads
``vae_v2.safetensors`` as is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.config import VAEConfig

# --------------------------------------------------------------------------------------------------------
# building blocks (all tensors [B, C, T, H, W] inside the networks)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame on its own, so that statistics never mix past and future."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return out.reshape(b, t, c, h, w).transpose(1, 2)


class CausalConv3d(nn.Module):
    """3D conv that pads time on the past side only (zeros) and height/width symmetrically."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int | tuple = 1):
        super().__init__()
        stride = (stride, stride, stride) if isinstance(stride, int) else tuple(stride)
        k = kernel_size
        time_pad = (k - 1) + max(1 - stride[0], 0)
        self.padding = (k // 2, k // 2, k // 2, k // 2, time_pad, 0)  # (W, W, H, H, T_past, T_future)
        self.conv = nn.Conv3d(cin, cout, k, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResBlock3D(nn.Module):
    """GroupNorm-SiLU-causal conv, twice, plus a (1x1x1 conv when widths differ) shortcut."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(groups, cin)
        self.conv1 = CausalConv3d(cin, cout, 3)
        self.norm2 = FrameGroupNorm(groups, cout)
        self.conv2 = CausalConv3d(cout, cout, 3)
        if cin != cout:
            self.nin_shortcut = CausalConv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return shortcut + h


class CausalAttnBlock(nn.Module):
    """Single-head self-attention over all (t, h, w) positions of a chunk, causal in that flattened order."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = FrameGroupNorm(groups, channels)
        self.q = CausalConv3d(channels, channels, 1)
        self.k = CausalConv3d(channels, channels, 1)
        self.v = CausalConv3d(channels, channels, 1)
        self.proj_out = CausalConv3d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        normed = self.norm(x)
        q, k, v = (m(normed).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, 1, T*H*W, C]
        out = out[:, 0].transpose(1, 2).reshape(b, c, t, h, w)
        return x + self.proj_out(out)


class SpatialDownsample(nn.Module):
    """Per-frame 3x3 stride-2 conv with one row/column of zeros added at the bottom/right (released)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = F.pad(x.transpose(1, 2).reshape(b * t, c, h, w), (0, 1, 0, 1))
        out = self.conv(frames)
        return out.reshape(b, t, c, *out.shape[-2:]).transpose(1, 2)


class CausalDownsample3D(nn.Module):
    """Causal 3x3x3 conv with stride 2 in time, height and width."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialUpsample(nn.Module):
    """Per-frame nearest 2x upsample then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = F.interpolate(x.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=2.0, mode="nearest")
        out = self.conv(frames)
        return out.reshape(b, t, c, 2 * h, 2 * w).transpose(1, 2)


class UpsampleResBlock(nn.Module):
    """The released ``Res3DBlockUpsample`` (equal widths): conv-norm-SiLU-conv-norm, + input, SiLU, + input."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv1 = CausalConv3d(channels, channels, 3)
        self.norm1 = FrameGroupNorm(groups, channels)
        self.conv2 = CausalConv3d(channels, channels, 3)
        self.norm2 = FrameGroupNorm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + x) + x


class CausalUpsample3D(nn.Module):
    """Nearest 2x in time, height and width, then a causal residual block."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.conv3d = UpsampleResBlock(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3d(F.interpolate(x, scale_factor=2.0, mode="nearest"))


# --------------------------------------------------------------------------------------------------------
# 2x2x2 pixel (un)shuffle with the causal first frame


def pixel_unshuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, C*f^3, (T+f-1)/f, H/f, W/f]; time is padded with f-1 zero frames in front.

    Output channel ``c*f^3 + (dt*f + dy)*f + dx`` holds input channel c at offset (dt, dy, dx).
    """
    x = F.pad(x, (0, 0, 0, 0, factor - 1, 0))
    b, c, t, h, w = x.shape
    f = factor
    x = x.view(b, c, t // f, f, h // f, f, w // f, f).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * f**3, t // f, h // f, w // f)


def pixel_shuffle_3d(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse layout of :func:`pixel_unshuffle_3d`; drops the f-1 leading frames."""
    b, cf, t, h, w = x.shape
    f = factor
    c = cf // f**3
    x = x.view(b, c, f, f, f, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * f, h * f, w * f)[:, :, f - 1 :]


def unshuffle_average(x: torch.Tensor, factor: int, out_channels: int) -> torch.Tensor:
    """Pixel-unshuffle, then average consecutive groups of channels down to ``out_channels`` (no weights)."""
    x = pixel_unshuffle_3d(x, factor) if factor > 1 else x
    b, c, t, h, w = x.shape
    return x.view(b, out_channels, c // out_channels, t, h, w).mean(dim=2)


def duplicate_shuffle(x: torch.Tensor, factor: int, out_channels: int) -> torch.Tensor:
    """Repeat every channel, then pixel-shuffle to ``out_channels`` (no weights)."""
    repeats = out_channels * factor**3 // x.shape[1]
    x = x.repeat_interleave(repeats, dim=1)
    return pixel_shuffle_3d(x, factor) if factor > 1 else x


class ConvUnshuffle(nn.Module):
    def __init__(self, cin: int, cout: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(cin, cout // factor**3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_unshuffle_3d(self.conv(x), self.factor)


class ConvShuffle(nn.Module):
    def __init__(self, cin: int, cout: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = CausalConv3d(cin, cout * factor**3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), self.factor)


# --------------------------------------------------------------------------------------------------------
# encoder and decoder


class VideoEncoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        g, ch, mult = cfg.norm_groups, cfg.encoder_base_channels, cfg.encoder_channel_mult
        self.conv_in = CausalConv3d(cfg.in_channels, ch, 3)
        self.down = nn.ModuleList()
        block_in = ch
        for level, m in enumerate(mult):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResBlock3D(block_in, ch * m, g))
                block_in = ch * m
            stage.attn = nn.ModuleList()  # empty in the release; kept for its state-dict layout
            if level != len(mult) - 1:
                if level < cfg.num_spatial_only_downsamples:
                    stage.downsample = SpatialDownsample(block_in)
                else:
                    stage.downsample = CausalDownsample3D(block_in)
            self.down.append(stage)

        self.mid = nn.Module()
        self.mid.block_1 = ResBlock3D(block_in, block_in, g)
        self.mid.attn_1 = CausalAttnBlock(block_in, g)
        self.mid.block_2 = ResBlock3D(block_in, block_in, g)
        self.norm_out = FrameGroupNorm(g, block_in)

        z2 = 2 * cfg.z_channels
        if cfg.dual_path:
            self.head_channels = 4 * cfg.z_channels * 8
            self.conv_patchify = ConvUnshuffle(block_in, self.head_channels, 2)
            self.conv_out = CausalConv3d(self.head_channels, z2, 3)
        else:
            self.conv_out = CausalConv3d(block_in, z2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, T, H, W] -> [B, 2z, t, h, w]
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        h = F.silu(self.norm_out(h))
        if not self.cfg.dual_path:
            return self.conv_out(h)
        h = self.conv_patchify(h) + unshuffle_average(h, 2, self.head_channels)
        return self.conv_out(h) + unshuffle_average(h, 1, 2 * self.cfg.z_channels)


class VideoDecoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        g, ch, mult = cfg.norm_groups, cfg.decoder_base_channels, cfg.decoder_channel_mult
        block_in = ch * mult[-1]
        self.top_channels = block_in
        if cfg.dual_path:
            self.head_channels = 4 * cfg.z_channels * 8
            self.conv_in = CausalConv3d(cfg.z_channels, self.head_channels, 3)
            self.conv_unpatchify = ConvShuffle(self.head_channels, block_in, 2)
        else:
            self.conv_in = CausalConv3d(cfg.z_channels, block_in, 3)

        self.mid = nn.Module()
        self.mid.block_1 = ResBlock3D(block_in, block_in, g)
        self.mid.attn_1 = CausalAttnBlock(block_in, g)
        self.mid.block_2 = ResBlock3D(block_in, block_in, g)

        self.up = nn.ModuleList()
        temporal_ups = 0
        for level in reversed(range(len(mult))):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResBlock3D(block_in, ch * mult[level], g))
                block_in = ch * mult[level]
            stage.attn = nn.ModuleList()
            if level != 0:
                if level > cfg.num_spatial_only_downsamples:
                    stage.upsample = CausalUpsample3D(block_in, g)
                    temporal_ups += 1
                else:
                    stage.upsample = SpatialUpsample(block_in)
            self.up.insert(0, stage)

        self.norm_out = FrameGroupNorm(g, block_in)
        # a plain Conv3d (released key ``decoder.conv_out.weight``); forward pads the past by hand
        self.conv_out = nn.Conv3d(block_in, cfg.out_channels, 3, padding=(0, 1, 1))
        self.frames_to_drop = 2**temporal_ups - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, z, t, h, w] -> [B, 3, T, H, W]
        h = self.conv_in(z)
        if self.cfg.dual_path:
            h = h + duplicate_shuffle(z, 1, self.head_channels)
            h = self.conv_unpatchify(h) + duplicate_shuffle(h, 2, self.top_channels)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        h = F.silu(self.norm_out(h))
        h = self.conv_out(F.pad(h, (0, 0, 0, 0, 2, 0)))
        return h[:, :, self.frames_to_drop :]


# --------------------------------------------------------------------------------------------------------
# the autoencoder


class CausalVideoVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg)
        self.decoder = VideoDecoder(cfg)

    @property
    def spatial_compression(self) -> int:
        return self.cfg.spatial_compression

    @property
    def temporal_compression(self) -> int:
        return self.cfg.temporal_compression

    # --- encoding ---------------------------------------------------------------------------------------

    def _check_video(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[2] != self.cfg.in_channels:
            raise ValueError(f"video must be [B, T, {self.cfg.in_channels}, H, W], got {tuple(video.shape)}")
        s = self.cfg.spatial_compression
        if video.shape[-1] % s or video.shape[-2] % s:
            raise ValueError(f"video height/width {tuple(video.shape[-2:])} must be multiples of {s}")
        self.cfg.latent_frames(video.shape[1])  # raises on a bad frame count

    def encode_distribution(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, T, 3, H, W] in [-1, 1] -> (mean, logvar), each [B, F, z, h, w]; chunks encoded independently."""
        self._check_video(video)
        b = video.shape[0]
        x = video.transpose(1, 2)  # [B, 3, T, H, W]
        chunks = list(x.split(self.cfg.chunk_frames, dim=2))
        outs = []
        # equal-length chunks are independent, so run them as one batch
        full = [c for c in chunks if c.shape[2] == self.cfg.chunk_frames]
        if full:
            y = self.encoder(torch.cat(full, dim=0))  # [(n*B), 2z, t, h, w]
            outs.extend(y.split(b, dim=0))
        if len(full) != len(chunks):
            outs.append(self.encoder(chunks[-1]))
        params = torch.cat(outs, dim=2).transpose(1, 2)  # [B, F, 2z, h, w]
        mean, logvar = params.chunk(2, dim=2)
        return mean, logvar.clamp(self.cfg.logvar_min, self.cfg.logvar_max)

    def encode(
        self,
        video: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ):
        """Latents [B, F, z, h, w]; ``sample=True`` draws from the posterior as the release does.

        ``generator`` is one generator for the batch, or a list of one per sample: then each sample's draw
        depends on its own generator only, not on the batch it shares."""
        mean, logvar = self.encode_distribution(video)
        z = mean
        if sample:
            if isinstance(generator, (list, tuple)):
                if len(generator) != mean.shape[0]:
                    raise ValueError(f"{len(generator)} generators for a batch of {mean.shape[0]}")
                # drawn where each generator lives (a CPU generator gives the same draw for a GPU encode)
                noise = torch.stack(
                    [torch.randn(mean.shape[1:], generator=g, device=g.device, dtype=torch.float32) for g in generator]
                )
            else:
                where = generator.device if generator is not None else mean.device
                noise = torch.randn(mean.shape, generator=generator, device=where, dtype=torch.float32)
            z = mean + torch.exp(0.5 * logvar) * noise.to(mean.device, mean.dtype)
        return (z - self.cfg.shift_factor) * self.cfg.scaling_factor

    # --- decoding ---------------------------------------------------------------------------------------

    def decode_chunks(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode each latent chunk independently (no blending). [B, F, z, h, w] -> [B, T, 3, H, W]."""
        b = latents.shape[0]
        z = (latents / self.cfg.scaling_factor + self.cfg.shift_factor).transpose(1, 2)
        chunks = list(z.split(self.cfg.latent_frames_per_chunk, dim=2))
        outs = []
        full = [c for c in chunks if c.shape[2] == self.cfg.latent_frames_per_chunk]
        if full:
            outs.extend(self.decoder(torch.cat(full, dim=0)).split(b, dim=0))
        if len(full) != len(chunks):
            outs.append(self.decoder(chunks[-1]))
        return torch.cat(outs, dim=2).transpose(1, 2)

    def blend_boundaries(self, video: torch.Tensor) -> torch.Tensor:
        """Mix the last frame of each chunk with the first of the next, in the release's order.

        first_of_next' = keep*first_of_next + (1-keep)*last ; last' = keep*last + (1-keep)*first_of_next'
        """
        n = self.cfg.chunk_frames
        if video.shape[1] <= n:
            return video
        keep, mix = self.cfg.blend_keep, 1.0 - self.cfg.blend_keep
        front = torch.arange(n - 1, video.shape[1] - 1, n, device=video.device)
        back = front + 1
        last, first = video[:, front], video[:, back]
        new_first = first * keep + last * mix
        new_last = last * keep + new_first * mix
        video = video.clone()
        video[:, back] = new_first
        video[:, front] = new_last
        return video

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, F, z, h, w] -> video [B, T, 3, H, W] (about [-1, 1]), chunk boundaries blended."""
        if latents.ndim != 5 or latents.shape[2] != self.cfg.z_channels:
            raise ValueError(
                f"latents must be [B, F, {self.cfg.z_channels}, h, w], got {tuple(latents.shape)}"
            )
        return self.blend_boundaries(self.decode_chunks(latents))

    def forward(self, video: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None):
        """Training pass: (reconstruction, mean, logvar). Chunks are decoded without boundary blending."""
        mean, logvar = self.encode_distribution(video)
        z = mean
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=torch.float32)
            z = mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)
        recon = self.decode_chunks((z - self.cfg.shift_factor) * self.cfg.scaling_factor)
        return recon, mean, logvar
