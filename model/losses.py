"""VAE training loss: L1 reconstruction + KL to N(0, I), optional perceptual and adversarial terms.

    rec   = l1_weight * |recon - target|_1 (mean)  [+ mse_weight * MSE]  [+ perceptual_weight * perceptual_fn(recon, target)]
    total = rec + kl_weight * KL(q(z|x) || N(0, I)) (mean per element)
          [+ adversarial_weight * lambda * g_loss]

The report trains the released VAE with L1 + video LPIPS + KL and adds a GAN term later. The networks live in
:mod:`model.perceptual` (LPIPS, video LPIPS) and :mod:`model.discriminator` (3D PatchGAN); this module holds the
maths that combines them: the hinge loss of the discriminator, the generator loss ``g_loss = -mean(logits)``,
and VQGAN's adaptive weight ``lambda = |grad_w rec| / (|grad_w g_loss| + 1e-4)`` (w: the decoder's last layer
weight, clamped to [0, adaptive_weight_max]), which scales the adversarial gradient to the reconstruction
gradient at the decoder's output. :class:`VideoVAELoss` puts them together for the train-vae stage, including
the step (``disc_start_step``) before which the discriminator neither trains nor adds its term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


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
    last_layer: torch.Tensor | None = None,
    adaptive_weight_max: float = 1e4,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (total loss, {part name: float value}) for logging.

    ``adversarial_term`` is the generator loss (``generator_loss(discriminator(recon))``); with ``last_layer``
    (the decoder's last layer weight) it is scaled by :func:`adaptive_weight` of the reconstruction part,
    without it by ``adversarial_weight`` alone."""
    if recon.shape != target.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} differ in shape")
    recon_f, target_f = recon.float(), target.float()
    l1 = (recon_f - target_f).abs().mean()
    kl = kl_divergence(mean, logvar)
    rec = l1_weight * l1
    parts = {"l1": float(l1.detach()), "kl": float(kl.detach())}
    if mse_weight > 0:
        mse = (recon_f - target_f).pow(2).mean()
        rec = rec + mse_weight * mse
        parts["mse"] = float(mse.detach())
    if perceptual_weight > 0:
        if perceptual_fn is None:
            raise ValueError("perceptual_weight > 0 needs a perceptual_fn")
        perc = perceptual_fn(recon, target).float().mean()
        rec = rec + perceptual_weight * perc
        parts["perceptual"] = float(perc.detach())
    total = rec + kl_weight * kl
    if adversarial_weight > 0:
        if adversarial_term is None:
            raise ValueError("adversarial_weight > 0 needs an adversarial_term")
        g_loss = adversarial_term.float()
        scale = torch.ones((), device=g_loss.device)
        if last_layer is not None:
            scale = adaptive_weight(rec, g_loss, last_layer, max_weight=adaptive_weight_max)
            parts["adaptive_weight"] = float(scale)
        total = total + adversarial_weight * scale * g_loss
        parts["adversarial"] = float(g_loss.detach())
    parts["total"] = float(total.detach())
    return total, parts


# --------------------------------------------------------------------------------------------------------
# adversarial terms


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss, VQGAN's scaling: 0.5 * (mean relu(1 - real) + mean relu(1 + fake))."""
    return 0.5 * (torch.relu(1.0 - logits_real.float()).mean() + torch.relu(1.0 + logits_fake.float()).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator's (decoder's) adversarial loss for the hinge GAN: -mean(logits of the reconstructions)."""
    return -logits_fake.float().mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    g_loss: torch.Tensor,
    last_layer: torch.Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VQGAN's adaptive weight: ||d rec_loss / d w|| / (||d g_loss / d w|| + eps), clamped to [0, max_weight]
    and detached (w: the decoder's last layer weight). Keeps both graphs for the caller's backward."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.float().norm() / (g_grad.float().norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Parameters of ``module`` out of autograd for the block (graphs built inside do not reach them)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class VideoVAELoss:
    """The train-vae objective with its optional networks: ``perceptual`` (an LPIPS-style module called as
    ``perceptual(recon, target)`` on [B, T, 3, H, W] videos, per-frame distances; frozen) and ``discriminator``
    (clips -> patch logits). Generator and discriminator updates alternate each step from ``disc_start_step``
    (1-based training step) on; before it the discriminator does not train and no adversarial term is added.
    """

    def __init__(
        self,
        *,
        kl_weight: float = 1e-6,
        l1_weight: float = 1.0,
        mse_weight: float = 0.0,
        perceptual: nn.Module | None = None,
        perceptual_weight: float = 0.0,
        discriminator: nn.Module | None = None,
        adversarial_weight: float = 0.0,
        disc_start_step: int = 0,
        adaptive_weight_max: float = 1e4,
    ):
        if perceptual_weight > 0 and perceptual is None:
            raise ValueError("perceptual_weight > 0 needs a perceptual network")
        if adversarial_weight > 0 and discriminator is None:
            raise ValueError("adversarial_weight > 0 needs a discriminator")
        self.kl_weight, self.l1_weight, self.mse_weight = kl_weight, l1_weight, mse_weight
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.discriminator, self.adversarial_weight = discriminator, adversarial_weight
        self.disc_start_step, self.adaptive_weight_max = disc_start_step, adaptive_weight_max

    def adversarial_active(self, step: int) -> bool:
        return self.discriminator is not None and self.adversarial_weight > 0 and step >= self.disc_start_step

    def _perceptual(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.perceptual(recon, target).mean()

    def generator_loss(
        self,
        recon: torch.Tensor,
        target: torch.Tensor,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The VAE's loss at ``step`` (see :func:`vae_loss`); the discriminator gets no gradient from it."""
        adversarial = None
        if self.adversarial_active(step):
            with frozen(self.discriminator):
                adversarial = generator_loss(self.discriminator(recon))
        return vae_loss(
            recon,
            target,
            mean,
            logvar,
            kl_weight=self.kl_weight,
            l1_weight=self.l1_weight,
            mse_weight=self.mse_weight,
            perceptual_weight=self.perceptual_weight,
            perceptual_fn=self._perceptual if self.perceptual is not None else None,
            adversarial_term=adversarial,
            adversarial_weight=self.adversarial_weight if adversarial is not None else 0.0,
            last_layer=last_layer,
            adaptive_weight_max=self.adaptive_weight_max,
        )

    def discriminator_loss(
        self, recon: torch.Tensor, target: torch.Tensor, step: int
    ) -> tuple[torch.Tensor | None, dict[str, float]]:
        """(hinge loss, parts) for the discriminator's update at ``step``, or (None, {}) before
        ``disc_start_step``. Real and (detached) reconstructed clips go through one forward pass."""
        if not self.adversarial_active(step):
            return None, {}
        logits = self.discriminator(torch.cat([target, recon.detach()]))
        real, fake = logits.split(target.shape[0])
        loss = hinge_d_loss(real, fake)
        parts = {
            "disc_loss": float(loss.detach()),
            "logits_real": float(real.detach().float().mean()),
            "logits_fake": float(fake.detach().float().mean()),
        }
        return loss, parts
