"""The one project image every component and training job runs in (CPU and CUDA tags, by git sha)."""

from __future__ import annotations

import os

from t2v.tracking import git_sha

DEFAULT_REPOSITORY = "ghcr.io/step-video-t2v/t2v-training"


def image_tag() -> str:
    sha = git_sha(default="dev").removesuffix("-dirty")
    return sha[:12] if sha != "dev" else "dev"


def project_image(flavour: str = "cpu") -> str:
    """``T2V_IMAGE`` (CPU) / ``T2V_IMAGE_CUDA`` when set, else ``<repository>:<sha>[-cuda]``."""
    if flavour == "cuda":
        return os.environ.get("T2V_IMAGE_CUDA") or f"{os.environ.get('T2V_IMAGE_REPOSITORY', DEFAULT_REPOSITORY)}:{image_tag()}-cuda"
    return os.environ.get("T2V_IMAGE") or f"{os.environ.get('T2V_IMAGE_REPOSITORY', DEFAULT_REPOSITORY)}:{image_tag()}"
