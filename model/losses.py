"""VAE training loss: L1 reconstruction + KL to N(0, I), optional extra terms behind flags.

    total = l1_weight * |recon - target|_1 (mean)  +  kl_weight * KL(q(z|x) || N(0, I)) (mean per element)
          [+ mse_weight * MSE] [+ perceptual_weight * perceptual_fn(recon, target)]

The report trains the released VAE with L1 + video LPIPS + KL and adds a GAN term later; the perceptual and
adversarial networks are not part of this module (pass ``perceptual_fn`` / ``adversarial_term`` in).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean, exp(logvar)) || N(0, 1))."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def vae_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float = 1e-6,
    l1_weight: float = 1.0,
    mse_weight: float = 0.0,
    perceptual_weight: float = 0.0,
    perceptual_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    adversarial_term: torch.Tensor | None = None,
    adversarial_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (total loss, {part name: float value}) for logging."""
    if recon.shape != target.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
    recon_f, target_f = recon.float(), target.float()
    l1 = (recon_f - target_f).abs().mean()
    kl = kl_divergence(mean, logvar)
    total = l1_weight * l1 + kl_weight * kl
    parts = {"l1": float(l1.detach()), "kl": float(kl.detach())}
    if mse_weight > 0:
        mse = (recon_f - target_f).pow(2).mean()
        total = total + mse_weight * mse
        parts["mse"] = float(mse.detach())
    if perceptual_weight > 0:
        if perceptual_fn is None:
            raise ValueError("perceptual_weight > 0 needs a perceptual_fn")
        perc = perceptual_fn(recon, target).float().mean()
        total = total + perceptual_weight * perc
        parts["perceptual"] = float(perc.detach())
    if adversarial_weight > 0:
        if adversarial_term is None:
            raise ValueError("adversarial_weight > 0 needs an adversarial_term")
        total = total + adversarial_weight * adversarial_term
        parts["adversarial"] = float(adversarial_term.detach())
    parts["total"] = float(total.detach())
    return total, parts
