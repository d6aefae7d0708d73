# Interim while the curate stage's imports move to t2v.config.curate (removed before commit).
from t2v.config.curate import CurateConfig, load_curate_config  # noqa: F401
