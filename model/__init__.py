"""Neural networks and their maths (pure PyTorch: no I/O, no MLflow, no Kubernetes).

- :mod:`model.config`        DiTConfig, VAEConfig (pydantic)
- :mod:`model.dit`           StepVideoDiT, the released 3D-full-attention DiT
- :mod:`model.vae`           CausalVideoVAE, the released causal video VAE (16x spatial, 8x temporal)
- :mod:`model.attention`     SDPA / flash-attn / math reference behind one switch
- :mod:`model.flow_matching` training objective and the Euler + CFG sampler (release convention)
- :mod:`model.losses`        VAE loss (L1 + KL, optional terms)
"""

from model.config import DiTConfig, VAEConfig

__all__ = ["DiTConfig", "VAEConfig"]
