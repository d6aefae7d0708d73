"""Scene descriptions (what a caption says) and their sampling.

A :class:`SceneSpec` is a background colour plus moving :class:`ObjectSpec` s; ``spec.caption()`` is a
deterministic template, for example ``"a red square moving left on a blue background"``. Specs are
pydantic models: ``spec.to_dict()`` / ``SceneSpec.from_dict(d)`` round-trip through JSON.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from t2v.world.config import COLOURS, DIRECTIONS, SHAPES, WorldConfig

# Unit vectors (dx, dy) in image coordinates (y grows downwards).
DIRECTION_VECTORS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}

_CAPTION_WORDS = ("a", "an", "moving", "on", "background", "and")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _known_colour(name: str) -> str:
    if name not in COLOURS:
        raise ValueError(f"unknown colour {name!r}; known: {sorted(COLOURS)}")
    return name


#: a colour name of the world's palette (``COLOURS``)
Colour = Annotated[str, AfterValidator(_known_colour)]


class ObjectSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Literal["square", "circle", "triangle"]
    colour: Colour
    size: int = Field(ge=1, description="side / diameter in pixels")
    direction: Literal["left", "right", "up", "down"]
    speed: float = Field(ge=0.0, description="pixels per frame; 0 is a static object")
    speed_name: str | None = Field(None, description="the config's name for the speed (captioned if asked)")


    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def phrase(self, with_speed: bool = False) -> str:
        text = f"{_article(self.colour)} {self.colour} {self.shape}"
        if self.speed > 0:
            text += f" moving {self.direction}"
            if with_speed and self.speed_name:
                text += f" {self.speed_name}"
        return text


class SceneSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    objects: list[ObjectSpec] = Field(min_length=1)
    background: Colour
    caption_speed: bool = False


    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.background]

    def caption(self) -> str:
        """``"a red square moving left on a blue background"``; objects joined with "and"."""
        objs = " and ".join(o.phrase(self.caption_speed) for o in self.objects)
        return f"{objs} on {_article(self.background)} {self.background} background"

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict) -> SceneSpec:
        return cls.model_validate(data)

    def with_speed(self, speed: float) -> SceneSpec:
        """The same scene with every object at ``speed`` px/frame (0 makes it static)."""
        return self.model_copy(
            update={"objects": [o.model_copy(update={"speed": float(speed)}) for o in self.objects]}
        )

    def scaled(self, factor: float) -> SceneSpec:
        """Sizes and speeds scaled by ``factor`` (to render a spec at another resolution)."""
        objs = [
            o.model_copy(update={"size": max(1, int(round(o.size * factor))), "speed": o.speed * factor})
            for o in self.objects
        ]
        return self.model_copy(update={"objects": objs})


def vocabulary(cfg: WorldConfig) -> list[str]:
    """Every word a caption of this world can contain (sorted, unique)."""
    words = set(_CAPTION_WORDS)
    words.update(cfg.palette)
    words.update(cfg.backgrounds)
    words.update(cfg.shapes)
    words.update(cfg.directions)
    if cfg.caption_speed:
        for name in cfg.speeds:
            words.update(name.split())
    return sorted(words)


def sample_object(rng: np.random.Generator, cfg: WorldConfig, background: str) -> ObjectSpec:
    colours = cfg.object_colours_for(background)
    speed_name = str(rng.choice(sorted(cfg.speeds)))
    return ObjectSpec(
        shape=str(rng.choice(cfg.shapes)),
        colour=str(rng.choice(colours)),
        size=int(rng.integers(cfg.object_size[0], cfg.object_size[1] + 1)),
        direction=str(rng.choice(cfg.directions)),
        speed=float(cfg.speeds[speed_name]),
        speed_name=speed_name,
    )


def sample_scene(
    rng: np.random.Generator, cfg: WorldConfig, exclude_background: str | None = None
) -> SceneSpec:
    """A random scene: a background (not ``exclude_background``) and contrasting moving objects."""
    backgrounds = [b for b in cfg.backgrounds if b != exclude_background] or list(cfg.backgrounds)
    background = str(rng.choice(backgrounds))
    n = int(rng.integers(cfg.objects_per_scene[0], cfg.objects_per_scene[1] + 1))
    objects = [sample_object(rng, cfg, background) for _ in range(n)]
    return SceneSpec(objects=objects, background=background, caption_speed=cfg.caption_speed)


HELDOUT_STREAM = 0x48454C44  # "HELD": a seed stream apart from the raw videos' streams


def heldout_prompts(cfg: WorldConfig, n: int | None = None) -> list[SceneSpec]:
    """``n`` (default ``cfg.num_heldout_prompts``) scenes for evaluation, from their own seed stream."""
    n = cfg.num_heldout_prompts if n is None else int(n)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, HELDOUT_STREAM]))
    return [sample_scene(rng, cfg) for _ in range(n)]


__all__ = [
    "COLOURS",
    "DIRECTIONS",
    "DIRECTION_VECTORS",
    "SHAPES",
    "ObjectSpec",
    "SceneSpec",
    "heldout_prompts",
    "sample_object",
    "sample_scene",
    "vocabulary",
]
