"""Model-based curation scores, on CPU, behind the classical pre-filters.

Two detectors ship inside their wheels and need nothing from the user:

* **burnt-in text** (``ocr``): the PP-OCRv4 text *detector* of ``rapidocr-onnxruntime`` on a few frames of
  the clip (the output frames, resized so that their longer side is ``ocr_size``). ``ocr_text_area`` is the share of the frame its boxes cover (median
  over the frames), ``ocr_subtitle_area`` the share covered by boxes centred in the bottom band,
  ``ocr_corner_area`` by boxes centred in a corner (a channel logo). Reasons: ``subtitles`` (bottom-band
  text above ``ocr_subtitle_max_area``), ``watermark`` (corner text above ``ocr_watermark_max_area``) and
  ``text`` (any text above ``ocr_text_max_area``).
* **NSFW** (``nsfw``): ``nudenet``'s detector; ``nsfw`` is the highest score of an *exposed* class over the
  sampled frames; reason ``nsfw`` above ``nsfw_threshold``.

Plugins load a model the user gives as a folder (local or ``s3://``, in the library's own format):

* **aesthetic** (``aesthetic_model``): a transformers CLIP folder with ``aesthetic_head.safetensors`` in it
  (linear layers ``{i}.weight``/``{i}.bias`` applied in order to the unit CLIP image embedding, as the
  LAION aesthetic predictor does); reason ``low_aesthetic`` below ``aesthetic_min``;
* **text-video alignment** (``clip_model``): :class:`t2v.video_metrics.ClipSimilarity` between the clip's
  frames and its caption; reason ``misaligned`` below ``clip_min_similarity``;
* **captions** (``caption_model``): a transformers image-text-to-text model (BLIP, ...): a short caption
  and a dense one (:class:`VlmCaptioner`), beside the original title;
* **optical flow** (``flow_model``): RAFT from torchvision (a folder with ``raft.safetensors`` and
  ``raft.json`` naming ``raft_small`` or ``raft_large``), ``raft_motion`` beside Farneback's ``motion``.

Each model runs only on clips the classical filters kept (``models_on_dropped`` runs them on every clip,
for measuring them). Every scorer's name and version is recorded per clip in ``scorers``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from components.curate import filters
from t2v.config.curate import CurateConfig
from t2v.errors import StageError

log = logging.getLogger(__name__)
EXPOSED = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _frames(clip: np.ndarray, count: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(clip[i]) for i in filters.sample_indices(len(clip), count)]


class TextDetector:
    """PP-OCRv4 text detection (rapidocr-onnxruntime's packaged model), boxes only (no recognition)."""

    def __init__(self, cfg: CurateConfig, threads: int = 1):
        from rapidocr_onnxruntime import RapidOCR

        self.cfg = cfg
        self.engine = RapidOCR(
            det_limit_side_len=cfg.ocr_size,
            det_limit_type="max",
            det_box_thresh=cfg.ocr_box_threshold,
            intra_op_num_threads=threads,
            inter_op_num_threads=1,
            use_cls=False,
            use_rec=False,
        )
        self.name = f"rapidocr-onnxruntime/{_version('rapidocr-onnxruntime')}:PP-OCRv4-det"

    def boxes(self, frame_rgb: np.ndarray) -> list[np.ndarray]:
        found, _ = self.engine.text_det(np.ascontiguousarray(frame_rgb[..., ::-1]))
        return [] if found is None else [np.asarray(b, dtype=np.float32) for b in found]

    def sized(self, frame: np.ndarray) -> np.ndarray:
        """The frame with its longer side at ``ocr_size``, enlarged as well as reduced: the detector's own
        limit only ever reduces, and at a small output size (160x96) a caption's letters are 8-10 px,
        under what it finds reliably."""
        import cv2

        h, w = frame.shape[:2]
        scale = self.cfg.ocr_size / max(h, w)
        if abs(scale - 1.0) < 1e-3:
            return frame
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)

    def score(self, clip: np.ndarray) -> dict[str, float]:
        frames = [self.sized(f) for f in _frames(clip, self.cfg.ocr_frames)]
        h, w = frames[0].shape[:2]
        band_top = h * (1.0 - self.cfg.text_band_fraction)
        cf = self.cfg.watermark_corner_fraction
        areas, bottom, corner = [], [], []
        for frame in frames:
            total = sub = logo = 0.0
            for box in self.boxes(frame):
                x0, y0 = box.min(axis=0)
                x1, y1 = box.max(axis=0)
                area = max(0.0, x1 - x0) * max(0.0, y1 - y0) / (h * w)
                total += area
                cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
                if cy >= band_top and w * 0.2 <= cx <= w * 0.8:
                    sub += area
                elif (cy <= h * cf or cy >= h * (1 - cf)) and (cx <= w * cf or cx >= w * (1 - cf)):
                    logo += area
            areas.append(min(total, 1.0))
            bottom.append(min(sub, 1.0))
            corner.append(min(logo, 1.0))
        return {
            "ocr_text_area": round(float(np.median(areas)), 5),
            "ocr_subtitle_area": round(float(np.median(bottom)), 5),
            "ocr_corner_area": round(float(np.median(corner)), 5),
        }


