"""The GAN-inversion encoder: an aligned face image -> the student's W+ (one w per style input).

Structure (pSp's multi-scale idea on MediaPipe FaceStylizer's MobileNetV2 backbone, kept light):

* backbone: torchvision's MobileNetV2 ``features`` (the maintained implementation), with the width
  multiplier and the number of inverted-residual blocks per stage from the config, and without
  its final 1x1 expansion to 1280 channels (a classifier's, not needed for dense features). Its
  total stride is ``2 ** downsamplings``: the stem and the first ``downsamplings - 1`` stride-2
  stages keep their stride, later ones run at stride 1. At 32 px, the standard stride 32 would
  leave a 1x1 map; the tiny preset uses 3 downsamplings (a 4x4 map at the end) instead of
  upsampling the input, which would cost 16x the FLOPs for no new information;
* taps: the output of the last block at each of the ``len(groups)`` coarsest feature resolutions;
* feature pyramid (``fpn``, pSp's): a 1x1 lateral convolution takes each tap to
  ``head_channels`` and every finer tap adds the bilinearly upsampled coarser one, so the fine
  styles see the deep features too (without it, a fine head sees only the shallow blocks before
  its tap);
* heads (:class:`Map2Style`, pSp's map2style): one per tap, coarse styles from the coarsest map.
  Each reduces its map to 1x1 with stride-2 depthwise-separable convolutions, then one linear layer
  gives its group's ``groups[k]`` w offsets at once;
* output: ``w_avg + offsets`` (N, num_ws, w_dim), W+ around the generator's average w, as pSp and
  e4e do. ``w_avg`` is a buffer copied from the generator the encoder inverts.

Input: images (N, 3, R, R) in [-1, 1], the generator's output range; normalised to ImageNet's mean
and std inside (so optional ImageNet weights see what they were trained on). Static shapes and
builtin TFLite ops only (convolutions, ReLU6, LeakyReLU, add, bilinear resize, reshape): exportable
by construction.

Complexity convention as the paper's: parameters and FLOPs (2 x MACs) of the whole encoder at
batch 1 (``python -m stages.complexity``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import pydantic
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from pipeline.config import PowerOfTwo, StageConfig
from pipeline.errors import DataError, PipelineError
from pipeline.io import sha256_file
from pipeline.models.blazestylegan import BlazeStyleGAN, load_student
from pipeline.models.complexity import count_flops, count_parameters
from pipeline.perceptual import IMAGENET_MEAN, IMAGENET_STD
from pipeline.pretrained import WeightsUnavailable, resolve_torchvision_weights
from pipeline.snapshot import load_snapshot, rebuild_from_snapshot

ENCODER_KIND = "inversion-encoder"  # snapshot kind of a trained encoder

# torchvision's MobileNetV2 stages: expansion t, channels c, blocks n, stride s (width 1.0).
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
MOBILENET_V2_URL = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"


class EncoderConfig(StageConfig):
    """Shape of an inversion encoder. Stored in every snapshot.

    ``resolution``, ``num_ws`` and ``w_dim`` are those of the generator it inverts.
    """

    resolution: Annotated[PowerOfTwo, pydantic.Field(ge=16, le=1024)]  # input size
    num_ws: Annotated[int, pydantic.Field(ge=1)]     # the generator's style inputs
    w_dim: Annotated[int, pydantic.Field(ge=1)]
    width_mult: Annotated[float, pydantic.Field(gt=0, le=4)]  # MobileNetV2's width multiplier
    blocks: list[Annotated[int, pydantic.Field(ge=1)]]  # per stage (torchvision: 1,2,3,4,3,3,1)
    downsamplings: Annotated[int, pydantic.Field(ge=1, le=5)]  # total stride 2^downsamplings
    head_channels: Annotated[int, pydantic.Field(ge=1)]  # width of each map2style head
    groups: list[Annotated[int, pydantic.Field(ge=1)]]  # ws per tap, coarse first; sum = num_ws
    fpn: bool  # pSp's top-down feature pyramid over the taps (heads see head_channels)

    @pydantic.model_validator(mode="after")
    def _check(self):
        if not 1 <= len(self.blocks) <= len(MOBILENET_V2_STAGES):
            raise ValueError(f"blocks needs 1 to {len(MOBILENET_V2_STAGES)} values (blocks per "
                             f"MobileNetV2 stage), got {len(self.blocks)}")
        if sum(self.groups) != self.num_ws:
            raise ValueError(f"groups {self.groups} must sum to num_ws ({self.num_ws})")
        if self.resolution >> self.downsamplings < 1:
            raise ValueError(f"{self.downsamplings} downsamplings leave no pixel of a "
                             f"{self.resolution}px input")
        if self.downsamplings > 1 + self.stride2_stages:
            raise ValueError(f"downsamplings is {self.downsamplings} but the stem and the "
                             f"{self.stride2_stages} stride-2 stages of blocks {self.blocks} "
                             f"allow at most {1 + self.stride2_stages}")
        if len(self.groups) > self.downsamplings:
            raise ValueError(f"groups has {len(self.groups)} feature scales but the backbone has "
                             f"{self.downsamplings} (one per downsampling)")
        return self

    @property
    def stride2_stages(self) -> int:
        return sum(1 for _, _, _, s in MOBILENET_V2_STAGES[:len(self.blocks)] if s == 2)

    def stages(self) -> list[list[int]]:
        """torchvision's ``inverted_residual_setting`` [t, c, n, s] for this config."""
        setting, downsampled = [], 1  # the stem's
        for (t, c, _, s), n in zip(MOBILENET_V2_STAGES, self.blocks):
            if s == 2:
                s = 2 if downsampled < self.downsamplings else 1
                downsampled += s == 2
            setting.append([t, c, n, s])
        return setting


