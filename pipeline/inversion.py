"""GAN inversion objectives, shared by the encoder's training and its evaluation: the losses as
small pure functions, and optimisation-based inversion (the baseline an encoder is measured
against).

Latents are W+: ``ws`` (N, num_ws, w_dim), one w per style input of the generator. Images are
(N, 3, R, R) in [-1, 1]. ``synthesize(ws) -> images`` is the generator's synthesis network (kept
abstract here: any frozen differentiable generator inverts the same way).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

PixelLoss = Literal["l1", "l2"]


def pixel_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: PixelLoss) -> torch.Tensor:
    """Mean absolute (``l1``) or squared (``l2``, pSp's and e4e's) pixel difference."""
    difference = reconstruction - target
    return difference.abs().mean() if kind == "l1" else difference.pow(2).mean()


def latent_loss(ws: torch.Tensor, ws_true: torch.Tensor) -> torch.Tensor:
    """Mean squared error of W+ against the known latents of synthetic pairs."""
    return (ws - ws_true).pow(2).mean()


def delta_regularizer(ws: torch.Tensor) -> torch.Tensor:
    """e4e's delta regularizer: sum over i >= 1 of |w_i - w_0|_2, averaged over the batch. It
    keeps W+ near a single w (the generator's training distribution), which is what keeps an
    inversion editable and stylizable."""
    return (ws[:, 1:] - ws[:, :1]).norm(dim=2).sum(1).mean()


@dataclass(frozen=True)
class InversionWeights:
    """Loss weights of an inversion (the training params' ``lambda_*``) and the pixel loss."""

    pixel: float
    perceptual: float
    delta: float
    pixel_loss: PixelLoss


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, ws: torch.Tensor,
                        distance: nn.Module, weights: InversionWeights) -> dict[str, torch.Tensor]:
    """The terms that need no true latent, weighted and summed into ``"loss"``."""
    terms = {"pixel": pixel_loss(reconstruction, target, weights.pixel_loss),
             "perceptual": distance(reconstruction, target),
             "delta": delta_regularizer(ws)}
    terms["loss"] = (weights.pixel * terms["pixel"] + weights.perceptual * terms["perceptual"]
                     + weights.delta * terms["delta"])
    return terms


def optimize_ws(synthesize: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor,
                w_avg: torch.Tensor, num_ws: int, distance: nn.Module, weights: InversionWeights,
                steps: int, lr: float) -> tuple[torch.Tensor, float]:
    """Optimisation-based inversion: Adam on W+ from ``w_avg``, with the losses of
    :func:`reconstruction_loss`, for the whole batch of ``targets`` at once.

    Returns:
        (ws (N, num_ws, w_dim), seconds taken).
    """
    start = time.perf_counter()
    ws = w_avg.detach().expand(len(targets), num_ws, -1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([ws], lr=lr)
    for _ in range(steps):
        terms = reconstruction_loss(synthesize(ws), targets, ws, distance, weights)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()  # each image's ws gets its own gradient: Adam scales it alone
        optimizer.step()
    return ws.detach(), time.perf_counter() - start
