"""The latency search's supernet: a BlazeStyleGAN student widened, with binary channel masks per
group of 8 channels trained by a straight-through estimator, and the extraction of the student
the masks leave.

* **Masks**: one vector of group scores per level (the level's channels: its convolutions'
  outputs, and for the first level the constant's) and one for the last head's hidden channels.
  Forward, a group is kept (1) when its score is above 0.5, and the best-scored group of each
  vector always (a floor of 8 channels; of the head, ``head_floor`` channels: its best-scored
  groups); backward, the gradient passes to the scores unchanged
  (straight-through). Scores start uniform in [0.5, 1] (everything kept, seeded) and are clamped
  to [0, 1] after each step, so a dropped group can come back.
* **Block-length gates** (``depth``): one score per level for its second convolution, kept
  (1) above 0.5, straight-through alike, no floor: a level may end with one convolution (its
  features then are its first's, exactly: :func:`pipeline.models.blazestylegan.run_blocks`).
  The second convolution maps the level's width to itself, so the skip is an identity.
* **Where a mask acts**: on the *consumer's* style vector (the next convolution's, the heads'),
  so a masked channel leaves the data path and the demodulation alike; on the head's hidden
  channels after each activation (:class:`pipeline.models.blazestylegan.SynthesisMasks`). The
  extracted student, without the masked channels (and with the fan-in scales of the narrower
  layers folded into the kept weights), computes the same images as the masked supernet: equal
  up to float32 rounding, not bit for bit, since convolutions of other widths accumulate in
  another order (tested to 1e-5).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.models.blazestylegan import (
    BlazeStyleGAN,
    BlazeStyleGANConfig,
    ModulatedSeparableConv,
    SynthesisMasks,
    UpToRGB,
)

GROUP = 8  # channels per mask group: XNNPACK's float32 tile on ARM NEON, half of AVX2's


def supernet_config(student: BlazeStyleGANConfig, widen: float) -> BlazeStyleGANConfig:
    """``student`` with every level and its last head ``widen`` times as wide (rounded up to a
    multiple of 8); the auxiliary heads, which only train, keep their widths."""
    def wider(c: int) -> int:
        return GROUP * math.ceil(c * widen / GROUP)

    return BlazeStyleGANConfig.model_validate({
        **student.to_dict(), "channels": [wider(c) for c in student.channels],
        "head_channels": [*student.head_channels[:-1], wider(student.head_channels[-1])]})


class ChannelMasks(nn.Module):
    """Group scores per level and for the last head's hidden channels; see the module doc."""

    def __init__(self, config: BlazeStyleGANConfig, seed: int = 0, head_floor: int = GROUP,
                 depth: bool = False):
        super().__init__()
        if depth and config.convs is not None and min(config.convs) < 2:
            raise ValueError(f"a length search's supernet has two convolutions per level, got "
                             f"convs {config.convs}")
        for c in (*config.channels, config.head_channels[-1]):
            if c % GROUP:
                raise ValueError(f"supernet widths must be multiples of {GROUP}, got {c}")
        if head_floor % GROUP or not GROUP <= head_floor <= config.head_channels[-1]:
            raise ValueError(f"the head's floor {head_floor}: a multiple of {GROUP} from {GROUP} "
                             f"to the supernet head's {config.head_channels[-1]} channels")
        # Uniform in [0.5, 1] (as the public anchor): every group is kept at first, and groups
        # under the same pressure do not all cross 0.5 at the same step.
        generator = torch.Generator().manual_seed(seed)

        def scores(width: int) -> nn.Parameter:
            return nn.Parameter(0.5 + 0.5 * torch.rand(width // GROUP, generator=generator))

        self.levels = nn.ParameterList(scores(c) for c in config.channels)
        self.head = scores(config.head_channels[-1])
        # groups kept whatever their scores, per vector: the best one, the head's best few
        self.floors = (*(1 for _ in config.channels), head_floor // GROUP)
        # one score per level: whether its second convolution stays (None: no length search)
        self.second = (nn.Parameter(0.5 + 0.5 * torch.rand(len(config.channels),
                                                           generator=generator))
                       if depth else None)

    def vectors(self) -> list[nn.Parameter]:
        """The score vectors: one per level, then the last head's."""
        return [*self.levels, self.head]

    @staticmethod
    def binary(scores: torch.Tensor, floor: int = 1) -> torch.Tensor:
        """0 / 1 per group (above 0.5, and the ``floor`` best always; ties: the first),
        straight-through."""
        best = torch.argsort(scores.detach(), descending=True, stable=True)[:floor]
        keep = (scores > 0.5) | torch.isin(torch.arange(len(scores), device=scores.device), best)
        return keep.to(scores.dtype) + (scores - scores.detach())  # exactly 0 or 1 forward

    def groups(self) -> list[torch.Tensor]:
        """The kept groups per vector (levels, then the head), differentiable."""
        return [self.binary(v, floor) for v, floor in zip(self.vectors(), self.floors)]

    def widths(self) -> list[torch.Tensor]:
        """Kept channels per level and of the head (multiples of 8, differentiable)."""
        return [GROUP * g.sum() for g in self.groups()]

    def gates(self) -> torch.Tensor | None:
        """Per level, 1 where its second convolution stays, else 0 (straight-through); None
        without a length search."""
        return None if self.second is None else self.binary(self.second, floor=0)

    def convs(self) -> list[int] | None:
        """Convolutions per level the gates leave (None without a length search)."""
        gates = self.gates()
        return None if gates is None else [1 + int(g > 0.5) for g in gates.detach()]

    def synthesis_masks(self) -> SynthesisMasks:
        expanded = [g.repeat_interleave(GROUP)[None, :, None, None] for g in self.groups()]
        gates = self.gates()
        return SynthesisMasks(levels=expanded[:-1], head=expanded[-1],
                              second=None if gates is None else list(gates.unbind()))

    @torch.no_grad()
    def clamp_(self) -> None:
        for v in self.parameters():
            v.clamp_(0.0, 1.0)

    @torch.no_grad()
    def kept(self) -> list[torch.Tensor]:
        """Indices of the kept channels per level and of the head."""
        return [torch.nonzero(g.detach().repeat_interleave(GROUP) > 0.5).flatten()
                for g in self.groups()]


class MaskedSynthesis(nn.Module):
    """A supernet's synthesis network under its masks: ws -> (image, pyramid)."""

    def __init__(self, synthesis: nn.Module, masks: ChannelMasks):
        super().__init__()
        self.base, self.masks = synthesis, masks
        self.config = synthesis.config

    def forward(self, ws: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.base(ws, self.masks.synthesis_masks())

    def final_image(self, ws: torch.Tensor) -> torch.Tensor:
        return self.base.final_image(ws, self.masks.synthesis_masks())


class MaskedStudent(nn.Module):
    """A widened student and its masks, used like a :class:`BlazeStyleGAN` in training
    (``synthesis``, ``mapping``, ``config``, ``num_ws``)."""

    def __init__(self, student: BlazeStyleGAN, masks: ChannelMasks | None = None):
        super().__init__()
        self.student = student
        self.masks = masks if masks is not None else ChannelMasks(student.config)
        self.synthesis = MaskedSynthesis(student.synthesis, self.masks)
        self.mapping, self.config = student.mapping, student.config

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def searched_config(self) -> BlazeStyleGANConfig:
        *levels, head = (len(k) for k in self.masks.kept())
        convs = self.masks.convs()
        if convs is None:  # no length search: the supernet's lengths
            convs = self.config.convs
        return BlazeStyleGANConfig.model_validate({
            **self.config.to_dict(), "channels": levels,
            "head_channels": [*self.config.head_channels[:-1], head],
            # every level at two convolutions is the plain config (no convs key to override)
            "convs": convs if convs is not None and min(convs) < 2 else None})


@torch.no_grad()
def extract(masked: MaskedStudent) -> BlazeStyleGAN:
    """The student the masks leave: the kept channels' weights, each layer's fan-in scale
    folded in (see the module doc)."""
    *kept, hidden = masked.masks.kept()
    synthesis = masked.student.synthesis
    student = BlazeStyleGAN(masked.searched_config())
    student.mapping.load_state_dict(masked.student.mapping.state_dict())
    out = student.synthesis
    out.const.copy_(synthesis.const[:, kept[0]])
    for i, (convs, new) in enumerate(zip(synthesis.blocks, out.blocks)):
        _copy_conv(convs[0], new[0], kept[max(i - 1, 0)], kept[i])
        if len(new) == 2:  # not where the length search dropped the second
            _copy_conv(convs[1], new[1], kept[i], kept[i])
    last = len(synthesis.heads) - 1
    for i, (head, new) in enumerate(zip(synthesis.heads, out.heads)):
        _copy_head(head, new, kept[i], hidden if i == last else None)
    return student.eval()


def _copy_conv(conv: ModulatedSeparableConv, new: ModulatedSeparableConv, kept_in: torch.Tensor,
               kept_out: torch.Tensor) -> None:
    new.style.weight.copy_(conv.style.weight[kept_in])
    new.style.bias.copy_(conv.style.bias[kept_in])
    new.depthwise.copy_(conv.depthwise[kept_in])
    # pw = pointwise / sqrt(fan-in): the narrower layer's smaller fan-in is folded back in
    fan_in = math.sqrt(len(kept_in) / conv.pointwise.shape[1])
    new.pointwise.copy_(conv.pointwise[kept_out][:, kept_in] * fan_in)
    new.bias.copy_(conv.bias[:, kept_out])
    if conv.noise_strength is not None:
        new.noise_strength.copy_(conv.noise_strength)
        new.noise_const.copy_(conv.noise_const)


def _copy_head(head: UpToRGB, new: UpToRGB, kept_in: torch.Tensor,
               hidden: torch.Tensor | None) -> None:
    hidden = torch.arange(head.project.out_channels) if hidden is None else hidden
    # the style is divided by sqrt(input width): the narrower input's is folded into it
    fan_in = math.sqrt(len(kept_in) / head.project.in_channels)
    new.style.weight.copy_(head.style.weight[kept_in] * fan_in)
    new.style.bias.copy_(head.style.bias[kept_in] * fan_in)
    new.project.weight.copy_(head.project.weight[hidden][:, kept_in])
    new.project.bias.copy_(head.project.bias[hidden])
    for stage, new_stage in zip(head.up, new.up):
        new_stage["depthwise"].weight.copy_(stage["depthwise"].weight[hidden])
        new_stage["pointwise"].weight.copy_(stage["pointwise"].weight[hidden][:, hidden])
        new_stage["pointwise"].bias.copy_(stage["pointwise"].bias[hidden])
    new.to_rgb.weight.copy_(head.to_rgb.weight[:, hidden])
    new.to_rgb.bias.copy_(head.to_rgb.bias)


def share_masks(ema: MaskedStudent, live: MaskedStudent) -> MaskedStudent:
    """Make ``ema`` (a deep copy of ``live``) use ``live``'s masks: the EMA of the weights runs
    under the masks being searched, not an average of them."""
    ema.masks = live.masks
    ema.synthesis.masks = live.masks
    return ema

