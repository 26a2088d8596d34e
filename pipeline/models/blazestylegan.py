"""BlazeStyleGAN (Jia et al., CVPRW 2023): the mobile student generator.

Structure, for an output of R x R pixels:

* the mapping network is StyleGAN's (by default a frozen copy of the teacher's, so both see the
  same w); it is *not* part of the synthesis network and not in its complexity counts (below);
* one synthesis **level** per output resolution r = 8, 16, ..., R. The level's block runs at r / 4,
  a quarter of the teacher's feature resolution at that level (2x2 for the 8x8 level), starting
  from a learned 2x2 constant and upsampling features 2x (bilinear) between levels;
* each block is two :class:`ModulatedSeparableConv` layers built from mobile-friendly operators
  only: the style scales the *activations*, a static depthwise 3x3 and a static pointwise 1x1
  convolution follow, and the output is multiplied by the demodulation factor. Constant weights
  everywhere: no per-sample weights, which mobile runtimes cannot run. A level's block may keep
  its first layer only (``convs``: the latency search's block-length choice; the second layer
  maps the level's width to itself, so dropping it leaves an identity);
* each level has an :class:`UpToRGB` head that takes the block's features at r / 4 up to an RGB
  image at r: the heads form a coarse-to-fine pyramid (8x8 ... R x R). Training uses all of them;
  inference keeps the last one only. The head's last 2x step is a config choice (``head``):
  ``bilinear`` (the paper's: bilinear upsampling and convolutions at full resolution) or
  ``subpixel`` (the RGB of each 2x2 block computed at half resolution by a 1x1 convolution to 12
  channels and a depth-to-space: no work at full resolution but writing the image; README, "The
  student at the hardware's limit").

Designed for export: styles are computed by 1x1 convolutions on w shaped (N, w_dim, 1, 1), so
scaling activations is a broadcast multiply with no reshape or transpose; noise inputs are
constants of shape (1, 1, H, W).

Complexity convention (Table 1 of the paper, reproduced by the presets): parameters and FLOPs of
the synthesis network of the inference graph (final head only), FLOPs = 2 x multiply-accumulates.
The mapping network is excluded: it is the teacher's own (shared, frozen), it runs once per latent
and can be replaced by precomputed w, and at 2.1 M parameters for StyleGAN's 8 x 512 layers it is
larger on its own than the paper's totals, so the paper's counts cannot include it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import PowerOfTwo, StageConfig
from pipeline.models.layers import SQRT2
from pipeline.models.stylegan2 import MappingNetwork, StyleGAN2Config
from pipeline.models.styles import broadcast_ws
from pipeline.snapshot import rebuild_from_snapshot


class BlazeStyleGANConfig(StageConfig):
    """Shape of a BlazeStyleGAN student. Stored in every checkpoint."""

    resolution: Annotated[PowerOfTwo, pydantic.Field(ge=16, le=1024)]  # output size
    z_dim: Annotated[int, pydantic.Field(ge=1)]
    w_dim: Annotated[int, pydantic.Field(ge=1)]
    mapping_layers: Annotated[int, pydantic.Field(ge=1)]
    mapping_lr_mul: Annotated[float, pydantic.Field(gt=0)]
    channels: list[Annotated[int, pydantic.Field(ge=1)]]  # per level, 8x8 first, R x R last
    head_channels: list[Annotated[int, pydantic.Field(ge=1)]]  # UpToRGB width per level
    noise: bool                                           # per-layer noise inputs
    # the heads' last 2x step (see the module docstring); snapshots older than the field are
    # bilinear
    head: Literal["bilinear", "subpixel"] = "bilinear"
    # modulated convolutions per level's block: 2 (the paper's) or 1 (the second dropped, as the
    # latency search's block-length variables may); null: 2 everywhere (and older snapshots)
    convs: list[Literal[1, 2]] | None = None

    @pydantic.model_validator(mode="after")
    def _check_levels(self):
        levels = int(math.log2(self.resolution)) - 2
        for key in ("channels", "head_channels", "convs"):
            values = getattr(self, key)
            if values is not None and len(values) != levels:
                raise ValueError(f"{key} needs one value per level 8..{self.resolution} "
                                 f"({levels}), got {len(values)}")
        return self

    @pydantic.field_validator("convs", mode="after")
    @classmethod
    def _two_everywhere_is_the_default(cls, value):
        """Two convolutions on every level is the plain config (null): one name per network."""
        return None if value is not None and min(value) == 2 else value

    @property
    def level_convs(self) -> list[int]:
        """Modulated convolutions of each level's block (1 or 2)."""
        return list(self.convs) if self.convs is not None else [2] * len(self.levels)

    @property
    def levels(self) -> list[int]:
        """Output resolution of each level: 8, 16, ..., R."""
        return [2 ** i for i in range(3, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Style inputs: two per block plus one for the last head (heads share with the next
        block); a block of one convolution leaves its second input unused, so that ws (and an
        encoder's W+) index the same layers whatever the blocks' lengths."""
        return 2 * len(self.levels) + 1

    def ws_index(self, resolution: int) -> int:
        """Index of the first w of the level at ``resolution`` (8..R) in ws (see
        StyleGAN2Config)."""
        return 2 * (int(math.log2(resolution)) - 3)

    def mapping_config(self) -> StyleGAN2Config:
        return StyleGAN2Config(resolution=self.resolution, z_dim=self.z_dim, w_dim=self.w_dim,
                               mapping_layers=self.mapping_layers,
                               mapping_lr_mul=self.mapping_lr_mul, channel_base=1, channel_max=1,
                               conv_clamp=None, noise=False)


def _preset(resolution, channels, heads):
    return BlazeStyleGANConfig(resolution=resolution, z_dim=512, w_dim=512, mapping_layers=8,
                               mapping_lr_mul=0.01, channels=channels, head_channels=heads,
                               noise=True)


# Channel widths fitted so the inference synthesis network matches the paper's Table 1 (2.01 M /
# 1.28 GFLOPs at 256, 2.05 M / 1.57 at 512, 2.07 M / 4.70 at 1024) within 4%: measured -1.0% /
# +3.2%, -0.5% / +0.3%, -1.5% / +3.9% (`python -m stages.complexity`; checked by the tests).
# Only the last head counts at inference; the auxiliary heads are sized for training alone.
# The tiny presets are students of the tiny StyleGAN2 teachers (same z, w and mapping network).
# blaze-tiny-32's last head is 32 wide: at 16 its 32 px level lost most to the teacher (README,
# "A default that draws faces": scripts/distill_sweep.py).
PRESETS: dict[str, BlazeStyleGANConfig] = {
    "blaze-tiny-32": BlazeStyleGANConfig(resolution=32, z_dim=64, w_dim=64, mapping_layers=2,
                                         mapping_lr_mul=0.01, channels=[64, 64, 32],
                                         head_channels=[16, 16, 32], noise=True),
    "blaze-tiny-64": BlazeStyleGANConfig(resolution=64, z_dim=64, w_dim=64, mapping_layers=2,
                                         mapping_lr_mul=0.01, channels=[64, 64, 32, 16],
                                         head_channels=[16, 16, 16, 16], noise=True),
    "blaze-256": _preset(256, [128, 256, 256, 256, 256, 128], [32, 32, 32, 32, 32, 48]),
    "blaze-512": _preset(512, [128, 256, 256, 256, 256, 128, 48], [32, 32, 32, 32, 32, 32, 20]),
    "blaze-1024": _preset(1024, [128, 256, 256, 256, 256, 128, 32, 16],
                          [32, 32, 32, 32, 32, 32, 16, 32]),
}


class StyleAffine(nn.Module):
    """w (N, w_dim, 1, 1) -> per-channel styles (N, C, 1, 1): a 1x1 conv, equalized lr, bias 1."""

    def __init__(self, w_dim: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, w_dim, 1, 1))
        self.bias = nn.Parameter(torch.ones(channels))
        self.scale = 1 / math.sqrt(w_dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(w, self.weight * self.scale, self.bias)


class ModulatedSeparableConv(nn.Module):
    """Style-modulated depthwise-separable 3x3 convolution with demodulation, noise, bias, lrelu.

    Computes ``demod * pw(dw(x * s))``: the composition ``pw o dw`` is a 3x3 convolution with weight
    ``pw[o, i] * dw[i, k]``, so the StyleGAN2 demodulation factor of that weight modulated by s is
    ``rsqrt(sum_i s_i^2 pw[o, i]^2 |dw_i|^2)``: one small matmul on the styles, done as a 1x1 conv.
    """

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, noise: bool):
        super().__init__()
        self.style = StyleAffine(w_dim, in_ch)
        self.depthwise = nn.Parameter(torch.randn(in_ch, 1, 3, 3))
        self.pointwise = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.dw_scale, self.pw_scale = 1 / 3.0, 1 / math.sqrt(in_ch)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        if noise:
            self.noise_strength = nn.Parameter(torch.zeros(1))
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        else:
            self.noise_strength = None

    def forward(self, x: torch.Tensor, w: torch.Tensor,
                in_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``in_mask`` (1, Cin, 1, 1) of 0 / 1 (the latency search's channel mask) multiplies the
        style: a masked input channel drops out of the data path and of the demodulation alike,
        so the layer computes exactly what one without that input channel would."""
        s = self.style(w)                                       # (N, Cin, 1, 1)
        if in_mask is not None:
            s = s * in_mask
        dw = self.depthwise * self.dw_scale                     # (Cin, 1, 3, 3)
        pw = self.pointwise * self.pw_scale                     # (Cout, Cin, 1, 1)
        x = F.conv2d(x * s, dw, padding=1, groups=dw.shape[0])
        x = F.conv2d(x, pw)
        energy = pw.pow(2) * dw.pow(2).sum(dim=(1, 2, 3))[None, :, None, None]  # (Cout, Cin, 1, 1)
        # demodulation (N, Cout, 1, 1); the activation's gain sqrt(2) is folded into it, the noise
        # and the bias (LeakyReLU(g x) = g LeakyReLU(x)): one full-size multiply fewer
        x = x * (torch.rsqrt(F.conv2d(s.pow(2), energy) + 1e-8) * SQRT2)
        if self.noise_strength is not None:
            x = x + (self.noise_strength * SQRT2) * self.noise_const
        return F.leaky_relu(x + self.bias * SQRT2, 0.2)


def level_block(in_ch: int, out_ch: int, w_dim: int, resolution: int, noise: bool,
                convs: int = 2) -> nn.ModuleList:
    """One level's block: ``convs`` (2, or 1) modulated separable convolutions at
    ``resolution``, the first from ``in_ch`` channels to ``out_ch``, the second ``out_ch`` to
    ``out_ch``."""
    if convs not in (1, 2):
        raise ValueError(f"a level's block has 1 or 2 convolutions, not {convs}")
    layers = [ModulatedSeparableConv(in_ch, out_ch, w_dim, resolution, noise)]
    if convs == 2:
        layers.append(ModulatedSeparableConv(out_ch, out_ch, w_dim, resolution, noise))
    return nn.ModuleList(layers)


class UpToRGB(nn.Module):
    """Auxiliary head: features (N, C, r/4, r/4) -> RGB (N, 3, r, r).

    A modulated pointwise projection to ``hidden`` channels, then twice (bilinear 2x upsampling,
    depthwise 3x3, pointwise 1x1, LeakyReLU) and a 1x1 convolution to RGB (``bilinear``); or once,
    and a 1x1 convolution to the 12 values of each 2x2 RGB block, rearranged by depth-to-space
    (``subpixel``, as in ESPCN's sub-pixel convolution: each output pixel is a linear function of
    one half-resolution feature vector). (A stride-2 transposed convolution computes the same
    function; XNNPACK ran it about 1.5x slower here at 1024 px: docs/dependencies.md.)

    The activations' gain sqrt(2) is folded into the weights of the convolution before each
    LeakyReLU (the same function as :func:`pipeline.models.layers.lrelu_gain` after it, with no
    full-size multiply), and the style's 1 / sqrt(C) into the style vector.
    """

    def __init__(self, in_ch: int, hidden: int, w_dim: int, head: str = "bilinear"):
        super().__init__()
        if head not in ("bilinear", "subpixel"):
            raise ValueError(f"head {head!r}: bilinear or subpixel")
        self.style = StyleAffine(w_dim, in_ch)
        self.project = nn.Conv2d(in_ch, hidden, 1)
        self.up = nn.ModuleList(nn.ModuleDict({
            "depthwise": nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            "pointwise": nn.Conv2d(hidden, hidden, 1)}) for _ in range(2 if head == "bilinear"
                                                                          else 1))
        self.subpixel = head == "subpixel"
        self.to_rgb = nn.Conv2d(hidden, 12 if self.subpixel else 3, 1)

    def forward(self, x: torch.Tensor, w: torch.Tensor, in_mask: torch.Tensor | None = None,
                hidden_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The masks (the latency search's, 0 / 1 of shape (1, C, 1, 1)) drop input channels
        (on the style) and hidden channels (after each activation: every later use of a masked
        channel then sees zeros) exactly."""
        s = self.style(w) / math.sqrt(x.shape[1])
        x = _conv_lrelu(self.project, x * (s if in_mask is None else s * in_mask))
        x = x if hidden_mask is None else x * hidden_mask
        for stage in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = _conv_lrelu(stage["pointwise"], stage["depthwise"](x))
            x = x if hidden_mask is None else x * hidden_mask
        x = self.to_rgb(x)
        return F.pixel_shuffle(x, 2) if self.subpixel else x


def _conv_lrelu(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``lrelu_gain(conv(x))`` with the gain folded into the (1x1) convolution's weights."""
    return F.leaky_relu(F.conv2d(x, conv.weight * SQRT2, conv.bias * SQRT2), 0.2)


class SynthesisMasks(NamedTuple):
    """The latency search's channel masks (0 / 1, each (1, C, 1, 1)): one per level, on the
    level's channels (its convolutions' outputs alike; the first level's also on the
    constant), and one on the last head's hidden channels (or None); and its block-length
    gates (or None): per level, 0 / 1 (a 0-d tensor) for whether its second convolution runs
    (0: the level's features are its first convolution's, exactly)."""

    levels: Sequence[torch.Tensor]
    head: torch.Tensor | None
    second: Sequence[torch.Tensor] | None = None


def run_blocks(const: torch.Tensor, blocks: nn.ModuleList, styles: Sequence[torch.Tensor],
               masks: SynthesisMasks | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The student's block loop, shared by training (:class:`BlazeSynthesis`) and inference
    (``pipeline.models.inference``): yields (level index, features (N, C, r/4, r/4)) per level.

    ``styles[k]`` (N, w_dim, 1, 1) drives style input k; block i uses inputs 2i and 2i + 1 (a
    block of one convolution, 2i only). With ``masks``, each convolution drops the masked
    channels of its input (its consumer's style), and a block-length gate of 0 skips the
    level's second convolution (``x + g (conv2(x) - x)``: x itself at 0, straight-through).
    """
    x = const.expand(styles[0].shape[0], -1, -1, -1)
    for i, convs in enumerate(blocks):
        if i > 0:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if masks is None:
            for k, conv in enumerate(convs):
                x = conv(x, styles[2 * i + k])
        else:
            x = convs[0](x, styles[2 * i], masks.levels[max(i - 1, 0)])
            if len(convs) == 2:
                y = convs[1](x, styles[2 * i + 1], masks.levels[i])
                x = y if masks.second is None else x + masks.second[i] * (y - x)
        yield i, x


class BlazeSynthesis(nn.Module):
    """ws (N, num_ws, w_dim) -> (final image (N, 3, R, R), pyramid [8x8, ..., R x R])."""

    def __init__(self, config: BlazeStyleGANConfig):
        super().__init__()
        self.config = config
        c0 = config.channels[0]
        self.const = nn.Parameter(torch.randn(1, c0, 2, 2))
        self.blocks, self.heads = nn.ModuleList(), nn.ModuleList()
        in_ch = c0
        for level, (out_ch, hidden, convs) in enumerate(zip(config.channels, config.head_channels,
                                                            config.level_convs)):
            res = config.levels[level] // 4
            self.blocks.append(level_block(in_ch, out_ch, config.w_dim, res, config.noise,
                                           convs))
            self.heads.append(UpToRGB(out_ch, hidden, config.w_dim, config.head))
            in_ch = out_ch

    def features(self, ws: torch.Tensor, level: int | None = None,
                 masks: SynthesisMasks | None = None):
        """Yield (level, features, head w) for every level (up to ``level``)."""
        styles = ws[:, :, :, None, None].unbind(1)  # num_ws x (N, w_dim, 1, 1): w as 1x1 "images"
        for i, x in run_blocks(self.const, self.blocks, styles, masks):
            yield i, x, styles[2 * i + 2]
            if level is not None and i == level:
                return

    def _head(self, i: int, x: torch.Tensor, w: torch.Tensor,
              masks: SynthesisMasks | None) -> torch.Tensor:
        if masks is None:
            return self.heads[i](x, w)
        last = i == len(self.heads) - 1
        return self.heads[i](x, w, masks.levels[i], masks.head if last else None)

    def forward(self, ws: torch.Tensor, masks: SynthesisMasks | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The final image and the pyramid; with ``masks``, of the network they leave."""
        pyramid = [self._head(i, x, w, masks) for i, x, w in self.features(ws, masks=masks)]
        return pyramid[-1], pyramid

    def final_image(self, ws: torch.Tensor, masks: SynthesisMasks | None = None) -> torch.Tensor:
        """The inference graph: every block, and the last head only."""
        *_, (i, x, w) = self.features(ws, masks=masks)
        return self._head(i, x, w, masks)


class BlazeStyleGAN(nn.Module):
    """The student: ``mapping`` (z -> w) and ``synthesis`` (ws -> image and pyramid)."""

    def __init__(self, config: BlazeStyleGANConfig):
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config.mapping_config())
        self.synthesis = BlazeSynthesis(config)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        w = self.mapping(z, psi=psi)
        return self.synthesis(broadcast_ws(w, self.num_ws))


STUDENT_KIND = "blazestylegan-student"  # snapshot kind of a distilled student (every head)


def load_student(path: str | Path, device: str | torch.device = "cpu") -> BlazeStyleGAN:
    """The distilled student's EMA generator with every head, rebuilt from its snapshot alone."""
    return rebuild_from_snapshot(path, STUDENT_KIND,
                                 lambda c: BlazeStyleGAN(BlazeStyleGANConfig.model_validate(c)),
                                 device)
