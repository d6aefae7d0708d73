"""t2v.alpha: compositing pictures with transparency over a background."""

from __future__ import annotations

import numpy as np
import pytest

from t2v.alpha import composite_over, format_has_alpha


def test_compositing_is_the_integer_formula_for_every_colour_alpha_and_background():
    c = np.arange(256, dtype=np.int64)
    colour, alpha = np.meshgrid(c, c, indexing="ij")
    rgba = np.stack([colour, 255 - colour, colour // 2, alpha], -1).astype(np.uint8)
    for bg in range(256):
        background = (bg, 255 - bg, (bg * 7) % 256)
        got = composite_over(rgba, background).astype(np.int64)
        want = (rgba[..., :3].astype(np.int64) * alpha[..., None] + np.asarray(background) * (255 - alpha[..., None]) + 127) // 255
        assert np.array_equal(got, want), bg


def test_opaque_pictures_keep_their_colour_and_bad_arrays_are_refused():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert np.array_equal(composite_over(rgba, (9, 9, 9)), rgba[..., :3])
    with pytest.raises(ValueError, match="RGBA"):
        composite_over(rgba[..., :3])


def test_formats_that_can_be_transparent():
    assert all(format_has_alpha(f) for f in ("rgba", "argb", "bgra", "yuva420p", "yuva444p12le", "gbrap", "ya8", "pal8"))
    assert not any(format_has_alpha(f) for f in ("yuv420p", "rgb24", "yuv422p10le", "gray", "", "no-such-format"))


@pytest.mark.parametrize("source", ["prores4444", "ffv1", "utvideo"])  # 12-bit and 8-bit alpha planes
def test_an_alpha_plane_opaque_throughout_is_read_as_such(tmp_path, source):
    import av

    from t2v.alpha import opaque_throughout
    from tests.fixtures.curate_media import ALPHA_SOURCES, write_alpha_video

    rgba = np.full((2, 32, 48, 4), 255, np.uint8)
    rgba[..., :3] = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    seen = []
    for name, transparent in (("opaque", None), ("one-pixel", (17, 30))):
        if transparent:
            rgba[:, transparent[0], transparent[1], 3] = 0
        path = write_alpha_video(tmp_path / f"{name}{ALPHA_SOURCES[source][0]}", rgba, source)
        with av.open(str(path)) as c:
            seen.append(opaque_throughout(next(c.decode(video=0))))
    assert seen == [True, False]


def test_packed_rgba_frames_opaque_throughout_are_read_as_such():
    import av

    from t2v.alpha import opaque_throughout

    rgba = np.random.default_rng(1).integers(0, 256, (30, 50, 4), dtype=np.uint8)  # (odd row padding)
    for name in ("rgba", "bgra", "argb", "abgr"):
        where = 0 if name.startswith("a") else 3
        pixels = rgba.copy()
        pixels[..., where] = 255
        assert opaque_throughout(av.VideoFrame.from_ndarray(pixels, format=name)), name
        pixels[7, 41, where] = 12
        assert not opaque_throughout(av.VideoFrame.from_ndarray(pixels, format=name)), name
