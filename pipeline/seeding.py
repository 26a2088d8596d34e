"""Seeding: independent, reproducible random streams derived from one seed.

Randomness is *stateless per step*: every random draw of training step ``k`` on rank ``r`` (batch
indices, latents, style mixing, noise inputs) comes from generators seeded by ``(seed, k, r)``. A
run resumed from a checkpoint of step ``k`` therefore replays exactly what an uninterrupted run
would have drawn, without restoring any generator state, and the data order does not depend on the
worker count. Fixed latents (sample grids, conversion checks) use step -1 of a named stream.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """A NumPy generator for ``(seed, *stream)``.

    Streams are statistically independent (``SeedSequence`` spawning), so item ``i`` of a dataset
    can be generated from ``numpy_rng(seed, i)`` in any order or any worker and still be the same.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def step_seed(seed: int, step: int, rank: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of one step on one rank."""
    digest = hashlib.sha256(f"{seed}/{step}/{rank}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def step_generator(seed: int, step: int, rank: int, stream: str,
                   device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` for one stream of one step on one rank."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, rank, stream))


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed the global generators for draws made inside models (e.g. StyleGAN noise inputs)."""
    torch.manual_seed(step_seed(seed, step, rank, "global"))


def fixed_latents(seed: int, count: int, z_dim: int, stream: str) -> torch.Tensor:
    """``count`` latents (count, z_dim) fixed for a whole run and across resumptions, e.g. for the
    sample grids (``stream`` names what they are for, so two uses never share latents)."""
    return torch.randn(count, z_dim, generator=step_generator(seed, -1, 0, stream))
