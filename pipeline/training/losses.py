"""GAN losses as small pure functions (StyleGAN2's, as in its paper and reference code).

Logits are the discriminator's raw outputs; softplus(-x) = -log(sigmoid(x)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_logistic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator's logistic loss: push real logits up and fake logits down."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator's non-saturating loss, -log D(G(z)): strong gradients early in training."""
    return F.softplus(-fake_logits).mean()


def d_r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1: the squared gradient norm of D on real images, per sample, averaged (without gamma/2).

    ``real_images`` must have ``requires_grad=True`` and ``real_logits`` be computed from them.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def g_path_length_penalty(images: torch.Tensor, ws: torch.Tensor, mean_path_length: torch.Tensor,
                          decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path-length regularizer: keep |J_w^T y| constant for random image-space directions y.

    Args:
        images:           G's output (N, 3, H, W), computed from ``ws`` (N, num_ws, w_dim).
        ws:               with ``requires_grad=True``.
        mean_path_length: running mean a of the path lengths (scalar tensor).

    Returns:
        (penalty = mean (|J^T y| - a)^2, path lengths (N,), updated running mean).
    """
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
    lengths = grad.pow(2).sum(2).mean(1).sqrt()
    new_mean = mean_path_length + decay * (lengths.mean().detach() - mean_path_length)
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, lengths.detach(), new_mean.detach()


def resize_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (N, C, H, W) resized to (N, C, size, size): box-filter (area) averaging when
    shrinking, the anti-aliased match of a power-of-two pyramid; unchanged at the same size."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="area")


def pyramid_losses(pyramid: list[torch.Tensor], target: torch.Tensor,
                   distance) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The multi-scale distillation terms (BlazeStyleGAN, Eq. 1), one pair per pyramid level.

    Args:
        pyramid:  the student's images [(N, 3, 8, 8), ..., (N, 3, R, R)].
        target:   the teacher's image (N, 3, R, R), resized to each level.
        distance: perceptual distance, ``distance(x, y)`` -> scalar.

    Returns:
        (perceptual distance per level, pixel L1 per level).
    """
    perceptual, l1 = [], []
    for image in pyramid:
        resized = resize_to(target, image.shape[-1])
        perceptual.append(distance(image, resized))
        l1.append((image - resized).abs().mean())
    return perceptual, l1


def level_mean(terms: list[torch.Tensor], final_weight: float) -> torch.Tensor:
    """The weighted mean of per-level terms (coarse to fine): every level weighs 1 except the
    last, the shipped image's, which weighs ``final_weight`` (1: the plain mean of Eq. 4)."""
    weights = torch.ones(len(terms), device=terms[0].device)
    weights[-1] = final_weight
    return (torch.stack(terms) * weights).sum() / weights.sum()


def mapping_regression_loss(w_student: torch.Tensor, w_teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a distilled mapping network's w and the teacher's, (N, w_dim)."""
    return (w_student - w_teacher).pow(2).mean()
