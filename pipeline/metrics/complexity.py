"""Model complexity: parameter counts and FLOPs of one forward pass.

FLOPs are counted as 2 x multiply-accumulates (the convention of BlazeStyleGAN's Table 1) by
``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions (including transposed and
grouped ones), linear layers and matrix products. Element-wise work (activations, noise, bias) is
not counted, as in the papers. The counter needs autograd enabled in torch 2.13+ (it asserts under
``no_grad``), so it runs with grad enabled on inputs that do not require grad.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 x MACs) of calling ``fn()`` once."""
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        fn()
    return counter.get_total_flops()