def _preset(resolution, num_ws, w_dim, width, blocks, downsamplings, head, groups, fpn):
    return EncoderConfig(resolution=resolution, num_ws=num_ws, w_dim=w_dim, width_mult=width,
                         blocks=blocks, downsamplings=downsamplings, head_channels=head,
                         groups=groups, fpn=fpn)


# encoder-256 inverts blaze-256 (13 ws of 512): MobileNetV2 at width 1.0 up to its 96-channel
# stage (stride 16, pSp's deepest tap at 256) with ImageNet-compatible weights, the pyramid and
# 112-wide heads: 1.52 M parameters and 0.633 GFLOPs at 256 against the paper's 1.44 M / 0.60
# (+5.3% / +5.5%; `python -m stages.complexity`, checked by the tests). The tiny presets invert
# blaze-tiny-32 / 64.
PRESETS: dict[str, EncoderConfig] = {
    "encoder-tiny-32": _preset(32, 7, 64, 1.0, [1, 2, 3, 4, 3], 3, 256, [2, 2, 3], True),
    "encoder-tiny-64": _preset(64, 9, 64, 1.0, [1, 2, 3, 4, 3], 4, 128, [2, 2, 5], True),
    "encoder-256": _preset(256, 13, 512, 1.0, [1, 2, 3, 4, 3], 4, 112, [4, 4, 5], True),
}


class Map2Style(nn.Module):
    """Features (N, C, S, S) -> ``count`` w offsets (N, count, w_dim).

    log2(S) times (depthwise 3x3 stride 2, pointwise 1x1 to ``hidden``, LeakyReLU 0.2) down to 1x1,
    then one linear layer for all of the group's offsets (pSp's map2style with separable
    convolutions and one shared linear, to stay light).
    """

    def __init__(self, in_ch: int, hidden: int, size: int, count: int, w_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(size))):
            layers += [nn.Conv2d(in_ch, in_ch, 3, stride=2, padding=1, groups=in_ch, bias=False),
                       nn.Conv2d(in_ch, hidden, 1), nn.LeakyReLU(0.2)]
            in_ch = hidden
        if not layers:  # a 1x1 map already
            layers += [nn.Conv2d(in_ch, hidden, 1), nn.LeakyReLU(0.2)]
        self.reduce = nn.Sequential(*layers)
        self.linear = nn.Linear(hidden, count * w_dim)
        self.count, self.w_dim = count, w_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x).flatten(1)                                 # (N, hidden)
        return self.linear(x).view(-1, self.count, self.w_dim)     # (N, count, w_dim)


