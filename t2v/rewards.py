"""Rewards for Video-DPO: a score per generated video, higher is better.

    checker   the synthetic world's exact checker (:func:`t2v.world.score_video`) against the scene the
              prompt describes (the sample's ``spec``): the embedded default
    clip      text-video similarity of a CLIP model from a directory (local or ``s3://``) through
              transformers: the mean over frames of the cosine between the prompt's and the frame's
              embeddings (:class:`ClipSimilarity`, also an evaluation metric)

A reward takes the videos (uint8 [T, H, W, 3]), their prompts and the latent samples' metadata, and
returns one float per video. :func:`build_reward` picks one from the DPO config.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Protocol

import numpy as np

from t2v.errors import StageError


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


class ClipSimilarity:
    """CLIP text-video alignment: mean over frames of cos(text embedding, frame embedding), in [-1, 1].

    ``model_dir`` is a transformers CLIP folder (``CLIPModel`` + its processor), local or ``s3://`` (copied
    once to a local folder)."""

    name = "clip"

    def __init__(self, model_dir: str, device: str = "cpu", max_frames: int = 8):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from t2v import storage

        self._stack = ExitStack()
        local = self._stack.enter_context(storage.local_dir_for(model_dir))
        try:
            self.model = CLIPModel.from_pretrained(str(local)).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(local))
        except (OSError, ValueError) as exc:
            raise StageError(f"{model_dir}: not a transformers CLIP model folder ({exc})") from None
        self.device, self.max_frames, self._torch = device, max_frames, torch

    def frame_indices(self, count: int) -> np.ndarray:
        return np.unique(np.linspace(0, count - 1, min(count, self.max_frames)).round().astype(int))

    def __call__(self, videos, prompts, metas=None) -> list[float]:
        torch = self._torch
        out = []
        with torch.no_grad():
            for video, prompt in zip(videos, prompts, strict=True):
                frames = [video[i] for i in self.frame_indices(len(video))]
                inputs = self.processor(text=[prompt], images=frames, return_tensors="pt", padding=True, truncation=True)
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                image = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
                text = _features(self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
                image = image / image.norm(dim=-1, keepdim=True)
                text = text / text.norm(dim=-1, keepdim=True)
                out.append(float((image @ text.T).mean()))
        return out

    def close(self) -> None:
        self._stack.close()


def _features(output):
    """The embedding tensor of a get_*_features call (a tensor, or an output object in newer versions)."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def build_reward(cfg) -> Reward:
    """The DPO config's reward (``dpo.reward``)."""
    if cfg.reward == "checker":
        return CheckerReward()
    if cfg.reward == "clip":
        return ClipSimilarity(cfg.reward_model_uri)
    if cfg.reward == "labels":
        raise StageError("dpo.reward labels: the pairs come from labels_uri, not from a reward model")
    raise StageError(f"dpo.reward: unknown reward {cfg.reward!r}")
