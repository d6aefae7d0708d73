"""Automatic metrics of generated videos that work on real videos (uint8 [T, H, W, 3]).

    clip_similarity       text-video alignment: mean over frames of cos(text, frame) of a CLIP model
                          (:class:`ClipSimilarity`, a transformers folder, local or s3://)
    temporal_consistency  mean cosine similarity of consecutive frames' features: the CLIP image
                          embeddings when a CLIP model is given, else each frame's 32x32 grey image,
                          mean-removed (1 = no change; flicker and jumps lower it)
    motion_magnitude      mean optical-flow magnitude (OpenCV's Farneback) between consecutive frames,
                          in shares of the frame's diagonal per frame (0 = a still image)
    aesthetic             a plugin: ``evaluate.aesthetic_plugin`` names ``module:callable`` taking a list
                          of videos and returning one score each (:func:`load_plugin`)

The synthetic world's exact checker stays the score of the embedded default (:mod:`t2v.world`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from t2v.errors import StageError


def _grey_features(video: np.ndarray, size: int = 32) -> np.ndarray:
    import cv2

    frames = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (size, size), interpolation=cv2.INTER_AREA) for f in video]
    flat = np.stack(frames).reshape(len(frames), -1).astype(np.float64)
    return flat - flat.mean(axis=1, keepdims=True)


def temporal_consistency(video: np.ndarray, features: np.ndarray | None = None) -> float:
    """Mean cosine similarity of consecutive frames' feature vectors ([T, D]; default: grey 32x32)."""
    if len(video) < 2:
        return 1.0
    feats = np.asarray(features if features is not None else _grey_features(video), dtype=np.float64)
    norms = np.linalg.norm(feats, axis=1)
    a, b, na, nb = feats[:-1], feats[1:], norms[:-1], norms[1:]
    flat = (na < 1e-9) & (nb < 1e-9)  # two uniform frames are the same picture
    cos = np.where(flat, 1.0, (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12))
    return float(np.clip(cos, -1.0, 1.0).mean())


def motion_magnitude(video: np.ndarray) -> float:
    """Mean Farneback optical-flow magnitude between consecutive frames / the frame diagonal."""
    import cv2

    if len(video) < 2:
        return 0.0
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video]
    height, width = grey[0].shape
    diagonal = float(np.hypot(height, width))
    levels = max(1, min(3, int(np.log2(max(2, min(height, width) // 8)))))
    magnitudes = []
    for before, after in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(before, after, None, 0.5, levels, 9, 3, 5, 1.1, 0)
        magnitudes.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(magnitudes) / diagonal)


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

    def image_features(self, frames: list[np.ndarray]):
        inputs = self.processor(images=frames, return_tensors="pt")
        with self._torch.no_grad():
            image = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device)))
        return image / image.norm(dim=-1, keepdim=True)

    def text_features(self, prompts: list[str]):
        inputs = self.processor(text=prompts, return_tensors="pt", padding=True, truncation=True)
        with self._torch.no_grad():
            text = _features(self.model.get_text_features(
                input_ids=inputs["input_ids"].to(self.device), attention_mask=inputs["attention_mask"].to(self.device)
            ))
        return text / text.norm(dim=-1, keepdim=True)

    def __call__(self, videos, prompts, metas=None) -> list[float]:
        out = []
        for video, prompt in zip(videos, prompts, strict=True):
            image = self.image_features([video[i] for i in self.frame_indices(len(video))])
            out.append(float((image @ self.text_features([prompt]).T).mean()))
        return out

    def frame_features(self, video: np.ndarray) -> np.ndarray:
        """Every frame's unit CLIP embedding [T, D] (for temporal consistency)."""
        return self.image_features(list(video)).cpu().numpy()

    def close(self) -> None:
        self._stack.close()


def _features(output):
    """The embedding tensor of a get_*_features call (a tensor, or an output object in newer versions)."""
    if hasattr(output, "pooler_output") and not hasattr(output, "shape"):
        return output.pooler_output
    return output


def load_plugin(spec: str) -> Callable[[list[np.ndarray]], list[float]]:
    """``module:callable`` -> the callable (an aesthetic scorer, say); StageError naming what is missing."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StageError(f"plugin {spec!r}: expected module:callable")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise StageError(f"plugin {spec!r}: cannot import {module_name} ({exc})") from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise StageError(f"plugin {spec!r}: {module_name} has no {attr}")
    if not callable(target):
        raise StageError(f"plugin {spec!r}: {attr} is not callable")
    return target


def video_metrics(videos: list[np.ndarray], prompts: list[str], clip: ClipSimilarity | None = None,
                  aesthetic: Callable | None = None) -> list[dict[str, float]]:
    """Every metric that applies, per video."""
    alignment = clip(videos, prompts) if clip is not None else None
    scores = aesthetic(videos) if aesthetic is not None else None
    out = []
    for i, video in enumerate(videos):
        row = {
            "temporal_consistency": temporal_consistency(video, clip.frame_features(video) if clip is not None else None),
            "motion_magnitude": motion_magnitude(video),
        }
        if alignment is not None:
            row["clip_similarity"] = alignment[i]
        if scores is not None:
            row["aesthetic"] = float(scores[i])
        out.append(row)
    return out
