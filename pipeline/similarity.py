"""Full-reference image similarity: PSNR and SSIM of images in [-1, 1].

Used as distillation metrics (student vs teacher on fixed latents), by the weight-free perceptual
distance, and by evaluation (PyTorch vs deployed models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_MAX_DB = 100.0  # the value for identical images, so that metrics stay finite


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (N,), for images in [-1, 1] (peak: range 2),
    capped at :data:`PSNR_MAX_DB` (identical images)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(4.0 * 10 ** (-PSNR_MAX_DB / 10)))


def gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Normalized 2-D Gaussian window (size, size)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per pixel and channel, (N, C, H, W): Gaussian window (7, sigma 1.5),
    edges replicated so small images keep their size."""
    window = gaussian_window() if window is None else window
    x, y = (x + 1) / 2, (y + 1) / 2
    c = x.shape[1]
    k = window.to(x)[None, None].expand(c, 1, -1, -1)
    pad = window.shape[-1] // 2

    def blur(t):
        return F.conv2d(F.pad(t, [pad] * 4, mode="replicate"), k, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1)
                                                        * (var_x + var_y + c2))


def ssim(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM over the batch (a scalar)."""
    return ssim_map(x, y, window).mean()


def ssim_per_image(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each image, (N,)."""
    return ssim_map(x.float(), y.float()).flatten(1).mean(1)
