"""Model complexity: parameter counts and FLOPs of one forward pass, and the rows of the
``complexity`` command (the model presets and the models of this pipeline).

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

from pipeline.models.blazestylegan import PRESETS as BLAZE_PRESETS
from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.stylegan2 import PRESETS, Generator, StyleGAN2Config


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (2 x MACs) of calling ``fn()`` once."""
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        fn()
    return counter.get_total_flops()


def stylegan2_row(name: str, config: StyleGAN2Config) -> dict:
    """Params and GFLOPs of a StyleGAN2 generator at batch 1, in its exportable form.

    The mapping network is included (the teacher runs it at inference). The fused and the
    activation-modulation forms have the same convolution FLOPs up to the small demodulation
    matmul; the activation form is the one that is exported.
    """
    G = Generator(config).set_fused(False).eval()
    z = torch.zeros(1, config.z_dim)
    flops = count_flops(lambda: G(z, noise_mode="const"))
    return {"model": name, "resolution": config.resolution,
            "params_M": count_parameters(G) / 1e6, "gflops": flops / 1e9,
            "mapping_params_M": count_parameters(G.mapping) / 1e6}


def blaze_row(name: str, config: BlazeStyleGANConfig) -> dict:
    """Params and GFLOPs of a BlazeStyleGAN inference graph (all blocks, last head only), at
    batch 1. As in the paper, the synthesis network only: the mapping network (listed apart) is
    the teacher's, shared and frozen (see pipeline/models/blazestylegan.py)."""
    model = BlazeStyleGAN(config).eval()
    synthesis = model.synthesis
    ws = torch.zeros(1, config.num_ws, config.w_dim)
    flops = count_flops(lambda: synthesis.final_image(ws))
    aux_heads = sum(count_parameters(head) for head in synthesis.heads[:-1])
    return {"model": name, "resolution": config.resolution,
            "params_M": (count_parameters(synthesis) - aux_heads) / 1e6, "gflops": flops / 1e9,
            "mapping_params_M": count_parameters(model.mapping) / 1e6}


def preset_rows() -> list[dict]:
    """The StyleGAN2 and BlazeStyleGAN presets; the paper-sized students also with the subpixel
    head (``head: subpixel``, same widths)."""
    subpixel = [blaze_row(f"{name} subpixel", BlazeStyleGANConfig.model_validate(
                    {**config.to_dict(), "head": "subpixel"}))
                for name, config in BLAZE_PRESETS.items() if config.resolution >= 256]
    return ([stylegan2_row(f"stylegan2 {name}", config) for name, config in PRESETS.items()]
            + [blaze_row(name, config) for name, config in BLAZE_PRESETS.items()] + subpixel)


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':<28} {'res':>5} {'params (M)':>11} {'mapping (M)':>12} {'GFLOPs':>9}"]
    for r in rows:
        lines.append(f"{r['model']:<28} {r['resolution']:>5} {r['params_M']:>11.2f} "
                     f"{r['mapping_params_M']:>12.2f} {r['gflops']:>9.3f}")
    return "\n".join(lines)
