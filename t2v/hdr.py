"""HDR pictures as SDR: the PQ (SMPTE ST 2084: HDR10) and HLG (ARIB STD-B67) transfers, BT.2020 to
BT.709, and a highlight roll-off, so that an HDR source gives clips like the SDR ones the models train on.
Numpy on 16-bit RGB pictures (and the HDR10 metadata a decoded frame carries); :func:`t2v.video.to_rgb`
calls it for frames tagged with an HDR transfer."""

from __future__ import annotations

import functools
import struct

import numpy as np

# AVColorTransferCharacteristic / AVColorPrimaries values
_PQ_TRANSFER, _HLG_TRANSFER, _BT2020_PRIMARIES = 16, 18, 9
#: Nits of HDR reference (diffuse) white, ITU-R BT.2408: it becomes SDR white.
HDR_REFERENCE_WHITE_NITS = 203.0
#: Peak nits an HLG picture is displayed at (the BT.2100 reference display; its OOTF gamma is 1.2), and
#: the peak assumed for a PQ picture that carries neither a content light level nor a mastering display.
HLG_DISPLAY_PEAK_NITS = PQ_DEFAULT_PEAK_NITS = 1000.0
#: SDR linear light (1 = white) below which the tone curve is the identity; brighter light is rolled off.
TONEMAP_KNEE = 0.75
_BT2020_TO_BT709 = np.array(  # linear RGB, D65 (BT.2087)
    [[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]], np.float32
)
_BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], np.float32)


def hdr_transfer(frame) -> str:
    """``"pq"`` (SMPTE ST 2084: HDR10, Dolby Vision's base layer) or ``"hlg"`` (ARIB STD-B67: broadcast HDR,
    phones' HDR video) for a frame tagged with an HDR transfer, else ``""`` (SDR, or untagged)."""
    trc = int(getattr(frame, "color_trc", 0) or 0)
    return {_PQ_TRANSFER: "pq", _HLG_TRANSFER: "hlg"}.get(trc, "")


def hdr_peak_nits(frame) -> float:
    """The brightest light a PQ frame's master holds, in nits, from the frame's HDR10 metadata: the content
    light level's MaxCLL, else the mastering display's peak luminance, else :data:`PQ_DEFAULT_PEAK_NITS`
    (FFmpeg's HEVC, AV1 and VP9 decoders attach both SEI messages to every frame that follows them)."""
    from av.sidedata.sidedata import Type

    mastering = 0.0
    for data in getattr(frame, "side_data", ()):
        raw = bytes(data)
        if data.type == Type.CONTENT_LIGHT_LEVEL and len(raw) >= 4:
            max_cll = struct.unpack_from("<I", raw)[0]  # AVContentLightMetadata.MaxCLL
            if max_cll:
                return float(min(max(max_cll, HDR_REFERENCE_WHITE_NITS), 10000))
        elif data.type == Type.MASTERING_DISPLAY_METADATA and len(raw) >= 88:
            # AVMasteringDisplayMetadata: primaries and white point (8 rationals), min and max luminance
            # (rationals at bytes 64 and 72), has_primaries, has_luminance (ints at 80 and 84)
            num, den = struct.unpack_from("<ii", raw, 72)
            if struct.unpack_from("<i", raw, 84)[0] and den > 0:
                mastering = num / den
    if mastering > 0:
        return float(min(max(mastering, HDR_REFERENCE_WHITE_NITS), 10000))
    return PQ_DEFAULT_PEAK_NITS


@functools.lru_cache(maxsize=2)
def _hdr_signal_to_nits(transfer: str) -> np.ndarray:
    """A table from 16-bit signal to display light in nits: the PQ EOTF, or for HLG the inverse OETF
    (scene light, 0..1; the OOTF, which mixes the channels, follows in :func:`tonemap_hdr`)."""
    e = np.arange(65536, dtype=np.float64) / 65535.0
    if transfer == "pq":  # SMPTE ST 2084
        m1, m2 = 2610 / 16384, 2523 / 4096 * 128
        c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = e ** (1 / m2)
        return (10000.0 * (np.maximum(p - c1, 0) / (c2 - c3 * p)) ** (1 / m1)).astype(np.float32)
    a, b, c = 0.17883277, 0.28466892, 0.55991073  # ARIB STD-B67 / BT.2100 HLG
    return np.where(e <= 0.5, e * e / 3, (np.exp((e - c) / a) + b) / 12).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sdr_encode_table(levels: int = 4096) -> np.ndarray:
    """SDR linear light (``levels`` steps over 0..1) to 8-bit BT.709 signal for a BT.1886 (gamma 2.4)
    display."""
    return np.round(255.0 * (np.arange(levels + 1) / levels) ** (1 / 2.4)).astype(np.uint8)


