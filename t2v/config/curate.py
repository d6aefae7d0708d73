"""Curation settings (:class:`CurateConfig`), validated by pydantic before any work starts.

The Step-Video-T2V report gives no curation thresholds; the values here are our choices. Every score is
measured on frames resized so that their longer side is ``analysis_size`` pixels, which keeps thresholds
independent of the source resolution (motion is measured in percent of the frame width per frame).
A bad value raises ``pydantic.ValidationError`` naming the field and the allowed range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

Byte = Annotated[int, Field(ge=0, le=255)]


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- input ---
    input_table: str = Field(
        "metadata.jsonl",
        min_length=1,
        description="the table of videos (.jsonl, .csv or .parquet): a name under the raw folder, or a URI",
    )

    max_source_pixels: int = Field(
        8192 * 8192,
        ge=1,
        description="a video whose pictures have more pixels than this is recorded as too_large and not"
        " decoded (its decoder's buffers alone could exhaust the pod's memory); 8192 x 8192 by default",
    )
    min_source_side: int = Field(
        16,
        ge=0,
        description="a video whose picture, as shown (non-square pixels made square), has a shorter side of"
        " fewer pixels than this is recorded as too_small and not decoded: a thumbnail or an icon's"
        " animation, whose clips would be its pixels blown up; 0 = no limit",
    )
    max_video_seconds: float = Field(
        0.0,
        ge=0,
        description="a video longer than this is recorded as too_long: one whose header declares it is not"
        " decoded, one that does not say is stopped when its decoding passes it (a multi-hour stream or"
        " recording would hold a core for as long as the rest of a shard); 0 = no limit",
    )
    keep_truncated: bool = Field(
        False,
        description="a truncated video (a download cut short: decoding stops early, or ends well before the"
        " declared duration or frame count) keeps the clips of the pictures it has, curated as if the file"
        " ended there, and its scenes record says why (source.truncated); off, it is recorded as corrupt"
        " and loses them",
    )
    drop_spherical: bool = Field(
        True,
        description="a 360-degree or VR video (spherical projection metadata: equirectangular, cubemap,"
        " fisheye) is recorded as spherical: its pictures are a projection of a sphere, not a view",
    )
    drop_stereo_3d: bool = Field(
        True,
        description="a stereoscopic 3D video (frame-packing metadata: side by side, top and bottom, frame"
        " sequence...) is recorded as stereo_3d: each picture holds two views",
    )
    max_unavailable_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="a shard more of whose videos than this share are unavailable (an outage of the object"
        " store or the network, expired signed URLs) fails, naming how many and the first reason, instead"
        " of finishing with what it could read: its task's retry (the pipeline's) tries them again and"
        " takes every other video from the work in progress; 1 never fails",
    )
    retry_unavailable: bool = Field(
        True,
        description="a finished shard with videos recorded as unavailable (their source could not be had"
        " after the retries: refused, a server error, the network) is run again when its task is: those"
        " videos are tried again and every other one is taken from the finished run's results (kept in the"
        " shard's work folder until none is unavailable); off, a finished shard is never run again",
    )
    max_video_crashes: int = Field(
        2,
        ge=0,
        description="a video during which the stage's process died this many times (out of memory, killed,"
        " a decoder crash; counted across reruns of the shard) is recorded as crashed and skipped, so the"
        " shard can finish; 0 never skips",
    )
    max_video_stall_s: float = Field(
        600.0,
        ge=0.0,
        description="a video whose curation makes no progress for this many seconds (no frame decoded, no"
        " score, model call or downloaded chunk finished: a decoder or a read that never returns) is"
        " interrupted and recorded as stalled, and the shard goes on; raise it for models that take longer"
        " than this on one clip; 0 waits for ever",
    )

    # --- scene splitting (PySceneDetect) ---
    scene_detector: Literal["content", "adaptive"] = Field(
        "content", description="PySceneDetect detector class: ContentDetector or AdaptiveDetector"
    )
    scene_threshold: float = Field(
        27.0,
        gt=0.0,
        le=255.0,
        description="ContentDetector threshold (or AdaptiveDetector adaptive_threshold)",
    )
    scene_min_len: int = Field(6, ge=1, le=100_000, description="minimum scene length in frames")
    scene_confirm_min_diff: float = Field(
        12.0,
        ge=0.0,
        le=255.0,
        description="a cut stands if frames 4 before and 3 after differ by at least this (mean RGB, brightness"
        " matched): flashes and fades are no cuts; 0 = off",
    )
    scene_transition_max_seconds: float = Field(
        1.5,
        ge=0.0,
        le=10.0,
        description="gradual transitions (dissolves, cross-fades between two shots) up to this long are found"
        " and their mixed frames recorded as transition, cut off both shots' clips; 0 = off",
    )
    scene_trim_frames: int = Field(
        1, ge=0, le=100, description="frames dropped at each end of a scene (cut transitions)"
    )

    # --- clips ---
    clip_min_frames: int = Field(16, ge=2, le=100_000, description="shorter scene remainders are dropped")
    clip_max_frames: int = Field(64, ge=2, le=100_000, description="longer scenes are cut into several clips")

    # --- scoring ---
    analysis_size: int = Field(128, ge=32, le=2048, description="longer side (pixels) frames are scored at")
    max_analysis_frames: int = Field(16, ge=2, le=1024, description="frames sampled per clip for scoring")
    motion_pairs: int = Field(8, ge=1, le=1024, description="frame pairs per clip given to Farneback optical flow")
    dark_max_luma: float = Field(40.0, ge=0.0, le=255.0, description="dark if mean luma (0-255) is below")
    dark_max_highlight: float = Field(
        80.0,
        ge=0.0,
        le=255.0,
        description="... and the highlight (95th percentile of the brightest channel) is below: a black"
        " background with bright content is not dark",
    )
    blur_min_sharpness: float = Field(
        0.18,
        ge=0.0,
        le=10.0,
        description="blurred if the edge sharpness (steepest slope / contrast range, ~0.4/sigma) is below",
    )
    blur_min_contrast: float = Field(
        40.0,
        ge=0.0,
        le=255.0,
        description="blur is judged only on clips whose principal colour channel spans at least this many"
        " levels (0.5th to 99.5th percentile): below it the edge sharpness is codec ripple (dark, flat"
        " pictures); 0 judges every clip",
    )
    motion_min: float = Field(
        0.2, ge=0.0, le=100.0, description="static if optical-flow motion (% of width per frame) is below"
    )
    motion_max: float = Field(
        6.0, gt=0.0, le=1000.0, description="too fast if optical-flow motion (% of width per frame) is above"
    )
    border_max_level: float = Field(
        12.0, ge=0.0, le=127.0, description="rows/columns whose brightest channel stays below this are bars"
    )
    border_min_fraction: float = Field(
        0.05, gt=0.0, le=0.5, description="black_borders if bars cover at least this share of height or width"
    )
    crop_black_bars: bool = Field(
        False,
        description="crop the black bars a video shows throughout (letterbox, pillarbox; found on pictures"
        " sampled across it) before the output crop, instead of dropping its clips as black_borders",
    )
    text_band_fraction: float = Field(0.25, gt=0.0, le=0.5, description="bottom band searched for subtitles")
    subtitle_threshold: float = Field(
        0.05, ge=0.0, le=1.0, description="subtitles if the bright thin-stroke density of the band exceeds"
    )
    watermark_corner_fraction: float = Field(
        0.25, gt=0.0, le=0.5, description="corner box (share of height and width) searched for watermarks"
    )
    watermark_threshold: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="watermark if the persistent thin-stroke density of a corner exceeds",
    )
    saturation_max: float = Field(
        0.95, ge=0.0, le=1.0, description="oversaturated if mean HSV saturation exceeds"
    )

    # --- model-based scores (components.curate.models), run on clips the classical filters kept ---
    ocr: bool = Field(False, description="burnt-in text by rapidocr's packaged PP-OCRv4 text detector")
    ocr_frames: int = Field(3, ge=1, le=64, description="frames per clip given to the text detector")
    ocr_size: int = Field(320, ge=32, le=4096, description="longer side (pixels) the text detector sees")
    ocr_box_threshold: float = Field(0.5, ge=0.0, le=1.0, description="text detector box score at least")
    ocr_subtitle_max_area: float = Field(
        0.004, ge=0.0, le=1.0, description="subtitles if text boxes centred in the bottom band cover more"
    )
    ocr_watermark_max_area: float = Field(
        0.002, ge=0.0, le=1.0, description="watermark if text boxes centred in a corner cover more"
    )
    ocr_text_max_area: float = Field(0.02, ge=0.0, le=1.0, description="text if text boxes cover more of the frame")
    nsfw: bool = Field(False, description="NSFW by nudenet's packaged detector")
    nsfw_frames: int = Field(3, ge=1, le=64, description="frames per clip given to the NSFW detector")
    nsfw_threshold: float = Field(0.5, ge=0.0, le=1.0, description="nsfw if an exposed-class score exceeds")
    aesthetic_model: str | None = Field(None, description="CLIP folder + aesthetic_head.safetensors (local or s3://)")
    aesthetic_min: float = Field(-1e9, description="low_aesthetic if the aesthetic score is below")
    clip_model: str | None = Field(None, description="transformers CLIP folder for text-video alignment")
    clip_min_similarity: float = Field(-1.0, ge=-1.0, le=1.0, description="misaligned if CLIP similarity is below")
    caption_model: str | None = Field(None, description="transformers image-text-to-text folder for captions")
    caption_short_tokens: int = Field(16, ge=1, le=512)
    caption_dense_tokens: int = Field(64, ge=1, le=2048)
    caption_dense_prompt: str = Field("a detailed description of the video:", description="dense caption prompt")
    flow_model: str | None = Field(None, description="RAFT folder (raft.safetensors + raft.json) for optical flow")
    raft_motion_min: float = Field(0.0, ge=0.0, le=100.0, description="static if RAFT motion is below (0 = off)")
    models_on_dropped: bool = Field(False, description="also run the models on clips a classical filter dropped")

    # --- near-duplicates and balancing (cross-clip; within a shard and again across shards) ---
    dedup_hash_size: int = Field(8, ge=4, le=32, description="perceptual hash side (bits = side^2)")
    dedup_frames: int = Field(
        5, ge=1, le=64, description="evenly spaced frames per clip hashed and thumbnailed (each hash is an index key)"
    )
    dedup_max_hamming: float = Field(
        16.0,
        ge=0.0,
        le=1024.0,
        description="near-duplicate candidates: mean Hamming distance of the frames' perceptual hashes at most",
    )
    dedup_max_colour_distance: float = Field(
        3.5,
        ge=0.0,
        le=300.0,
        description="candidates are duplicates if their colour thumbnails, lined up in time, differ by at most this (median per frame, CIELAB units)",
    )
    dedup_neighbours: int = Field(8, ge=1, le=1024, description="index neighbours checked per frame hash")
    dedup_against: list[str] = Field(
        default_factory=list,
        description="earlier curate outputs (folders holding manifest.jsonl, or the manifests; local or s3://)"
        " whose kept clips this run's are checked against: a near-duplicate of one is dropped as duplicate,"
        " duplicate_source naming the manifest (a data set grown batch by batch keeps one copy of a shot)",
    )
    dedup_exact_max: int = Field(
        20_000, ge=2, description="an exact (flat) index up to this many frame hashes (keys), an IVF index above"
    )
    dedup_nprobe: int = Field(16, ge=1, le=4096, description="IVF lists probed per query")
    balance_clusters: int = Field(
        0, ge=0, le=1_000_000, description="k-means clusters over clip embeddings for balancing (0 = off)"
    )
    balance_cluster_cap: int = Field(0, ge=0, description="at most this many kept clips per cluster (0 = no cap)")
    concept_cap: int = Field(
        0, ge=0, description="at most this many kept clips per caption concept (0 = off)"
    )
    concept_cap_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="at most this share of the kept clips per caption concept"
    )

    # --- output ---
    shard_max_clips: int = Field(64, ge=1, le=1_000_000, description="clips per webdataset shard")
    output_height: int = Field(0, ge=0, le=8192, description="clip height; 0 keeps the source size")
    output_width: int = Field(0, ge=0, le=8192, description="clip width; 0 keeps the source size")
    output_keep_orientation: bool = Field(
        False,
        description="a source shown in the other orientation than output_height x output_width (portrait"
        " phone video for a landscape size) gives clips of output_width x output_height instead of a crop of"
        " its middle; pair with encode buckets of both orientations (without buckets encode resizes clips to"
        " its one shape)",
    )
    alpha_background: tuple[Byte, Byte, Byte] = Field(
        (0, 0, 0),
        description="RGB colour (0-255 each) that the transparent parts of a source with an alpha channel"
        " (ProRes 4444, PNG or QuickTime Animation in MOV, APNG, GIF, WebM with alpha) are shown over",
    )
    output_fps: int = Field(
        0,
        ge=0,
        le=240,
        description="clip frame rate (frames resampled by presentation time); 0 = the source's (variable: up to 60)",
    )
    output_crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor of the written clips")
    output_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
    ] = Field("medium", description="x264 preset of the written clips")
    video_workers: int = Field(
        1,
        ge=0,
        le=256,
        description="processes curating a shard's videos side by side (0 = one per core the task may use);"
        " the outputs are those of one process, in table order",
    )
    decode_threads: int = Field(
        1, ge=0, le=64, description="decoder threads per video (0 = one per core; decoding stays bit-exact)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CurateConfig:
        if self.clip_min_frames > self.clip_max_frames:
            raise ValueError(
                f"clip_min_frames ({self.clip_min_frames}) must not exceed clip_max_frames ({self.clip_max_frames})"
            )
        if self.motion_min >= self.motion_max:
            raise ValueError(f"motion_min ({self.motion_min}) must be below motion_max ({self.motion_max})")
        if self.dedup_max_hamming > self.dedup_hash_size**2:
            raise ValueError(
                f"dedup_max_hamming ({self.dedup_max_hamming}) must not exceed the hash bits "
                f"({self.dedup_hash_size**2})"
            )
        if (self.output_height == 0) != (self.output_width == 0):
            raise ValueError("output_height and output_width must both be 0 (keep) or both be set")
        if self.output_height % 2 or self.output_width % 2:
            raise ValueError(
                f"output_height/output_width must be even for H.264 (got {self.output_height}x{self.output_width})"
            )
        return self


def load_curate_config(path: str | Path) -> CurateConfig:
    """Read ``configs/<profile>/curate.yaml``: either the stage layout (``num_shards`` + ``filters``,
    as :mod:`t2v.config` loads it) or a flat mapping of :class:`CurateConfig` fields."""
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {}
    if "filters" in data:
        data = data["filters"] or {}
    return CurateConfig.model_validate(data)
