"""StyleGAN2 (Karras et al., CVPR 2020) in pure PyTorch: the teacher.

The maths follows the official config-F networks (skip generator, residual discriminator) as
written in rosinality/stylegan2-pytorch and NVlabs/stylegan2-ada-pytorch, which agree with each
other, so checkpoints of both convert to this module by renaming weights
(``pipeline.models.convert``).

Each modulated convolution computes the same function in one of two forms, chosen by its ``fused``
flag (see :meth:`Generator.set_fused`):

* activation modulation (the default): the style scales the *input activations*, a static
  convolution runs over the whole batch, and the output is multiplied by the demodulation
  factor. Mobile converters need constant convolution weights, which only this form has; it is
  also the faster one on CPU (``scripts/benchmark_modconv.py``, README), and the one NVlabs'
  StyleGAN2-ADA trains with;
* fused (``set_fused(True)``): the style scales the *weights*, which are demodulated and applied
  with a grouped convolution, one weight set per sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import PowerOfTwo, StageConfig
from pipeline.models.layers import (
    BLUR_KERNEL,
    Blur,
    EqualConv2d,
    EqualLinear,
    NoiseInjection,
    Upsample,
    lrelu_gain,
)
from pipeline.models.styles import broadcast_ws
from pipeline.snapshot import rebuild_from_snapshot

NoiseMode = Literal["random", "const", "none"]


class StyleGAN2Config(StageConfig):
    """Shape of a StyleGAN2 generator and discriminator. Stored in every checkpoint."""

    resolution: Annotated[PowerOfTwo, pydantic.Field(ge=8, le=1024)]  # output size
    z_dim: Annotated[int, pydantic.Field(ge=1)]            # latent z size
    w_dim: Annotated[int, pydantic.Field(ge=1)]            # intermediate latent w size
    mapping_layers: Annotated[int, pydantic.Field(ge=1)]   # depth of the mapping MLP
    mapping_lr_mul: Annotated[float, pydantic.Field(gt=0)]  # learning-rate multiplier of mapping
    channel_base: Annotated[int, pydantic.Field(ge=1)]     # channels at resolution r: base // r,
    channel_max: Annotated[int, pydantic.Field(ge=1)]      # ... capped at channel_max
    conv_clamp: Annotated[float, pydantic.Field(gt=0)] | None  # clamp activations to +-this
    # (StyleGAN2-ADA trains with 256 for its float16 layers; None: no clamping)
    noise: bool  # per-layer noise inputs (StyleGAN2 has them; flat-shaded data does not need them)

    def channels(self, resolution: int) -> int:
        return min(self.channel_base // resolution, self.channel_max)

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def num_ws(self) -> int:
        """How many w vectors synthesis consumes: one per modulated conv and ToRGB, shared."""
        return 2 * self.log2_resolution - 2

    def ws_index(self, resolution: int) -> int:
        """Index of the first w of the block at ``resolution`` (8..R) in ws: the style-mixing
        cutoff that hands that block and every finer one to a second latent."""
        return 2 * int(math.log2(resolution)) - 5


# Config F of the paper: 512 channels up to 64x64, then halving (channel_base 32768 is rosinality's
# channel_multiplier=2). The tiny preset is the embedded default, sized for a 2-core CPU.
PRESETS: dict[str, StyleGAN2Config] = {
    **{f"tiny-{r}": StyleGAN2Config(resolution=r, z_dim=64, w_dim=64, mapping_layers=2,
                                    mapping_lr_mul=0.01, channel_base=1024, channel_max=64,
                                    conv_clamp=None, noise=False)
       for r in (32, 64)},
    **{f"ffhq-{r}": StyleGAN2Config(resolution=r, z_dim=512, w_dim=512, mapping_layers=8,
                                    mapping_lr_mul=0.01, channel_base=32768, channel_max=512,
                                    conv_clamp=None, noise=True)
       for r in (256, 512, 1024)},
}


class MappingNetwork(nn.Module):
    """z -> w: normalise z, then an MLP. Tracks the running mean of w for truncation."""

    def __init__(self, config: StyleGAN2Config, w_avg_beta: float = 0.995):
        super().__init__()
        dims = [config.z_dim] + [config.w_dim] * config.mapping_layers
        self.layers = nn.ModuleList(
            EqualLinear(i, o, lr_mul=config.mapping_lr_mul, activation=True)
            for i, o in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.w_avg_beta = w_avg_beta

    def forward(self, z: torch.Tensor, psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        """z (N, z_dim) -> w (N, w_dim); ``psi`` < 1 truncates towards the average w."""
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # pixel norm
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:  # in float32 whatever autocast made of x
            self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if psi != 1.0:
            x = self.w_avg.to(x.dtype).lerp(x, psi)
        return x


def demodulation(style: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The activation form's demodulation factor, (N, Cout): rsqrt(sum_ci s[ci]^2 sum_k
    w[co,ci,k]^2 + 1e-8), a small matmul. In float32 under autocast, where a bfloat16 matmul
    would round it (the fused form's factor, a sum of elementwise products, stays float32)."""
    device = style.device.type
    if torch.is_autocast_enabled(device):
        with torch.autocast(device, enabled=False):
            return demodulation(style.float(), weight.float())
    return torch.rsqrt(style.pow(2) @ weight.pow(2).sum(dim=(2, 3)).t() + 1e-8)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution, with optional demodulation and 2x upsampling.

    Args:
        in_ch, out_ch: channels.
        kernel_size:   3 for synthesis convs, 1 for ToRGB.
        w_dim:         size of w, mapped to one scale per input channel by ``affine``.
        demodulate:    normalise each output channel to unit expected variance.
        up:            2x upsampling (transposed conv with stride 2, then blur).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, w_dim: int,
                 demodulate: bool = True, up: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size ** 2)
        self.demodulate, self.up = demodulate, up
        self.padding = kernel_size // 2
        if up:
            p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        self.fused = False  # activation modulation (module docstring)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, in_ch, h, wd = x.shape
        style = self.affine(w)                       # (N, Cin)
        weight = self.weight * self.scale            # (Cout, Cin, k, k)
        if self.fused:
            return self._forward_fused(x, style, weight)
        # Activation modulation: s * x, static conv, times the demodulation factor.
        x = x * style[:, :, None, None]
        if self.up:
            x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            x = self.blur(x)
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            x = x * demodulation(style, weight)[:, :, None, None]
        return x

    def _forward_fused(self, x, style, weight):
        n, in_ch, h, wd = x.shape
        out_ch, k = weight.shape[0], weight.shape[-1]
        weight = weight[None] * style[:, None, :, None, None]          # (N, Cout, Cin, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)  # (N, Cout)
            weight = weight * demod[:, :, None, None, None]
        x = x.reshape(1, n * in_ch, h, wd)
        if self.up:
            weight = weight.transpose(1, 2).reshape(n * in_ch, out_ch, k, k)
            x = F.conv_transpose2d(x, weight, stride=2, groups=n)
            x = self.blur(x.reshape(n, out_ch, *x.shape[-2:]))
            return x
        x = F.conv2d(x, weight.reshape(n * out_ch, in_ch, k, k), padding=self.padding, groups=n)
        return x.reshape(n, out_ch, *x.shape[-2:])


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise (when ``noise``) -> bias -> LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: bool = False,
                 clamp: float | None, noise: bool):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, up=up)
        self.clamp = clamp
        self.noise = NoiseInjection() if noise else None
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        if noise:
            # A fixed noise image per layer, for reproducible samples (noise_mode="const").
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode) -> torch.Tensor:
        x = self.conv(x, w)
        if self.noise is not None:
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
            else:
                noise = self.noise_const if noise_mode == "const" else None
            x = self.noise(x, noise)
        x = lrelu_gain(x + self.bias)
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation), added to the upsampled previous RGB (skip)."""

    def __init__(self, in_ch: int, w_dim: int, upsample_skip: bool, clamp: float | None = None):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.clamp = clamp
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = Upsample() if upsample_skip else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        rgb = self.conv(x, w) + self.bias
        if self.clamp is not None:
            rgb = rgb.clamp(-self.clamp, self.clamp)
        if skip is not None:
            rgb = rgb + self.upsample(skip)
        return rgb


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> image (N, 3, R, R): learned 4x4 constant, then 2x per block."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        c4 = config.channels(4)
        self.const = nn.Parameter(torch.randn(1, c4, 4, 4))
        clamp, noise = config.conv_clamp, config.noise
        self.conv1 = StyledConv(c4, c4, config.w_dim, 4, clamp=clamp, noise=noise)
        self.to_rgb1 = ToRGB(c4, config.w_dim, upsample_skip=False, clamp=clamp)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        in_ch = c4
        for log_res in range(3, config.log2_resolution + 1):
            res = 2 ** log_res
            out_ch = config.channels(res)
            self.convs.append(StyledConv(in_ch, out_ch, config.w_dim, res, up=True, clamp=clamp,
                                         noise=noise))
            self.convs.append(StyledConv(out_ch, out_ch, config.w_dim, res, clamp=clamp,
                                         noise=noise))
            self.to_rgbs.append(ToRGB(out_ch, config.w_dim, upsample_skip=True, clamp=clamp))
            in_ch = out_ch

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        # ws[:, i] drives conv i; each ToRGB shares its w with the next block's first conv.
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        x = self.conv1(x, ws[:, 0], noise_mode)
        rgb = self.to_rgb1(x, ws[:, 1], None)
        for i, to_rgb in enumerate(self.to_rgbs):
            x = self.convs[2 * i](x, ws[:, 2 * i + 1], noise_mode)
            x = self.convs[2 * i + 1](x, ws[:, 2 * i + 2], noise_mode)
            rgb = to_rgb(x, ws[:, 2 * i + 3], rgb)
        return rgb


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w) then ``synthesis`` (ws -> image in [-1, 1])."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def set_fused(self, fused: bool) -> Generator:
        """Switch every modulated conv between the fused (per-sample weight) form and the
        activation-modulation form. Same parameters, same function."""
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.fused = fused
        return self

    def forward(self, z: torch.Tensor, psi: float = 1.0,
                noise_mode: NoiseMode = "random") -> torch.Tensor:
        """z (N, z_dim) -> image (N, 3, R, R), one w for every layer (no style mixing)."""
        w = self.mapping(z, psi=psi)
        return self.synthesis(broadcast_ws(w, self.num_ws), noise_mode)


class ConvLayer(nn.Module):
    """Discriminator conv: optional blur + stride-2 downsampling, bias, LeakyReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, down: bool = False,
                 bias: bool = True, activate: bool = True):
        super().__init__()
        self.blur = None
        if down:
            p = (len(BLUR_KERNEL) - 2) + (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2, p // 2))
        self.conv = EqualConv2d(in_ch, out_ch, kernel_size, stride=2 if down else 1,
                                padding=0 if down else kernel_size // 2, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias and activate else None
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        if self.activate:
            x = lrelu_gain(x + self.bias[None, :, None, None] if self.bias is not None else x)
        return x


class ResBlock(nn.Module):
    """Two convs (the second downsamples) plus a 1x1 downsampling skip, summed / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, down=True)
        self.skip = ConvLayer(in_ch, out_ch, 1, down=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the average standard deviation over groups of samples as one extra channel.

    Lets the discriminator see a lack of variety within a batch (mode collapse).
    x: (N, C, H, W) -> (N, C + 1, H, W). N must be divisible by min(group_size, N).
    """
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, -1, c, h, w)                       # (G, N/G, C, H, W)
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # (N/G, C, H, W)
    y = y.mean(dim=(1, 2, 3))[:, None, None, None]      # (N/G, 1, 1, 1)
    y = y.repeat(g, 1, h, w)                            # (N, 1, H, W)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: image (N, 3, R, R) -> logits (N, 1)."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        self.config = config
        res = config.resolution
        self.from_rgb = ConvLayer(3, config.channels(res), 1)
        self.blocks = nn.Sequential(*(
            ResBlock(config.channels(2 ** r), config.channels(2 ** (r - 1)))
            for r in range(config.log2_resolution, 2, -1)))
        c4 = config.channels(4)
        self.final_conv = ConvLayer(c4 + 1, c4, 3)
        self.final_linear = nn.Sequential(EqualLinear(c4 * 4 * 4, c4, activation=True),
                                          EqualLinear(c4, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.from_rgb(image))
        x = self.final_conv(minibatch_stddev(x))
        return self.final_linear(x.flatten(1))

    def features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The activations a frozen discriminator offers as a feature network (JoJoGAN's
        feature matching): after ``from_rgb`` and after each residual block, finest first,
        [(N, C_R, R, R), (N, C_R/2, R/2, R/2), ..., (N, C_4, 4, 4)]; per image (before the
        minibatch standard deviation, which mixes the batch)."""
        x = self.from_rgb(image)
        features = [x]
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return features


TEACHER_KIND = "stylegan2-generator"  # snapshot kind of a teacher (trained or imported)
DISCRIMINATOR_KIND = "stylegan2-discriminator"  # the distillation discriminator (stylizer losses)


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The teacher's EMA generator, rebuilt from its snapshot alone (no params.yaml)."""
    return rebuild_from_snapshot(path, TEACHER_KIND,
                                 lambda c: Generator(StyleGAN2Config.model_validate(c)), device)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """A trained discriminator (the distillation's), rebuilt from its snapshot alone, frozen."""
    D = rebuild_from_snapshot(path, DISCRIMINATOR_KIND,
                              lambda c: Discriminator(StyleGAN2Config.model_validate(c)), device)
    return D.eval().requires_grad_(False)
