"""What the two adversarial trainers (the teacher's training and distillation) share: their
common params keys, and the discriminator's half of a training step (the logistic loss on real
against generated images, and lazy R1 on the real ones)."""

from __future__ import annotations

import contextlib
from typing import Annotated, ClassVar

import pydantic
import torch
from torch import nn

from pipeline.config import NonNegativeFloat, PositiveInt
from pipeline.training import losses
from pipeline.training.run import RealImagesConfig
from pipeline.training.runtime import Distributed, optimizer_step


class AdversarialConfig(RealImagesConfig):
    """The keys of an adversarial trainer's section, besides :class:`RealImagesConfig`'s."""

    g_lr: Annotated[float, pydantic.Field(gt=0)]
    d_lr: Annotated[float, pydantic.Field(gt=0)]
    r1_gamma: NonNegativeFloat       # R1 weight; 0 disables R1
    r1_interval: PositiveInt         # lazy R1: every this many steps
    style_mixing: Annotated[float, pydantic.Field(ge=0, le=1)]  # probability per batch
    ema_kimg: Annotated[float, pydantic.Field(gt=0)]  # EMA half-life in thousands of images
    xflip: bool                      # add mirrored copies of the dataset
    sample_grid: PositiveInt         # latents of the sample grid

    RESUMABLE_KEYS: ClassVar[frozenset[str]] = RealImagesConfig.RESUMABLE_KEYS | {"sample_grid"}


def discriminator_step(D: nn.Module, opt_D: torch.optim.Optimizer, real: torch.Tensor,
                       fake: torch.Tensor, autocast: contextlib.AbstractContextManager,
                       dist: Distributed) -> dict[str, torch.Tensor]:
    """One update of D on ``real`` against ``fake`` (detached, no gradient reaches G).

    Returns:
        the logged values: ``loss/d``, ``logits/real``, ``logits/fake``.
    """
    D.requires_grad_(True)
    with autocast:
        real_logits, fake_logits = D(real).float(), D(fake.detach()).float()
    d_loss = losses.d_logistic_loss(real_logits, fake_logits)
    optimizer_step(d_loss, D, opt_D, dist)
    return {"loss/d": d_loss.detach(), "logits/real": real_logits.detach().mean(),
            "logits/fake": fake_logits.detach().mean()}


def r1_step(D: nn.Module, opt_D: torch.optim.Optimizer, real: torch.Tensor, gamma: float,
            interval: int, dist: Distributed) -> torch.Tensor:
    """One lazy R1 update of D (run every ``interval`` steps, so weighted by it), in full
    precision: it is a gradient penalty. Returns the (unweighted) penalty."""
    real = real.detach().requires_grad_(True)
    r1 = losses.d_r1_penalty(D(real), real)
    optimizer_step(r1 * (gamma / 2) * interval, D, opt_D, dist)
    return r1.detach()
