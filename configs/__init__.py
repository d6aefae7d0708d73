"""The configuration profiles (``<profile>/<section>.yaml``) and the evaluation prompt sets (``eval/``),
shipped as package data so an installed project finds them (see :func:`t2v.config.config_dir`)."""