def tonemap_hdr(rgb48: np.ndarray, transfer: str, bt2020: bool = True, peak_nits: float | None = None) -> np.ndarray:
    """A PQ or HLG picture (16-bit RGB ``[H, W, 3]``, as swscale gives it) as SDR BT.709 RGB ``uint8``.

    Display light (PQ's EOTF; HLG's inverse OETF and its OOTF for a 1000-nit display) is scaled so that
    HDR reference white (203 nits, BT.2408) is SDR white, taken from BT.2020 to BT.709 primaries
    (out-of-gamut colours clipped), and highlights above :data:`TONEMAP_KNEE` are rolled off towards the
    picture's possible peak (an extended Reinhard curve on the largest channel, so hues are kept); below the
    knee the mapping is exact, so SDR content carried in an HDR file comes back as it was. Then encoded for a
    gamma-2.4 display. ``peak_nits`` (PQ; :func:`hdr_peak_nits` reads it off a frame) is the light that
    becomes SDR white: brighter light is clipped. HLG's peak is its display's, 1000 nits."""
    if transfer not in ("pq", "hlg"):
        raise ValueError(f"transfer must be 'pq' or 'hlg', got {transfer!r}")
    import cv2  # per-pixel 3x3 products and channel maxima, several times faster than numpy's

    h, w, _ = rgb48.shape
    light = _hdr_signal_to_nits(transfer)[rgb48]  # [H, W, 3] float32
    if transfer == "hlg":  # OOTF: Ld = peak * Ys^(gamma - 1) * E, gamma 1.2 at 1000 nits
        luma = _BT2020_LUMA if bt2020 else np.array([0.2126, 0.7152, 0.0722], np.float32)
        ys = cv2.transform(light, luma.reshape(1, 3)).reshape(h, w)
        np.maximum(ys, 1e-6, out=ys)
        light *= (HLG_DISPLAY_PEAK_NITS * np.power(ys, np.float32(0.2)))[..., None]
        peak = HLG_DISPLAY_PEAK_NITS
    else:
        peak = float(peak_nits or PQ_DEFAULT_PEAK_NITS)
    # to BT.709 primaries and SDR white = 1 in one product
    to_sdr = (_BT2020_TO_BT709 if bt2020 else np.eye(3, dtype=np.float32)) / np.float32(HDR_REFERENCE_WHITE_NITS)
    light = cv2.transform(light, to_sdr)
    np.maximum(light, 0.0, out=light)
    k = np.float32(TONEMAP_KNEE)
    big = np.float32((peak / HDR_REFERENCE_WHITE_NITS - k) / (1 - k))
    m = np.maximum(np.maximum(light[..., 0], light[..., 1]), light[..., 2])  # the largest channel
    bright = m > k
    if bright.any():
        u = np.maximum(m - k, 0) / (1 - k)
        y = k + (1 - k) * u * (1 + u / (big * big)) / (1 + u)  # extended Reinhard: u = big (the peak) maps to 1
        light *= np.where(bright, np.minimum(y, 1) / np.maximum(m, 1e-6), np.float32(1))[..., None]
    table = _sdr_encode_table()
    levels = np.float32(len(table) - 1)
    light *= levels
    light += np.float32(0.5)
    np.minimum(light, levels, out=light)
    return table[light.astype(np.int32)]


__all__ = ["hdr_transfer", "hdr_peak_nits", "tonemap_hdr", "HDR_REFERENCE_WHITE_NITS", "TONEMAP_KNEE"]
