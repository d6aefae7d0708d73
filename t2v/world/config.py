"""Settings of the synthetic video world (:class:`WorldConfig`), one flat YAML file per profile.

The world is a generator of captioned videos of simple scenes (a shape of known colour moving in a known
direction on a plain background), cut together into "raw" videos with planted defects. Everything is
deterministic for ``seed``.
"""

from __future__ import annotations

import functools
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# The named colours captions may use (RGB). Chosen to be far apart in CIELAB so that a checker can tell
# them apart after blur and compression.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 170, 50),
    "cyan": (40, 200, 220),
    "blue": (30, 60, 200),
    "purple": (150, 30, 150),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
    "brown": (120, 70, 30),
}
SHAPES = ("square", "circle", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
DEFECTS = ("static", "too_fast", "dark", "blurred", "subtitles", "watermark", "black_borders", "duplicate")

PosInt = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


def rgb_to_lab(rgb) -> np.ndarray:
    """CIELAB (L in [0, 100]) of RGB uint8 values, shape [..., 3] -> float32 [..., 3] (OpenCV's D65 formulas)."""
    import cv2

    arr = np.asarray(rgb, dtype=np.float32).reshape(-1, 1, 3) / 255.0
    lab = cv2.cvtColor(arr, cv2.COLOR_RGB2Lab)
    return lab.reshape(np.shape(rgb)).astype(np.float32)


@functools.lru_cache(maxsize=4096)
def _named_distance(a: str, a_rgb: tuple, b: str, b_rgb: tuple) -> float:
    la, lb = rgb_to_lab([a_rgb, b_rgb])
    return float(np.linalg.norm(la - lb))


def colour_distance(a: str, b: str) -> float:
    """CIE76 distance between two named colours."""
    return _named_distance(a, COLOURS[a], b, COLOURS[b])


class WorldConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seed: int = Field(0, ge=0, description="the whole world is a function of this seed")
    width: int = Field(64, ge=16, le=4096, multiple_of=2, description="frame width (even, for H.264)")
    height: int = Field(64, ge=16, le=4096, multiple_of=2, description="frame height (even, for H.264)")
    fps: int = Field(25, ge=1, le=240)
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the raw mp4 files")
    num_raw_videos: int = Field(12, ge=1, le=1_000_000)
    scenes_per_video: tuple[PosInt, PosInt] = Field(
        (3, 5), description="[min, max] scenes cut into a raw video"
    )
    scene_frames: tuple[PosInt, PosInt] = Field((20, 40), description="[min, max] frames of one scene")
    objects_per_scene: tuple[PosInt, PosInt] = Field(
        (1, 1), description="[min, max] moving objects per scene"
    )
    object_size: tuple[PosInt, PosInt] = Field((12, 18), description="[min, max] object size in pixels")

    palette: list[str] = Field(
        default_factory=lambda: ["red", "green", "blue", "yellow", "white"],
        min_length=1,
        description="object colour names (from t2v.world.config.COLOURS)",
    )
    backgrounds: list[str] = Field(
        default_factory=lambda: ["gray", "blue", "brown"],
        min_length=2,
        description="background colour names; consecutive scenes differ, so cuts are visible",
    )
    min_contrast: float = Field(
        40.0, ge=0.0, le=200.0, description="least CIELAB distance between an object and its background"
    )
    shapes: list[str] = Field(default_factory=lambda: list(SHAPES), min_length=1)
    directions: list[str] = Field(default_factory=lambda: list(DIRECTIONS), min_length=1)
    speeds: dict[str, Annotated[float, Field(gt=0.0, le=1000.0)]] = Field(
        default_factory=lambda: {"slowly": 0.75, "quickly": 1.25},
        min_length=1,
        description="speed name -> pixels per frame (clipped so the object stays in frame)",
    )
    caption_speed: bool = Field(False, description="put the speed name in captions ('moving left slowly')")
    noise_std: float = Field(2.0, ge=0.0, le=64.0, description="per-pixel Gaussian noise (0-255 scale)")

    # Planted defects: the share of scenes (of readable videos) given each defect; at most one per scene,
    # allocated exactly (round(rate * scenes), at least one when the rate is positive).
    rate_static: Rate = 0.05
    rate_too_fast: Rate = 0.05
    rate_dark: Rate = 0.05
    rate_blurred: Rate = 0.05
    rate_subtitles: Rate = 0.05
    rate_watermark: Rate = 0.05
    rate_black_borders: Rate = 0.05
    rate_duplicate: Rate = 0.05
    corrupt_files: int = Field(1, ge=0, description="raw videos written as truncated or garbage files")
    too_fast_speed: float = Field(
        0.15, gt=0.0, le=2.0, description="too_fast speed, a share of the frame per frame"
    )
    dark_factor: float = Field(0.1, gt=0.0, lt=1.0, description="dark scenes are scaled by this")
    blur_sigma: float = Field(
        0.05, gt=0.0, le=1.0, description="blurred scenes' Gaussian sigma, a share of the frame"
    )
    border_fraction: float = Field(0.125, gt=0.0, lt=0.5, description="height share of each letterbox bar")

    num_heldout_prompts: int = Field(16, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _check(self):
        for name in ("scenes_per_video", "scene_frames", "objects_per_scene", "object_size"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: min ({lo}) must not exceed max ({hi})")
        for name in ("palette", "backgrounds"):
            unknown = [c for c in getattr(self, name) if c not in COLOURS]
            if unknown:
                raise ValueError(f"{name}: unknown colour(s) {unknown}; known: {sorted(COLOURS)}")
        bad = [s for s in self.shapes if s not in SHAPES]
        if bad:
            raise ValueError(f"shapes: unknown shape(s) {bad}; known: {list(SHAPES)}")
        bad = [d for d in self.directions if d not in DIRECTIONS]
        if bad:
            raise ValueError(f"directions: unknown direction(s) {bad}; known: {list(DIRECTIONS)}")
        for name, values in (
            ("palette", self.palette),
            ("backgrounds", self.backgrounds),
            ("shapes", self.shapes),
            ("directions", self.directions),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{name}: duplicate entries in {values}")
        for bg in self.backgrounds:
            if not self.object_colours_for(bg):
                raise ValueError(
                    f"backgrounds: no palette colour is at least min_contrast ({self.min_contrast}) from {bg!r}"
                )
        if self.object_size[1] * 2 > min(self.width, self.height):
            raise ValueError(
                f"object_size: max ({self.object_size[1]}) must be at most half the smaller frame side "
                f"({min(self.width, self.height)})"
            )
        total = sum(self.defect_rates().values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"rate_*: defect rates sum to {total:.3f}, must be at most 1")
        if self.corrupt_files >= self.num_raw_videos:
            raise ValueError(
                f"corrupt_files ({self.corrupt_files}) must be less than num_raw_videos ({self.num_raw_videos})"
            )
        return self

    def defect_rates(self) -> dict[str, float]:
        return {d: float(getattr(self, f"rate_{d}")) for d in DEFECTS}

    def object_colours_for(self, background: str) -> list[str]:
        """Palette colours that contrast with ``background`` (distance >= min_contrast)."""
        return [
            c for c in self.palette if c != background and colour_distance(c, background) >= self.min_contrast
        ]
