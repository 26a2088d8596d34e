"""Latents of a style-based generator: one w for every layer, style mixing, and the sampler that
draws a batch's latents for training.

``ws`` (N, num_ws, w_dim) holds one w per style input of a synthesis network (its ``num_ws``).
"The same w for every layer" is :func:`broadcast_ws`; style mixing hands every layer from a
cutoff index on to a second latent (:func:`mix_styles`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def broadcast_ws(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """One w per sample for every layer: (N, w_dim) -> (N, num_ws, w_dim), a view (no copy)."""
    return w[:, None].expand(-1, num_ws, -1)


def mix_styles(w: torch.Tensor, w2: torch.Tensor, num_ws: int, cutoff: int | None) -> torch.Tensor:
    """ws (N, num_ws, w_dim): ``w`` for the layers before index ``cutoff``, ``w2`` from it on
    (``cutoff`` None: ``w`` everywhere). A new tensor."""
    ws = w[:, None].repeat(1, num_ws, 1)
    if cutoff is not None:
        ws[:, cutoff:] = w2[:, None]
    return ws


@dataclass(frozen=True)
class StyleSample:
    """The latents of one training batch: z (2N, z_dim) and its two halves mapped to w and w2
    (N, w_dim each); ``cutoff`` is the drawn mixing point, or None (no mixing this batch)."""

    z: torch.Tensor
    w: torch.Tensor
    w2: torch.Tensor
    cutoff: int | None

    def ws(self, num_ws: int, cutoff: int | None) -> torch.Tensor:
        """ws (N, num_ws, w_dim) for a network whose mixing index is ``cutoff`` (None: no mixing;
        the caller translates :attr:`cutoff` into its network's layer index)."""
        return mix_styles(self.w, self.w2, num_ws, cutoff)


def sample_styles(mapping: nn.Module, batch: int, z_dim: int, mixing_prob: float,
                  cutoffs: range, generator: torch.Generator, device: torch.device,
                  update_w_avg: bool = False) -> StyleSample:
    """Draw one batch's latents with style mixing (StyleGAN2's regularization): 2 x ``batch``
    standard normal z, mapped to w; with probability ``mixing_prob`` a cutoff drawn uniformly from
    ``cutoffs``, from which a second latent takes over.

    What a cutoff indexes is the caller's choice, stated by ``cutoffs``: the teacher's training
    mixes at any of its layers (``range(1, num_ws)``, as StyleGAN2 does); distillation mixes at the
    start of a resolution (``range(4, log2 R + 1)``, log2 of 16 .. R), which a teacher and a student
    with different layer counts share. Every draw comes from ``generator`` (z first, then the
    mixing coin, then the cutoff), so a step's latents depend on its seed alone.
    """
    z = torch.randn(2 * batch, z_dim, generator=generator).to(device)
    w, w2 = mapping(z, update_w_avg=update_w_avg).view(2, batch, -1)
    cutoff = None
    if torch.rand((), generator=generator) < mixing_prob:
        cutoff = cutoffs[int(torch.randint(len(cutoffs), (), generator=generator))]
    return StyleSample(z, w, w2, cutoff)
