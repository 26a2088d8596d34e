"""The face stylizer's models: its feature networks, and the image-to-image graph that ships.

* :func:`feature_network`: what the stylization losses compare: the frozen distillation
  discriminator's activations (weight-free in the sense that matters offline: trained by this
  pipeline, as JoJoGAN uses its GAN's discriminator) or VGG19's (ImageNet weights, chosen
  explicitly).
* :class:`Stylizer`: one graph, image in [0, 1] -> encoder (W+ = w_avg + offsets) -> the
  fine-tuned student's blocks and last head -> clamp((x + 1) / 2, 0, 1). NCHW in PyTorch and
  ONNX; onnx2tf makes both ends NHWC, (1, R, R, 3), with no transpose left in the graph: the
  layout MediaPipe's FaceStylizer feeds and reads (its first output, as an image in [0, 1]).
  Static shapes, 4-D tensors only, builtin ops.
* a stylized generator is a student snapshot (:data:`STYLIZED_KIND`), with the style, the base
  student and the encoder it was fine-tuned with in its meta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig, run_blocks
from pipeline.models.encoder import Encoder
from pipeline.models.stylegan2 import load_discriminator
from pipeline.perceptual import VGG19Features, resolve_vgg19_weights
from pipeline.snapshot import load_snapshot, rebuild_from_snapshot

FeatureNetworkName = Literal["discriminator", "vgg19-imagenet"]
STYLIZED_KIND = "blazestylegan-stylized"  # a student fine-tuned to one style (every head)


class DiscriminatorFeatures(nn.Module):
    """The frozen discriminator's activations (``Discriminator.features``), finest first."""

    name = "discriminator"

    def __init__(self, discriminator: nn.Module):
        super().__init__()
        self.discriminator = discriminator.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.discriminator.features(images)


def feature_network(name: FeatureNetworkName, discriminator_path: str | Path,
                    vgg19_weights: str | Path | None = None,
                    allow_download: bool = False) -> nn.Module:
    """The feature network ``name`` for the content and style losses: images in [-1, 1] ->
    a list of activations, finest first; frozen."""
    if name == "discriminator":
        return DiscriminatorFeatures(load_discriminator(discriminator_path))
    if name == "vgg19-imagenet":
        return VGG19Features(resolve_vgg19_weights(vgg19_weights, allow_download))
    raise PipelineError(f"unknown feature network {name!r}; choose 'discriminator' or "
                        "'vgg19-imagenet'")


class Stylizer(nn.Module):
    """image (N, 3, R, R) in [0, 1] -> stylized image (N, 3, R, R) in [0, 1].

    Built from the encoder and a (stylized) student; holds the encoder, the student's constant,
    blocks and last head only (the auxiliary heads and the mapping network are not part of it).
    """

    def __init__(self, encoder: Encoder, student: BlazeStyleGAN):
        super().__init__()
        ours = (encoder.config.resolution, encoder.config.num_ws, encoder.config.w_dim)
        theirs = (student.config.resolution, student.num_ws, student.config.w_dim)
        if ours != theirs:
            raise PipelineError(f"the encoder takes {ours[0]} px images and gives {ours[1]} ws "
                                f"of {ours[2]}; the generator makes {theirs[0]} px from "
                                f"{theirs[1]} ws of {theirs[2]}")
        self.config = student.config
        self.encoder = encoder
        self.const = student.synthesis.const
        self.blocks = student.synthesis.blocks
        self.head = student.synthesis.heads[-1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        ws = self.encoder(image * 2 - 1)                         # (N, num_ws, w_dim)
        # One (N, w_dim, 1, 1) style per input, by slicing: no 5-D tensor reaches the converter.
        styles = [ws[:, k].reshape(-1, ws.shape[2], 1, 1) for k in range(ws.shape[1])]
        *_, (i, features) = run_blocks(self.const, self.blocks, styles)
        rgb = self.head(features, styles[2 * i + 2])             # (N, 3, R, R) in about [-1, 1]
        return ((rgb + 1) / 2).clamp(0, 1)


def stylized_record(path: str | Path) -> dict[str, Any]:
    """What a stylizer records about a snapshot it was built from: file name and sha256."""
    return {"file": Path(path).name, "sha256": sha256_file(path)}


def load_stylized(path: str | Path, device: str | torch.device = "cpu") -> BlazeStyleGAN:
    """A student fine-tuned to a style, rebuilt from its snapshot alone (every head)."""
    return rebuild_from_snapshot(path, STYLIZED_KIND,
                                 lambda c: BlazeStyleGAN(BlazeStyleGANConfig.model_validate(c)),
                                 device)


def stylized_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of a stylized-generator snapshot (style, base student, encoder...)."""
    return load_snapshot(path, STYLIZED_KIND)["meta"]


def stylized_mismatch(meta: dict[str, Any], stylized_path: str | Path,
                      encoder_path: str | Path, student_path: str | Path) -> str | None:
    """Why the stylized generator at ``stylized_path`` (its snapshot ``meta``) cannot go with
    this encoder and base student, in one line: it was fine-tuned with others; None when it
    can. Each caller raises it as its own error."""
    for key, path in (("encoder", encoder_path), ("student", student_path)):
        if meta[key]["sha256"] != sha256_file(path):
            return (f"{stylized_path} was fine-tuned with the {key} {meta[key]['file']}, not "
                    f"with {path}: re-run stylize")
    return None
