"""Neural networks and their maths (pure PyTorch: no I/O, no MLflow, no Kubernetes).

- :mod:`model.config`        DiTConfig, VAEConfig, StepLLMConfig (pydantic)
- :mod:`model.dit`           StepVideoDiT, the released 3D-full-attention DiT
- :mod:`model.vae`           CausalVideoVAE, the released causal video VAE (16x spatial, 8x temporal)
- :mod:`model.attention`     SDPA / flash-attn / math reference behind one switch
- :mod:`model.flow_matching` training objective and the Euler + CFG sampler (release convention)
- :mod:`model.step_llm`      StepLLM, the released text encoder (grouped-query attention, ALiBi in PyTorch)
- :mod:`model.losses`        VAE losses: L1 + KL (+ MSE), video LPIPS, hinge GAN with VQGAN's adaptive weight
- :mod:`model.perceptual`    LPIPS / video LPIPS (VGG16 trunk with torchvision's names)
- :mod:`model.discriminator` 3D PatchGAN discriminator (spectral norm)
"""

from model.config import DiTConfig, VAEConfig

__all__ = ["DiTConfig", "VAEConfig"]
