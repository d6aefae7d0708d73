"""The synthetic video world: captioned scenes of moving shapes, raw videos with planted defects, and a
checker that scores a video against its scene description."""

from t2v.world.checker import score_batch, score_video
from t2v.world.config import COLOURS, DEFECTS, DIRECTIONS, SHAPES, WorldConfig, colour_distance, rgb_to_lab
from t2v.world.raw import (
    METADATA_FILE,
    RawVideoRecord,
    SceneRecord,
    generate_raw_videos,
    load_raw_metadata,
    plan_raw_videos,
    render_raw_video,
    render_scene_record,
)
from t2v.world.render import render_scene
from t2v.world.scenes import ObjectSpec, SceneSpec, heldout_prompts, sample_scene, vocabulary

__all__ = [
    "COLOURS",
    "DEFECTS",
    "DIRECTIONS",
    "METADATA_FILE",
    "SHAPES",
    "ObjectSpec",
    "RawVideoRecord",
    "SceneRecord",
    "SceneSpec",
    "WorldConfig",
    "colour_distance",
    "generate_raw_videos",
    "heldout_prompts",
    "load_raw_metadata",
    "plan_raw_videos",
    "render_raw_video",
    "render_scene",
    "render_scene_record",
    "rgb_to_lab",
    "sample_scene",
    "score_batch",
    "score_video",
    "vocabulary",
]
