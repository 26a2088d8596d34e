"""The student's inference graph cut into its units, each a model of its own that can be exported
and timed alone: where the milliseconds go (``scripts/profile_student.py``), and the speed-model
dataset of the latency search measures the same units.

A unit takes the latent w (1, w_dim) as its one input, like the whole inference graph, and holds
its feature input as a constant of the shape the unit before it outputs: the student's own
modules then run exactly as in :class:`pipeline.models.inference.InferenceGenerator`, and the
units of a graph add up to it (their FLOPs exactly; their latencies up to the per-invoke
overhead each of them pays once, measured by the ``overhead`` unit).

* ``overhead``: the cost of one invoke of a model that does (almost) nothing;
* ``block r``: the level of output resolution r: 2x bilinear upsampling (not at 8 px) and the
  block's modulated separable convolutions (two, or one), at r / 4;
* ``head``: the last UpToRGB head, the block's features at R / 4 to the image;
* ``mapping``: the mapping network (z to w), apart: the inference graph takes w.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.blazestylegan import BlazeStyleGAN, ModulatedSeparableConv, UpToRGB


@dataclass(frozen=True)
class Unit:
    """One unit: its name, kind (overhead, block, head, mapping) and model (one input)."""

    name: str
    kind: str
    model: nn.Module
    input_dim: int  # the input's size: (batch, input_dim)


class Overhead(nn.Module):
    """w -> 2 w: one trivial op, for the per-invoke cost."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * 2.0


class BlockUnit(nn.Module):
    """One level's block of the student: a constant feature map (the previous level's output, or
    the student's learned constant for the first level) and w -> the block's features."""

    def __init__(self, features: torch.Tensor, convs: nn.ModuleList, upsample: bool):
        super().__init__()
        self.register_buffer("features", features)
        self.convs, self.upsample = convs, upsample

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w4 = w[:, :, None, None]
        x = self.features.expand(w.shape[0], -1, -1, -1)
        if self.upsample:
            # A constant feature map would have its upsampling folded away by the converters;
            # times one, computed from w, it stays in the graph (one multiply at the input's
            # size, a quarter of the block's, which the unit's time includes).
            x = F.interpolate(x * (w4[:, :1] * 0.0 + 1.0), scale_factor=2.0, mode="bilinear",
                              align_corners=False)
        for conv in self.convs:
            x = conv(x, w4)
        return x


class HeadUnit(nn.Module):
    """The last UpToRGB head: a constant feature map (the last block's output) and w -> image."""

    def __init__(self, features: torch.Tensor, head: UpToRGB):
        super().__init__()
        self.register_buffer("features", features)
        self.head = head

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.head(self.features.expand(w.shape[0], -1, -1, -1), w[:, :, None, None])


def student_units(student: BlazeStyleGAN, seed: int = 0) -> list[Unit]:
    """The units of ``student``'s inference graph, sharing its modules (and weights); the
    constant feature inputs are standard normal (seeded), the shapes the graph gives them."""
    config, synthesis = student.config, student.synthesis
    generator = torch.Generator().manual_seed(seed)
    units = [Unit("overhead", "overhead", Overhead(), config.w_dim)]
    for i, (convs, resolution) in enumerate(zip(synthesis.blocks, config.levels)):
        if i == 0:
            features = synthesis.const.detach().clone()
        else:
            size = resolution // 8
            features = torch.randn(1, config.channels[i - 1], size, size, generator=generator)
        units.append(Unit(f"block {resolution}", "block",
                          BlockUnit(features, convs, upsample=i > 0), config.w_dim))
    size = config.resolution // 4
    features = torch.randn(1, config.channels[-1], size, size, generator=generator)
    units.append(Unit("head", "head", HeadUnit(features, synthesis.heads[-1]), config.w_dim))
    units.append(Unit("mapping", "mapping", student.mapping, config.z_dim))
    return [Unit(u.name, u.kind, u.model.eval(), u.input_dim) for u in units]


def randomize_like_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a freshly built student (or any model of its modules) what a trained one has and an
    initialised one lacks: non-zero biases and noise strengths. Converters fold zeros away (an
    initialised student's bias adds vanish from its TFLite graph, a trained one's do not), so
    latency measured on an untouched random model undercounts the element-wise work."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulatedSeparableConv):
                module.bias.normal_(0, 0.1, generator=generator)
                if module.noise_strength is not None:
                    module.noise_strength.fill_(0.1)
            elif isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_(0, 0.1, generator=generator)
    return model
