"""The curate stage: raw videos -> scene-cut, scored, captioned clips in webdataset shards, a per-clip
manifest with every score and drop reason, and an HTML report (see :mod:`components.curate.stage`).

The stage functions are imported lazily: importing the package (for example for its config class, or for
the KFP component definitions) does not pull in webdataset, OpenCV or PyAV.
"""

from __future__ import annotations

from typing import Any

from components.curate.config import CurateConfig, load_curate_config

_STAGE_NAMES = ("caption_clip", "curate_shard", "get_captioner", "kept_filter", "merge_manifests")

__all__ = ["CurateConfig", "load_curate_config", *_STAGE_NAMES]


def __getattr__(name: str) -> Any:
    if name in _STAGE_NAMES:
        from components.curate import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'components.curate' has no attribute {name!r}")
