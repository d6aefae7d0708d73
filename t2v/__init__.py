"""Step-Video-T2V training system: core library (config, storage, tracking, CLI)."""
__version__ = "0.1.0"