class NsfwDetector:
    """nudenet's packaged detector on a few frames; the highest exposed-class score."""

    def __init__(self, cfg: CurateConfig, threads: int = 1):
        import onnxruntime as ort
        from nudenet import NudeDetector

        self.cfg = cfg
        self.detector = NudeDetector()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        import nudenet

        path = Path(nudenet.__file__).parent / "320n.onnx"
        self.detector.onnx_session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = f"nudenet/{_version('nudenet')}:320n"

    def score(self, clip: np.ndarray) -> dict[str, float]:
        best = 0.0
        for frame in _frames(clip, self.cfg.nsfw_frames):
            for det in self.detector.detect(np.ascontiguousarray(frame[..., ::-1])):
                if det.get("class") in EXPOSED:
                    best = max(best, float(det.get("score", 0.0)))
        return {"nsfw": round(best, 5)}


class AestheticScorer:
    """CLIP image features (transformers) + a small linear head saved beside them (safetensors)."""

    def __init__(self, model_dir: str):
        import torch
        from safetensors.torch import load_file

        from t2v import storage
        from t2v.video_metrics import ClipSimilarity

        self._stack = ExitStack()
        local = Path(self._stack.enter_context(storage.local_dir_for(model_dir)))
        head = local / "aesthetic_head.safetensors"
        if not head.exists():
            raise StageError(f"{model_dir}: no aesthetic_head.safetensors beside the CLIP model")
        self.clip = ClipSimilarity(str(local))
        tensors = load_file(str(head))
        count = len({k.split(".")[0] for k in tensors})
        self.layers = [(tensors[f"{i}.weight"], tensors.get(f"{i}.bias")) for i in range(count)]
        self.torch = torch
        self.name = f"aesthetic:{Path(model_dir).name}/transformers-{_version('transformers')}"

    def score(self, clip: np.ndarray) -> dict[str, float]:
        feats = self.clip.image_features(_frames(clip, 4))
        with self.torch.no_grad():
            x = feats.float()
            for weight, bias in self.layers:
                x = x @ weight.T + (bias if bias is not None else 0)
        return {"aesthetic": round(float(x.mean()), 5)}

    def close(self) -> None:
        self.clip.close()
        self._stack.close()


class FlowScorer:
    """RAFT optical flow (torchvision) beside Farneback: the 90th percentile flow magnitude in percent of
    the frame width per frame, over a few frame pairs."""

    def __init__(self, model_dir: str, pairs: int = 4):
        import torch
        from safetensors.torch import load_file
        from torchvision.models import optical_flow

        from t2v import storage

        self._stack = ExitStack()
        local = Path(self._stack.enter_context(storage.local_dir_for(model_dir)))
        spec = json.loads((local / "raft.json").read_text()) if (local / "raft.json").exists() else {}
        arch = spec.get("arch", "raft_small")
        self.model = getattr(optical_flow, arch)(weights=None).eval()
        self.model.load_state_dict(load_file(str(local / "raft.safetensors")))
        self.torch, self.pairs = torch, pairs
        self.name = f"torchvision-{_version('torchvision')}:{arch}"

    def score(self, clip: np.ndarray) -> dict[str, float]:
        t, h, w, _ = clip.shape
        if t < 2:
            return {"raft_motion": 0.0}
        torch = self.torch
        starts = filters.sample_indices(t - 1, self.pairs)
        hh, ww = max(128, h // 8 * 8), max(128, w // 8 * 8)

        def prep(frames):
            x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            return torch.nn.functional.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False)

        with torch.no_grad():
            flow = self.model(prep([clip[i] for i in starts]), prep([clip[i + 1] for i in starts]))[-1]
        # back to the clip's pixels: x and y were stretched by different factors to reach a multiple of 8
        mag = torch.hypot(flow[:, 0] * (w / ww), flow[:, 1] * (h / hh))
        return {"raft_motion": round(float(torch.quantile(mag.flatten(1), 0.9, dim=1).mean()) * 100.0 / w, 4)}

    def close(self) -> None:
        self._stack.close()


