"""A student's inference graph at the latency search's geometry: the student's levels with every
feature size scaled (``search_architecture.latency_resolution``), so that the latency the search
budgets can be measured on the runtime. At scale 1 it is the student's own inference graph (w
in, NHWC image out), tested equal to it.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.blazestylegan import BlazeStyleGANConfig, UpToRGB, level_block, run_blocks
from pipeline.models.units import randomize_like_trained


class ScaledGraph(nn.Module):
    """w (N, w_dim) -> image (N, R', R', 3): the learned constant at ``sizes[0]``, one level
    block per size (2x bilinear upsampling between them) and the last head, all driven by w."""

    def __init__(self, config: BlazeStyleGANConfig, sizes: list[int]):
        super().__init__()
        if len(sizes) != len(config.levels) or any(b != 2 * a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes {sizes}: one per level of the student, doubling")
        self.const = nn.Parameter(torch.randn(1, config.channels[0], sizes[0], sizes[0]))
        widths = [config.channels[0], *config.channels]
        self.blocks = nn.ModuleList(
            level_block(cin, cout, config.w_dim, size, config.noise, convs)
            for cin, cout, size, convs in zip(widths, widths[1:], sizes, config.level_convs))
        self.num_ws = config.num_ws
        self.head = UpToRGB(config.channels[-1], config.head_channels[-1], config.w_dim,
                            config.head)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        w4 = w[:, :, None, None]
        *_, (_, x) = run_blocks(self.const, self.blocks, [w4] * self.num_ws)
        return self.head(x, w4).permute(0, 2, 3, 1)


def latency_sizes(config: BlazeStyleGANConfig, latency_resolution: int) -> list[int]:
    """The blocks' feature sizes of ``config`` scaled to an output of ``latency_resolution``."""
    scale = latency_resolution // config.resolution
    return [r // 4 * scale for r in config.levels]


def scaled_graph(config: BlazeStyleGANConfig, latency_resolution: int,
                 seed: int = 0) -> ScaledGraph:
    """The student of ``config`` at the search's latency geometry, random weights as trained
    (non-zero biases: :func:`pipeline.models.units.randomize_like_trained`)."""
    with torch.random.fork_rng():  # no side effect on the caller's random stream
        torch.manual_seed(seed)
        graph = ScaledGraph(config, latency_sizes(config, latency_resolution))
    return randomize_like_trained(graph, seed).eval()
