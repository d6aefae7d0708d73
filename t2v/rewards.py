"""Rewards for Video-DPO: a score per generated video, higher is better.

    checker   the synthetic world's exact checker (:func:`t2v.world.score_video`) against the scene the
              prompt describes (the sample's ``spec``): the embedded default
    clip      text-video similarity of a CLIP model from a directory (local or ``s3://``) through
              transformers: the mean over frames of the cosine between the prompt's and the frame's
              embeddings (:class:`t2v.video_metrics.ClipSimilarity`, also an evaluation metric)

A reward takes the videos (uint8 [T, H, W, 3]), their prompts and the latent samples' metadata, and
returns one float per video. :func:`build_reward` picks one from the DPO config.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from t2v.errors import StageError
from t2v.video_metrics import ClipSimilarity


class Reward(Protocol):
    name: str

    def __call__(self, videos: list[np.ndarray], prompts: list[str], metas: list[dict[str, Any]]) -> list[float]: ...


class CheckerReward:
    """The world checker's ``total`` (colour, background and motion) against each sample's scene."""

    name = "checker"

    def __call__(self, videos, prompts, metas) -> list[float]:
        from t2v.world import score_video
        from t2v.world.scenes import SceneSpec

        out = []
        for video, meta in zip(videos, metas, strict=True):
            spec = meta.get("spec")
            if not spec:
                raise StageError("reward checker: a sample has no scene spec (it needs the synthetic world's data)")
            out.append(float(score_video(video, SceneSpec.from_dict(spec))["total"]))
        return out


def build_reward(cfg) -> Reward:
    """The DPO config's reward (``dpo.reward``)."""
    if cfg.reward == "checker":
        return CheckerReward()
    if cfg.reward == "clip":
        return ClipSimilarity(cfg.reward_model_uri)
    if cfg.reward == "labels":
        raise StageError("dpo.reward labels: the pairs come from labels_uri, not from a reward model")
    raise StageError(f"dpo.reward: unknown reward {cfg.reward!r}")