class Encoder(nn.Module):
    """images (N, 3, R, R) in [-1, 1] -> ws (N, num_ws, w_dim) = w_avg + offsets."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        mobilenet = torchvision.models.mobilenet_v2(width_mult=config.width_mult,
                                                    inverted_residual_setting=config.stages())
        self.backbone = mobilenet.features[:-1]  # without the 1x1 expansion to 1280 channels
        self.taps, channels, sizes = self._taps()
        hidden = config.head_channels
        self.laterals = nn.ModuleList(nn.Conv2d(channels[i], hidden, 1) for i in self.taps
                                      ) if config.fpn else None
        self.heads = nn.ModuleList(
            Map2Style(hidden if config.fpn else channels[i], hidden, sizes[i], count,
                      config.w_dim)
            for i, count in zip(self.taps, config.groups))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _taps(self) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """Backbone indices of the last block at each of the coarsest resolutions (coarsest
        first), with the channels and the map size after every block."""
        size, channels, sizes, last_at = self.config.resolution, {}, {}, {}
        for i, block in enumerate(self.backbone):
            if i == 0:  # the stem, a Conv2dNormActivation
                stride, channels[i] = block[0].stride[0], block[0].out_channels
            else:       # an InvertedResidual
                stride, channels[i] = block.stride, block.out_channels
            size //= stride
            sizes[i], last_at[size] = size, i
        coarsest = sorted(last_at)[:len(self.config.groups)]
        return [last_at[s] for s in coarsest], channels, sizes

    def offsets(self, images: torch.Tensor) -> torch.Tensor:
        """The W+ offsets from ``w_avg``, (N, num_ws, w_dim)."""
        x = ((images + 1) / 2 - self.mean) / self.std
        features = {}
        for i, block in enumerate(self.backbone):
            x = block(x)
            if i in self.taps:
                features[i] = x
        maps = [features[i] for i in self.taps]  # coarsest first
        if self.laterals is not None:  # top-down: each finer map adds the upsampled coarser one
            pyramid = [self.laterals[0](maps[0])]
            for lateral, x in zip(self.laterals[1:], maps[1:]):
                pyramid.append(lateral(x) + F.interpolate(pyramid[-1], scale_factor=2.0,
                                                          mode="bilinear", align_corners=False))
            maps = pyramid
        return torch.cat([head(x) for x, head in zip(maps, self.heads)], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.w_avg + self.offsets(images)

    def encode(self, images: torch.Tensor, name: str = "images") -> torch.Tensor:
        """:meth:`forward` on images of any size: resized (anti-aliased) to the encoder's
        resolution; refused, naming ``name``, unless (N, 3, H, W) with square H = W."""
        return self(fit_images(images, self.config.resolution, name))


class EncoderInputError(DataError):
    """Images the encoder cannot take."""


def fit_images(images: torch.Tensor, resolution: int, name: str = "images") -> torch.Tensor:
    """Images (N, 3, S, S) resized to (N, 3, R, R) with an anti-aliased bilinear filter (unchanged
    when S = R); anything but a batch of square RGB images is an :class:`EncoderInputError`
    naming ``name``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise EncoderInputError(f"{name}: expected RGB images (N, 3, H, W), got shape "
                                f"{tuple(images.shape)}")
    if images.shape[2] != images.shape[3]:
        raise EncoderInputError(f"{name}: expected square images (aligned face crops), got "
                                f"{images.shape[2]}x{images.shape[3]}")
    if images.shape[-1] == resolution:
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=True)


def encoder_row(name: str, config: EncoderConfig) -> dict:
    """A row of the ``complexity`` table: params and GFLOPs (2 x MACs) of the whole encoder
    (backbone and heads) at batch 1; the mapping column does not apply (0)."""
    encoder = Encoder(config).eval()
    image = torch.zeros(1, 3, config.resolution, config.resolution)
    return {"model": name, "resolution": config.resolution,
            "params_M": count_parameters(encoder) / 1e6,
            "gflops": count_flops(lambda: encoder(image)) / 1e9, "mapping_params_M": 0.0}


# --- the generator an encoder inverts ---------------------------------------------------------

