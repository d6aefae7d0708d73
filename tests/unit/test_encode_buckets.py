"""Encode buckets: the config's bucket list is validated against the VAE and the DiT before any work, and
each clip goes to the bucket of nearest aspect ratio it has the frames for, center-cropped to it."""

from __future__ import annotations

import numpy as np
import pytest

from t2v.config import ConfigError, ProjectConfig, load_config
from t2v.shards import assign_bucket, bucket_name, center_crop_box, fit_clip


def test_buckets_parse_from_strings_and_lists_and_survive_the_config_json():
    cfg = load_config("tiny", ['encode.buckets=["17x32x32", [17, 24, 40], " 9 x 40 x 24 "]', "encode.workers=3"])
    assert cfg.encode.buckets == [(17, 32, 32), (17, 24, 40), (9, 40, 24)]
    assert cfg.encode.shapes() == cfg.encode.buckets and cfg.encode.workers == 3
    again = ProjectConfig.from_json(cfg.to_json())
    assert again.encode.buckets == cfg.encode.buckets
    for profile in ("tiny", "step-video-t2v-30b"):  # no buckets: the one shape of num_frames x resolution
        encode = load_config(profile).encode
        assert encode.buckets == [] and encode.workers == 1
        assert encode.shapes() == [(encode.num_frames, *encode.resolution)]


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ('["17x32x32", "17x30x40"]', r"encode\.buckets\[1\] \(17x30x40\): height and width must be multiples of 8"),
        ('["17x32x32", "16x32x32"]', r"encode\.buckets\[1\] \(16x32x32\): .*1 \+ k \* 8"),
        ('["17x32x32", "17x0x32"]', r"encode\.buckets\[1\]: '17x0x32': frames, height and width must be >= 1"),
        ('["17x32"]', r"encode\.buckets\[0\]: '17x32' is not 'FRAMESxHEIGHTxWIDTH'"),
        ('[[17, 32, 32], [17, 32]]', r"encode\.buckets\[1\]: \[17, 32\] is not"),
        ('["17x32x32", [17, 32, 32]]', r"encode\.buckets\[1\]: \[17, 32, 32\] is listed twice"),
        ("17x32x32", r"encode\.buckets: expected a list"),
    ],
)
def test_a_bad_bucket_is_rejected_naming_the_field(buckets, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", [f"encode.buckets={buckets}"])


def test_bucket_sizes_follow_the_dit_patch_size():
    # 8x spatial VAE x patch size 2: 24 is no longer a multiple of the latent step of 16
    with pytest.raises(ConfigError, match=r"encode\.buckets\[0\] \(17x24x32\).*multiples of 16 .*dit\.patch_size 2"):
        load_config("tiny", ["dit.patch_size=2", 'encode.buckets=["17x24x32"]'])
    with pytest.raises(ConfigError, match="workers"):
        load_config("tiny", ["encode.workers=0"])


BUCKETS = [(17, 64, 64), (17, 48, 80), (17, 80, 48)]


@pytest.mark.parametrize(
    ("frames", "height", "width", "buckets", "expected"),
    [
        (17, 64, 64, BUCKETS, (17, 64, 64)),  # square
        (30, 480, 640, BUCKETS, (17, 48, 80)),  # 4:3 is nearer 3:5 (x1.25) than 1:1 (x1.33)
        (17, 640, 360, BUCKETS, (17, 80, 48)),  # portrait 16:9 -> 5:3
        (17, 200, 1000, BUCKETS, (17, 48, 80)),  # very wide: the widest
        # ties, compared exactly: a square clip is as far from 3:5 as from 5:3 -> the first listed
        (17, 50, 50, [(17, 48, 80), (17, 80, 48)], (17, 48, 80)),
        (17, 50, 50, [(17, 80, 48), (17, 48, 80)], (17, 80, 48)),
        # the same aspect: the bucket with more frames the clip has, then the first listed
        (40, 64, 64, [(17, 64, 64), (33, 64, 64), (49, 64, 64)], (33, 64, 64)),
        (40, 64, 64, [(17, 32, 32), (17, 64, 64)], (17, 32, 32)),
        # only buckets the clip has the frames for: a 20-frame 3:5 clip cannot fill the 33-frame 3:5 one
        (20, 480, 800, [(17, 64, 64), (33, 48, 80)], (17, 64, 64)),
        (40, 480, 800, [(17, 64, 64), (33, 48, 80)], (33, 48, 80)),
        # shorter than every bucket: the nearest aspect among those with the fewest frames
        (5, 480, 800, [(17, 64, 64), (17, 48, 80), (33, 48, 80)], (17, 48, 80)),
        (5, 64, 64, [(33, 48, 80), (49, 64, 64)], (33, 48, 80)),
    ],
)
def test_a_clip_goes_to_the_bucket_of_nearest_aspect_it_has_the_frames_for(frames, height, width, buckets, expected):
    assert assign_bucket(frames, height, width, buckets) == expected


def test_assign_bucket_rejects_nothing_to_assign():
    with pytest.raises(ValueError, match="no buckets"):
        assign_bucket(17, 32, 32, [])
    with pytest.raises(ValueError, match="no pixels"):
        assign_bucket(0, 32, 32, BUCKETS)
    assert bucket_name((17, 48, 80)) == "17x48x80"


def test_fit_clip_center_crops_to_the_bucket_aspect_and_pads_short_clips():
    frames = np.zeros((5, 32, 64, 3), np.uint8)
    frames[:, :, :16] = (255, 0, 0)  # left band, cut by a square crop
    frames[:, :, 16:48] = (0, 255, 0)  # the centered 32x32 window
    frames[:, :, 48:] = (0, 0, 255)
    frames[4, :, 16:48] = (0, 200, 0)  # the last frame differs, to see it repeated
    assert center_crop_box(32, 64, 8, 8) == (0, 16, 32, 32)
    assert center_crop_box(64, 32, 1, 1) == (16, 0, 32, 32)
    assert center_crop_box(30, 50, 24, 40) == (0, 0, 30, 50)  # already 3:5
    out = fit_clip(frames, 9, (16, 16), crop=True)
    assert out.shape == (9, 16, 16, 3) and out.dtype == np.uint8
    assert (out[:4] == (0, 255, 0)).all() and (out[4:] == (0, 200, 0)).all()
    stretched = fit_clip(frames, 3, (16, 16))  # without crop: the old plain resize keeps every band
    assert stretched.shape == (3, 16, 16, 3) and (stretched[:, :, 0] == (255, 0, 0)).all()
    assert (stretched[:, :, -1] == (0, 0, 255)).all()