class VlmCaptioner:
    """Short and dense captions from a transformers image-text-to-text model folder (local or s3://),
    on the clip's middle frame; the original title is kept beside them."""

    def __init__(self, model_dir: str, cfg: CurateConfig):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from t2v import storage

        self._stack = ExitStack()
        local = str(self._stack.enter_context(storage.local_dir_for(model_dir)))
        try:
            self.processor = AutoProcessor.from_pretrained(local)
            self.model = AutoModelForImageTextToText.from_pretrained(local).eval()
        except (OSError, ValueError) as exc:
            raise StageError(f"{model_dir}: not a transformers image-text-to-text model folder ({exc})") from None
        self.torch, self.cfg = torch, cfg
        self.name = f"{type(self.model).__name__}:{Path(model_dir).name}/transformers-{_version('transformers')}"

    def _generate(self, frame: np.ndarray, prompt: str | None, tokens: int) -> str:
        kwargs = {"images": frame, "return_tensors": "pt"}
        if prompt:
            kwargs["text"] = prompt
        inputs = self.processor(**kwargs)
        with self.torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=tokens, do_sample=False, num_beams=1)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        if prompt:  # decoders echo the prompt, re-spaced by their tokenizer: drop it
            import re

            echo = r"\s*".join(re.escape(ch) for ch in prompt if not ch.isspace())
            text = re.sub(rf"^\s*{echo}", "", text, flags=re.IGNORECASE)
        return " ".join(text.split())

    def __call__(self, video: dict[str, Any], start: int, end: int, frames: np.ndarray | None = None) -> dict[str, Any]:
        title = str(video.get("title") or "")
        if frames is None or not len(frames):
            return {"caption": title, "title": title, "spec": {}, "scene_id": None, "captions": {"title": title}}
        middle = np.ascontiguousarray(frames[len(frames) // 2])
        short = self._generate(middle, None, self.cfg.caption_short_tokens)
        dense = self._generate(middle, self.cfg.caption_dense_prompt, self.cfg.caption_dense_tokens)
        caption = short or title
        return {
            "caption": caption,
            "title": title,
            "spec": {},
            "scene_id": None,
            "captions": {"short": short, "dense": dense, "title": title, "model": self.name},
        }

    def close(self) -> None:
        self._stack.close()


class ModelScorers:
    """The model-based scorers a config asks for, loaded once per shard task."""

    def __init__(self, cfg: CurateConfig, threads: int = 1):
        self.cfg = cfg
        self.ocr = TextDetector(cfg, threads) if cfg.ocr else None
        self.nsfw = NsfwDetector(cfg, threads) if cfg.nsfw else None
        self.aesthetic = AestheticScorer(cfg.aesthetic_model) if cfg.aesthetic_model else None
        self.flow = FlowScorer(cfg.flow_model) if cfg.flow_model else None
        self.alignment = None
        if cfg.clip_model:
            from t2v.video_metrics import ClipSimilarity

            self.alignment = ClipSimilarity(cfg.clip_model)
            self.alignment_name = f"clip:{Path(cfg.clip_model).name}/transformers-{_version('transformers')}"

    @classmethod
    def from_config(cls, cfg: CurateConfig, threads: int = 1) -> ModelScorers | None:
        wanted = cfg.ocr or cfg.nsfw or cfg.aesthetic_model or cfg.clip_model or cfg.flow_model
        return cls(cfg, threads) if wanted else None

    @property
    def has_alignment(self) -> bool:
        return self.alignment is not None

    def describe(self) -> dict[str, str]:
        out = {}
        for key in ("ocr", "nsfw", "aesthetic", "flow"):
            m = getattr(self, key)
            if m is not None:
                out[key] = m.name
        if self.alignment is not None:
            out["clip"] = self.alignment_name
        return out

    def score(self, small, out, video, reasons: list[str], timers: dict[str, float] | None = None) -> dict[str, Any]:
        """Scores and reasons of the models that apply; nothing when a classical filter already dropped
        the clip (unless ``models_on_dropped``)."""
        import time

        scores: dict[str, float] = {}
        new: list[str] = []
        if reasons and not self.cfg.models_on_dropped:
            return {"scores": scores, "reasons": new, "scorers": {}}
        clock = timers if timers is not None else {}
        for key in ("ocr", "nsfw", "aesthetic", "flow"):
            m = getattr(self, key)
            if m is None:
                continue
            t0 = time.perf_counter()
            scores.update(m.score(out))
            clock[f"model:{key}"] = clock.get(f"model:{key}", 0.0) + time.perf_counter() - t0
        c = self.cfg
        if "ocr_subtitle_area" in scores and scores["ocr_subtitle_area"] > c.ocr_subtitle_max_area:
            new.append("subtitles")
        if "ocr_corner_area" in scores and scores["ocr_corner_area"] > c.ocr_watermark_max_area:
            new.append("watermark")
        if "ocr_text_area" in scores and scores["ocr_text_area"] > c.ocr_text_max_area:
            new.append("text")
        if "nsfw" in scores and scores["nsfw"] > c.nsfw_threshold:
            new.append("nsfw")
        if "aesthetic" in scores and scores["aesthetic"] < c.aesthetic_min:
            new.append("low_aesthetic")
        if "raft_motion" in scores and c.raft_motion_min > 0 and scores["raft_motion"] < c.raft_motion_min:
            new.append("static")
        return {"scores": scores, "reasons": new, "scorers": self.describe()}

    def align(self, out: np.ndarray, caption: str, timers: dict[str, float] | None = None) -> dict[str, float]:
        import time

        t0 = time.perf_counter()
        value = self.alignment([out], [caption or ""])[0]
        if timers is not None:
            timers["model:clip"] = timers.get("model:clip", 0.0) + time.perf_counter() - t0
        return {"clip_similarity": round(float(value), 5)}

    def align_reasons(self, scores: dict[str, float]) -> list[str]:
        if scores.get("clip_similarity", 1.0) < self.cfg.clip_min_similarity:
            return ["misaligned"]
        return []

    def close(self) -> None:
        for key in ("aesthetic", "flow", "alignment"):
            m = getattr(self, key)
            if m is not None:
                m.close()
