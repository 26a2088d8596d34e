"""Perceptual distances for distillation: VGG19 features (as in the paper) or a weight-free one.

The paper's multi-scale perceptual loss compares VGG19 features of each pyramid level of the
student with the teacher image resized to that level. VGG19 needs ImageNet weights, which are
resolved, never silently replaced:

1. an explicit local file in torchvision's format (trusted as given: it may be the user's own);
2. torchvision's file in the torch hub cache (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``),
   checked against the sha256 prefix torchvision puts in the file name;
3. a download into that cache, with the same check, only when downloads are allowed.

Offline with no weights, choose the ``multiscale-l1-ssim`` backbone instead: L1 plus (1 - SSIM)
over an image pyramid, no pretrained weights. Which one ran is recorded by the training metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import PipelineError
from pipeline.pretrained import WeightsUnavailable, resolve_torchvision_weights
from pipeline.similarity import ssim

log = logging.getLogger(__name__)

VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # sha256 prefix dcbb9e9d
VGG19_FILE = VGG19_URL.rsplit("/", 1)[1]
VGG19_LAYERS = (3, 8, 17, 26, 35)  # relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 in .features
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("vgg19-imagenet", "multiscale-l1-ssim")


def resolve_vgg19_weights(path: str | Path | None, allow_download: bool) -> Path:
    """The VGG19 ImageNet weights file: ``path``, else the hub cache, else a checked download."""
    return resolve_torchvision_weights(path, VGG19_URL, "VGG19", allow_download,
                                       "offline, use the 'multiscale-l1-ssim' perceptual "
                                       "backbone instead")


def _to_imagenet(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2 - mean) / std  # [-1, 1] -> ImageNet-normalized


class VGG19Features(nn.Module):
    """VGG19 activations relu1_2 ... relu5_4 of images in [-1, 1], (N, 3, H, W): a list, finest
    first. Sides below 32 pixels are upsampled to 32 first (four poolings precede relu5_4)."""

    name = "vgg19-imagenet"

    def __init__(self, weights: str | Path):
        super().__init__()
        import torchvision  # only this backbone needs it

        features = torchvision.models.vgg19(weights=None).features[: max(VGG19_LAYERS) + 1]
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            own = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")
                   and int(k.split(".")[1]) <= max(VGG19_LAYERS)}
            features.load_state_dict(own)
        except Exception as e:  # noqa: BLE001 - unreadable file, foreign format, wrong shapes
            raise WeightsUnavailable(f"{weights}: not VGG19 weights in torchvision's format "
                                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if min(x.shape[-2:]) < 32:
            x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        h, activations = _to_imagenet(x, self.mean, self.std), []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in VGG19_LAYERS:
                activations.append(h)
        return activations


class VGG19Distance(nn.Module):
    """Mean L1 distance between VGG19 activations (relu1_2 ... relu5_4, :class:`VGG19Features`)
    of two image batches in [-1, 1]."""

    name = "vgg19-imagenet"

    def __init__(self, weights: str | Path):
        super().__init__()
        self.vgg = VGG19Features(weights)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        activations = self.vgg(torch.cat([x, y]))  # one pass for both batches
        return sum((h[:n] - h[n:]).abs().mean() for h in activations) / len(activations)


class MultiScaleL1SSIM(nn.Module):
    """Weight-free perceptual distance: L1 + (1 - SSIM) averaged over an image pyramid (the image
    and its 2x, 4x ... average-pooled versions down to 8 pixels)."""

    name = "multiscale-l1-ssim"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total, scales = x.new_zeros(()), 0
        while True:
            total = total + (x - y).abs().mean() + (1 - ssim(x, y))
            scales += 1
            if min(x.shape[-2:]) < 16:
                return total / scales
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)


def perceptual_distance(backbone: str, vgg19_weights: str | Path | None = None,
                        allow_download: bool = False) -> nn.Module:
    """The perceptual distance named ``backbone`` (one of :data:`BACKBONES`)."""
    if backbone == "vgg19-imagenet":
        return VGG19Distance(resolve_vgg19_weights(vgg19_weights, allow_download))
    if backbone == "multiscale-l1-ssim":
        return MultiScaleL1SSIM()
    raise PipelineError(f"unknown perceptual backbone {backbone!r}; choose one of {BACKBONES}")
