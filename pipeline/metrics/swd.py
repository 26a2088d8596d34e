"""Sliced Wasserstein distance between two image sets on Laplacian pyramids (Karras et al.,
"Progressive Growing of GANs", 2018, Sec. 5).

Each image is decomposed into a Laplacian pyramid, from its resolution down to 16x16 (the last
level being the low-pass residual). From every level, random 7x7 neighbourhoods are taken (128 per
image); each set of descriptors is normalized per colour channel (its own mean and standard
deviation); then the sliced Wasserstein distance between the two sets is estimated with random
unit directions: both sets are projected, sorted, and compared by mean absolute difference. Fine
levels measure texture and detail, the 16x16 level colour and layout. Needs no pretrained weights.
Reported multiplied by 1e3, as in the paper.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PATCH = 7              # neighbourhood size
PATCHES_PER_IMAGE = 128
MIN_RESOLUTION = 16    # coarsest pyramid level
DIRECTIONS = 512       # random projections (4 repeats of 128 in the paper)


def _binomial_kernel(channels: int) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = torch.outer(k, k) / 256.0
    return k.expand(channels, 1, 5, 5).contiguous()


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _binomial_kernel(x.shape[1]),
                    groups=x.shape[1])


def laplacian_pyramid(images: torch.Tensor,
                      min_resolution: int = MIN_RESOLUTION) -> list[torch.Tensor]:
    """Levels of the Laplacian pyramid of (N, C, R, R) images, finest first; the last is the
    low-pass image at ``min_resolution``. Summing the upsampled levels gives the images back."""
    levels, current = [], images.float()
    while current.shape[-1] > min_resolution:
        down = _blur(current)[..., ::2, ::2]
        up = torch.zeros_like(current)
        up[..., ::2, ::2] = down
        levels.append(current - 4 * _blur(up))
        current = down
    levels.append(current)
    return levels


def descriptors(level: torch.Tensor, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """``per_image`` random PATCHxPATCH neighbourhoods of each image of a pyramid level,
    (N * per_image, C, PATCH, PATCH)."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - PATCH + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - PATCH + 1, (n, per_image), generator=generator)
    offsets = torch.arange(PATCH)
    rows = (ys[..., None] + offsets)[..., :, None].expand(-1, -1, PATCH, PATCH)  # (n, p, 7, 7)
    cols = (xs[..., None] + offsets)[..., None, :].expand(-1, -1, PATCH, PATCH)
    index = torch.arange(n)[:, None, None, None].expand_as(rows)
    patches = level.permute(0, 2, 3, 1)[index, rows, cols]                        # (n, p, 7, 7, c)
    return patches.reshape(n * per_image, PATCH, PATCH, c).permute(0, 3, 1, 2)


def normalize(desc: torch.Tensor) -> torch.Tensor:
    """Per colour channel: zero mean, unit standard deviation over the whole set."""
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).flatten(1)


def random_directions(dim: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random unit vectors in R^dim, as columns (dim, count)."""
    dirs = torch.randn(dim, count, generator=generator)
    return dirs / dirs.norm(dim=0, keepdim=True)


def sorted_projections(desc: torch.Tensor, dirs: torch.Tensor) -> np.ndarray:
    """(directions, M): the M descriptors projected on each direction, sorted (NumPy's float32
    sort: several times faster than torch's for this shape)."""
    return np.sort((dirs.T @ desc.T).numpy(), axis=1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """Sliced Wasserstein distance from :func:`sorted_projections` of two equally sized sets
    on the same directions: the mean over directions of the 1-D Wasserstein-1 distances."""
    if a.shape != b.shape:
        raise ValueError(f"descriptor sets differ in shape: {a.shape} and {b.shape}")
    return float(np.abs(a - b).mean(dtype=np.float64))


def level_descriptors(images: torch.Tensor, seed: int,
                      per_image: int = PATCHES_PER_IMAGE) -> dict[int, torch.Tensor]:
    """Normalized descriptors of every pyramid level of (N, C, R, R) images in [-1, 1], keyed by
    the level's resolution: what the distance compares, and what is cached for the real images."""
    generator = torch.Generator().manual_seed(seed)
    return {level.shape[-1]: normalize(descriptors(level, per_image, generator))
            for level in laplacian_pyramid(images)}


class SWD:
    """Sliced Wasserstein distances to one real image set: its projections on fixed random
    directions (one set per pyramid level) are sorted once and compared with any number of
    generated sets of the same size."""

    def __init__(self, real: dict[int, torch.Tensor], seed: int, directions: int = DIRECTIONS):
        generator = torch.Generator().manual_seed(seed)
        self.dirs = {r: random_directions(d.shape[1], directions, generator)
                     for r, d in real.items()}
        self.real = {r: sorted_projections(d, self.dirs[r]) for r, d in real.items()}

    def distance(self, fake: dict[int, torch.Tensor]) -> dict[str, float]:
        """SWD x 1e3 per pyramid level ("swd_32", "swd_16", ...) and their mean ("swd_mean"),
        from :func:`level_descriptors` of a generated set."""
        if fake.keys() != self.real.keys():
            raise ValueError(f"pyramid levels differ: {sorted(self.real)} and {sorted(fake)}")
        result = {f"swd_{r}": 1e3 * sliced_wasserstein(
                      self.real[r], sorted_projections(fake[r], self.dirs[r]))
                  for r in sorted(self.real, reverse=True)}
        result["swd_mean"] = sum(result.values()) / len(self.real)
        return result
