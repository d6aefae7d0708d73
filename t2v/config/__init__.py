"""The one configuration tree: a profile's YAML files validated by pydantic before any work starts.

* :mod:`t2v.config.project`  -- :class:`ProjectConfig` (the whole tree), loading a profile with
  ``--set`` overrides, :class:`ConfigError` naming the file and the field;
* :mod:`t2v.config.sections` -- one class per section: storage, tracking, source, the stages' settings,
  cluster placement;
* :mod:`t2v.config.curate`   -- curation's filters and thresholds;
* :mod:`t2v.config.text_encoders` -- where the text encoders are and their sizes.

The networks' architectures are :mod:`model.config`; the synthetic world's is :mod:`t2v.world.config`.
Nothing here imports torch.
"""

from t2v.config.curate import CurateConfig, load_curate_config
from t2v.config.project import ConfigError, ProjectConfig, available_profiles, config_dir, load_config
from t2v.config.sections import (
    BaseModelConfig,
    ClusterConfig,
    ClusterResources,
    CurateStageConfig,
    DataSourceConfig,
    DiTStageConfig,
    EncodeConfig,
    EvaluateConfig,
    LoRAConfig,
    RegisterConfig,
    StorageConfig,
    TaskResources,
    TrackingConfig,
    VAEStageConfig,
    VAETrainConfig,
)
from t2v.config.text_encoders import TextEncoderConfig

__all__ = [
    "BaseModelConfig",
    "ClusterConfig",
    "ClusterResources",
    "ConfigError",
    "CurateConfig",
    "CurateStageConfig",
    "DataSourceConfig",
    "DiTStageConfig",
    "LoRAConfig",
    "EncodeConfig",
    "EvaluateConfig",
    "ProjectConfig",
    "RegisterConfig",
    "StorageConfig",
    "TaskResources",
    "TextEncoderConfig",
    "TrackingConfig",
    "VAEStageConfig",
    "VAETrainConfig",
    "available_profiles",
    "config_dir",
    "load_config",
    "load_curate_config",
]
