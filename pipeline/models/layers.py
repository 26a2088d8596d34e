"""Building blocks shared by the teacher (StyleGAN2) and the student (BlazeStyleGAN).

Pure PyTorch: no custom CUDA ops and no compiled extensions, so every model runs on CPU and CUDA
and traces for export. Layers use StyleGAN's equalized learning rate: weights are stored with unit
variance and scaled by 1/sqrt(fan_in) at run time, so Adam's per-parameter step sizes are uniform.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)
BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resampling filter


def lrelu_gain(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) scaled by sqrt(2), which keeps activations at unit variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


def make_kernel(taps=BLUR_KERNEL) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1. Shape (k, k)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample (zero insertion), pad, filter with ``kernel``, downsample (stride).

    The reference StyleGAN2 op, written with ``F.pad`` and a depthwise ``conv2d``. Zero
    insertion pads a 6-D view, except during ONNX export: onnx2tf turns a 6-D pad into a
    TensorFlow "Flex" op that mobile runtimes lack, so the exported graph inserts the same zeros
    with 4-D ops (nearest-neighbour upsampling times a constant 0/1 mask; about 3x slower in
    training, hence not used there). Both give identical values.

    Args:
        x:      (N, C, H, W).
        kernel: (k, k), applied to every channel.
        up:     upsampling factor; input samples land at the top-left of each up x up cell.
        down:   downsampling factor.
        pad:    (before, after) padding on both axes, applied after upsampling; may be negative.
    """
    n, c, h, w = x.shape
    if up > 1 and torch.onnx.is_in_onnx_export():
        cell = torch.zeros(up, up, dtype=x.dtype, device=x.device)
        cell[0, 0] = 1
        x = F.interpolate(x, scale_factor=up, mode="nearest") * cell.repeat(h, w)
    elif up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, -1, -1)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


class Blur(nn.Module):
    """FIR filtering with the StyleGAN2 kernel, scaled by ``upsample_factor**2`` after
    upsampling."""

    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel() * upsample_factor ** 2, persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling: zero insertion followed by the blur kernel (x4 to keep the DC gain)."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel() * factor ** 2, persistent=False)
        p = len(BLUR_KERNEL) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate and an optional fused LeakyReLU.

    ``lr_mul`` slows the layer down (StyleGAN's mapping network uses 0.01): the stored parameters
    are divided by it and the effective ones multiplied back.
    """

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)
        return lrelu_gain(out) if self.activation else out


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class NoiseInjection(nn.Module):
    """Adds per-pixel noise (shared across channels) scaled by a learned strength."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return x if noise is None else x + self.weight * noise