def generator_record(path: str | Path, num_ws: int, w_dim: int) -> dict[str, Any]:
    """What an encoder snapshot records about its generator (its ``meta["generator"]``)."""
    return {"file": Path(path).name, "sha256": sha256_file(path), "num_ws": num_ws,
            "w_dim": w_dim}


def check_generator(config: EncoderConfig, encoder_name: str, num_ws: int, w_dim: int,
                    generator_name: str) -> None:
    """Refuse a generator whose style inputs differ from the encoder's, naming both."""
    if (config.num_ws, config.w_dim) != (num_ws, w_dim):
        raise PipelineError(f"{encoder_name} inverts a generator with {config.num_ws} ws of "
                            f"{config.w_dim}, but {generator_name} has {num_ws} ws of {w_dim}")


# --- ImageNet weights for the backbone --------------------------------------------------------

def resolve_imagenet_weights(path: str | Path | None, allow_download: bool) -> Path:
    """torchvision's MobileNetV2 ImageNet weights: ``path``, else the torch hub cache (checked),
    else a checked download when allowed."""
    return resolve_torchvision_weights(path, MOBILENET_V2_URL, "MobileNetV2", allow_download,
                                       "offline, train the backbone from scratch "
                                       "(backbone_weights: none)")


def load_imagenet_backbone(encoder: Encoder, weights: str | Path) -> None:
    """Copy torchvision's MobileNetV2 ImageNet weights into the encoder's backbone.

    Strides do not change weight shapes; blocks map by (stage, block within the stage), so any
    config of width 1.0 with at most torchvision's blocks per stage takes them."""
    config = encoder.config
    if config.width_mult != 1.0 or any(n > ref[2] for n, ref in
                                       zip(config.blocks, MOBILENET_V2_STAGES)):
        raise PipelineError("ImageNet weights need width_mult 1.0 and at most torchvision's "
                            f"blocks per stage {[s[2] for s in MOBILENET_V2_STAGES]}; the encoder "
                            f"has {config.width_mult} and {config.blocks}")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unreadable file or foreign format
        raise WeightsUnavailable(f"{weights}: not MobileNetV2 weights in torchvision's format "
                                 f"({type(e).__name__})") from None
    index = {0: 0}  # our feature index -> torchvision's
    ours, theirs = 1, 1
    for n, ref in zip(config.blocks, MOBILENET_V2_STAGES):
        for b in range(n):
            index[ours + b] = theirs + b
        ours, theirs = ours + n, theirs + ref[2]
    renamed = {}
    for key in encoder.backbone.state_dict():
        i, rest = key.split(".", 1)
        renamed[key] = state.get(f"features.{index[int(i)]}.{rest}")
    missing = [k for k, v in renamed.items() if v is None]
    if missing:
        raise WeightsUnavailable(f"{weights}: not MobileNetV2 weights in torchvision's format "
                                 f"(no {missing[0]})")
    encoder.backbone.load_state_dict(renamed)


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """A trained encoder, rebuilt from its snapshot alone."""
    return rebuild_from_snapshot(path, ENCODER_KIND,
                                 lambda c: Encoder(EncoderConfig.model_validate(c)), device)


def encoder_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta`` of an encoder snapshot (its generator, its held-out split...)."""
    return load_snapshot(path, ENCODER_KIND)["meta"]


def load_encoder_and_generator(encoder_path: str | Path, student_path: str | Path
                               ) -> tuple[Encoder, BlazeStyleGAN, dict[str, Any]]:
    """(encoder, the student it was trained to invert, the encoder snapshot's meta). A generator
    of other style inputs, or of other weights than the recorded ones, is refused naming both."""
    encoder, student = load_encoder(encoder_path), load_student(student_path)
    check_generator(encoder.config, str(encoder_path), student.num_ws, student.config.w_dim,
                    str(student_path))
    meta = encoder_meta(encoder_path)
    record, digest = meta["generator"], sha256_file(student_path)
    if record["sha256"] != digest:
        raise PipelineError(f"{encoder_path} was trained on the generator {record['file']} "
                            f"(sha256 {record['sha256'][:12]}...), but {student_path} is "
                            f"{digest[:12]}...: re-train the encoder")
    return encoder, student, meta
