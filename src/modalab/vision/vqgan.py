"""The VQGAN objective (Esser et al. 2021; chapter 5.2.3):

    L = L_rec + w_p L_perceptual + w_c L_codebook + lambda L_gan,
    lambda = disc_weight * clamp(||grad_last L_nll|| / (||grad_last L_gan|| + 1e-4), 0, 1e4)

where ``L_nll = L_rec + w_p L_perceptual`` and ``grad_last`` is the gradient with respect to the
decoder's last layer (taming-transformers' ``calculate_adaptive_weight``). The discriminator is a
PatchGAN trained with the hinge loss; both GAN terms are off before ``disc_start``.

Perceptual term, two options (recipe key ``loss.perceptual``). ``lpips_features``
(``vision/lpips_features.FeatureLPIPS``): LPIPS's recipe (unit-normalised activations, squared
difference, spatial mean, summed over layers) over the in-house feature CNN that modalab trains on
the training split, with fixed uniform weights instead of LPIPS's learned 'lin' layer. LPIPS itself
needs pretrained VGG/AlexNet weights, which modalab never downloads. ``structural``:
``StructuralLoss``, at each of a few scales, ``1 - SSIM`` (Wang et al. 2004) plus the L1
distance between finite-difference image gradients. Both parts are fixed functions with no weights:
SSIM compares local means, contrasts and correlations (the structure a per-pixel L1 ignores) and
the gradient term penalises the blurred edges that L1/L2 reconstructions favour. A random-weight
conv-feature distance was the alternative; we did not pick it because its value depends on the
random seed and random features are a weak perceptual proxy (Zhang et al. 2018, rand-LPIPS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modalab.vision.image_quality import ssim


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss 0.5 (E[relu(1 - D(x))] + E[relu(1 + D(G(z)))])."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Generator hinge loss -E[D(G(z))]."""
    return -logits_fake.mean()


def adaptive_weight(
    nll_loss: Tensor, gan_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4
) -> Tensor:
    """||d nll / d last_layer|| / (||d gan / d last_layer|| + 1e-4), clamped [0, max_weight].

    Returns a detached scalar; 0 when gradients are disabled (e.g. during evaluation).
    """
    if not (torch.is_grad_enabled() and nll_loss.requires_grad and gan_loss.requires_grad):
        return nll_loss.new_zeros(())
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    gan_grad = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (gan_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming ``NLayerDiscriminator``): (B, C, H, W) -> logits (B, 1, h, w).

    ``n_layers`` stride-2 convolutions (4x4), one stride-1 convolution, then a 1-channel output;
    GroupNorm instead of BatchNorm so that small and uneven batches behave the same.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)
        ]
        ch = channels
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            nxt = channels * min(2**i, 8)
            layers += [nn.Conv2d(ch, nxt, 4, stride=stride, padding=1, bias=False),
                       nn.GroupNorm(min(8, nxt), nxt), nn.LeakyReLU(0.2)]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # taming's weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def image_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences of (B, C, H, W): (B, C, H-1, W) vertical, (B, C, H, W-1) horizontal."""
    return x[:, :, 1:] - x[:, :, :-1], x[:, :, :, 1:] - x[:, :, :, :-1]


class StructuralLoss(nn.Module):
    """Weight-free perceptual term: sum over scales of (1 - SSIM) + L1 of image gradients.

    Scale s halves the previous one by 2x2 average pooling; scales whose side is below
    ``window_size`` are skipped for SSIM (the gradient term is kept). Inputs (B, C, H, W).
    """

    def __init__(self, num_scales: int = 2, window_size: int = 7, data_range: float = 1.0) -> None:
        super().__init__()
        self.num_scales, self.window_size, self.data_range = num_scales, window_size, data_range

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(())
        for s in range(self.num_scales):
            if s > 0:
                if min(x.shape[-2:]) < 2:
                    break
                x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            if min(x.shape[-2:]) >= self.window_size:
                total = total + (1 - ssim(x, y, self.data_range, self.window_size)).mean()
            (xv, xh), (yv, yh) = image_gradients(x), image_gradients(y)
            total = total + (xv - yv).abs().mean() + (xh - yh).abs().mean()
        return total


class VQGANLoss(nn.Module):
    """Generator and discriminator losses of VQGAN; the caller steps two optimizers.

    Args:
        discriminator: patch discriminator, or None for a reconstruction-only objective.
        perceptual: a module (x, y) -> scalar, e.g. ``StructuralLoss()``, or None.
        rec_loss: ``"l1"`` or ``"l2"`` pixel loss.
        perceptual_weight, codebook_weight: w_p and w_c above.
        disc_weight: multiplies the adaptive weight (lambda above).
        disc_start: first step at which the GAN terms are used.
        adaptive: use the gradient-norm ratio; if False, lambda = disc_weight.
    """

    def __init__(
        self,
        discriminator: nn.Module | None = None,
        perceptual: nn.Module | None = None,
        rec_loss: str = "l1",
        perceptual_weight: float = 1.0,
        codebook_weight: float = 1.0,
        disc_weight: float = 1.0,
        disc_start: int = 0,
        adaptive: bool = True,
    ) -> None:
        super().__init__()
        if rec_loss not in ("l1", "l2"):
            raise ValueError(f"VQGANLoss: rec_loss='{rec_loss}'; expected 'l1' or 'l2'")
        self.discriminator, self.perceptual, self.rec_loss = discriminator, perceptual, rec_loss
        self.perceptual_weight, self.codebook_weight = perceptual_weight, codebook_weight
        self.disc_weight, self.disc_start, self.adaptive = disc_weight, disc_start, adaptive

    def disc_active(self, step: int) -> bool:
        """Whether the GAN terms are on at ``step``."""
        return self.discriminator is not None and step >= self.disc_start

    def generator_loss(
        self, images: Tensor, recons: Tensor, quant_loss: Tensor, step: int, last_layer: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Tokenizer loss; images/recons (B, C, H, W), ``last_layer`` the decoder's last weight."""
        diff = recons - images
        rec = diff.abs().mean() if self.rec_loss == "l1" else diff.pow(2).mean()
        nll = rec
        logs = {"rec": float(rec.detach())}
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(recons, images)
            nll = nll + self.perceptual_weight * p
            logs["perceptual"] = float(p.detach())
        total = nll + self.codebook_weight * quant_loss
        if self.disc_active(step):
            g = hinge_g_loss(self.discriminator(recons))
            w = adaptive_weight(nll, g, last_layer) if self.adaptive else nll.new_tensor(1.0)
            total = total + self.disc_weight * w * g
            logs.update(g_loss=float(g.detach()), d_weight=float(w))
        logs["total"] = float(total.detach())
        return total, logs

    def discriminator_loss(
        self, images: Tensor, recons: Tensor, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Hinge loss on real images vs detached recons (B, C, H, W); zero before ``disc_start``."""
        if not self.disc_active(step):
            return images.new_zeros(()), {}
        real = self.discriminator(images.detach())
        fake = self.discriminator(recons.detach())
        loss = hinge_d_loss(real, fake)
        return loss, {"d_loss": float(loss.detach()), "logits_real": float(real.detach().mean()),
                      "logits_fake": float(fake.detach().mean())}
