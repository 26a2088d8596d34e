"""The ``export_encoder`` output directory: ``encoder.onnx``, ``encoder_simplified.onnx`` and
``encoder_{precision}.tflite`` with an interface card ``encoder_{precision}.json`` beside each
TFLite model; and the stage's metrics (``metrics/export_encoder.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from pipeline.artifacts.base import Artifact, omitted
from pipeline.artifacts.tflite import (
    Precision,
    Source,
    card_file,
    check_tolerance_key,
    model_file,
)

ENCODER = "encoder"


def encoder_model_file(directory: str | Path, precision: str) -> Path:
    """The encoder's TFLite model at ``precision`` in ``directory``."""
    return model_file(directory, ENCODER, precision)


def encoder_card_file(directory: str | Path, precision: str) -> Path:
    """The interface card (JSON) beside :func:`encoder_model_file`."""
    return card_file(directory, ENCODER, precision)


class EncoderCheck(Artifact):
    """One encoder TFLite model on LiteRT on the check images, against the PyTorch encoder: its
    W+, and the images the PyTorch generator makes from it (the reconstruction, which is what
    the W+ is for)."""

    max_abs_error_ws_vs_pytorch: float
    max_abs_error_ws_vs_onnx: float
    max_abs_error_image_vs_pytorch: float    # reconstruction from these ws vs from PyTorch's
    psnr_db_image_vs_pytorch_min: float      # the worst check image
    psnr_db_image_vs_pytorch_mean: float
    bytes: int


class EncoderConversion(Artifact):
    """``metrics/export_encoder.json``: every step of the chain, each against the one before."""

    onnx: dict[str, float | int]            # export_onnx's metrics (ONNX Runtime vs PyTorch)
    simplified: dict[str, float | int]      # simplify_onnx's (simplified vs original)
    float32: EncoderCheck
    float16: EncoderCheck


class ImageInput(Artifact):
    """The card's ``input``: one aligned face image."""

    name: str
    index: int
    shape: tuple[int, ...]          # (1, R, R, 3)
    dtype: str
    layout: Literal["NHWC"]
    channels: Literal["RGB"]
    range: tuple[float, float]
    normalization: str
    alignment: str


class WPlusOutput(Artifact):
    """The card's ``output``: W+ for the generator recorded in ``generator``."""

    name: str
    index: int
    shape: tuple[int, ...]          # (1, num_ws, w_dim)
    dtype: str
    meaning: str


class GeneratorRecord(Artifact):
    """The generator an encoder inverts (its snapshot's file and hash, and its style inputs)."""

    file: str
    sha256: str
    num_ws: int
    w_dim: int


class EncoderVerified(EncoderCheck):
    """The card's ``verified``: this file's :class:`EncoderCheck` and the tolerance it passed."""

    against: str
    images: int
    tolerance_max_abs_error: float | None = pydantic.Field(default=None, exclude_if=omitted)
    tolerance_min_psnr_db: float | None = pydantic.Field(default=None, exclude_if=omitted)


class EncoderCard(Artifact):
    """The interface card ``encoder_{precision}.json``."""

    format: Literal["tflite"]
    precision: Precision
    weights: str
    resolution: int
    input: ImageInput
    output: WPlusOutput
    generator: GeneratorRecord
    verified: EncoderVerified
    source: Source

    @pydantic.field_validator("verified")
    @classmethod
    def _tolerance_of_its_precision(cls, verified: EncoderVerified,
                                    info: pydantic.ValidationInfo):
        return check_tolerance_key(verified, info)
