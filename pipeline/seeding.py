"""Seeding helpers: derive independent, reproducible random streams from one seed."""

from __future__ import annotations

import random

import numpy as np
import torch


def numpy_rng(seed: int, *stream: int) -> np.random.Generator:
    """A NumPy generator for ``(seed, *stream)``.

    Streams are statistically independent (``SeedSequence`` spawning), so item ``i`` of a dataset can
    be generated from ``numpy_rng(seed, i)`` in any order or any worker and still be the same.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
