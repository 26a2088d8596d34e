"""Stripping the student down to its inference graph (the ``strip_heads`` stage's library).

Training needs every auxiliary UpToRGB head; inference needs the blocks and the last head only.
:class:`InferenceGenerator` holds exactly those modules (the student's own classes, so it runs the
same operations in the same order and its output is bit-equal to the student's final image), takes
z or w as input, and returns NCHW or NHWC images (NHWC spares mobile runtimes a transpose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.training.checkpoint import rebuild_from_snapshot

InputKind = Literal["z", "w"]
Layout = Literal["nchw", "nhwc"]


class InferenceGenerator(nn.Module):
    """Student blocks + last UpToRGB head (+ the mapping network when the input is z).

    Args:
        config: the student's config.
        input:  ``"z"`` (N, z_dim) or ``"w"`` (N, w_dim, one w for every layer).
        layout: ``"nchw"`` (N, 3, R, R) or ``"nhwc"`` (N, R, R, 3) output, values in [-1, 1].
    """

    def __init__(self, config: BlazeStyleGANConfig, input: InputKind, layout: Layout):
        super().__init__()
        self.config, self.input, self.layout = config, input, layout
        student = BlazeStyleGAN(config)
        self.mapping = student.mapping if input == "z" else None
        self.const = student.synthesis.const
        self.blocks = student.synthesis.blocks
        self.head = student.synthesis.heads[-1]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        w = self.mapping(latent) if self.mapping is not None else latent
        w4 = w[:, :, None, None]  # (N, w_dim, 1, 1): the style convs' input
        x = self.const.expand(w.shape[0], -1, -1, -1)
        for i, (conv1, conv2) in enumerate(self.blocks):
            if i > 0:
                x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear",
                                                    align_corners=False)
            x = conv2(conv1(x, w4), w4)
        image = self.head(x, w4)
        return image.permute(0, 2, 3, 1) if self.layout == "nhwc" else image


def strip_aux_heads(student: BlazeStyleGAN, input: InputKind, layout: Layout) -> InferenceGenerator:
    """The inference generator of ``student``, with its weights (auxiliary heads dropped)."""
    model = InferenceGenerator(student.config, input, layout)
    last = f"synthesis.heads.{len(student.synthesis.heads) - 1}."
    renamed = {}
    for key, value in student.state_dict().items():
        if key.startswith(last):
            renamed["head." + key[len(last):]] = value
        elif key.startswith("synthesis.") and not key.startswith("synthesis.heads."):
            renamed[key[len("synthesis."):]] = value
        elif key.startswith("mapping.") and input == "z":
            renamed[key] = value
    model.load_state_dict(renamed)
    return model.eval()


def ws_of(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """One w per sample, broadcast to every layer: (N, w_dim) -> (N, num_ws, w_dim)."""
    return w[:, None].expand(-1, num_ws, -1)


INFERENCE_KIND = "blazestylegan-inference"  # snapshot kind of a stripped inference generator


def load_inference_generator(path: str | Path,
                             device: str | torch.device = "cpu") -> InferenceGenerator:
    """The stripped generator; its snapshot config holds the student's plus input and layout."""
    def build(c: dict) -> InferenceGenerator:
        return InferenceGenerator(BlazeStyleGANConfig.model_validate(c["student"]), c["input"],
                                  c["layout"])

    return rebuild_from_snapshot(path, INFERENCE_KIND, build, device)
