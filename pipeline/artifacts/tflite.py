"""The ``convert_tflite`` output directory: ``{name}_{precision}.tflite`` with an interface card
``{name}_{precision}.json`` beside each, for the student and the teacher; and the stage's metrics
(``metrics/convert_tflite.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

import pydantic

from pipeline.artifacts.base import Artifact, omitted

Precision = Literal["float32", "float16"]
GENERATORS = ("student", "teacher")
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def model_file(directory: str | Path, name: str, precision: str) -> Path:
    """The TFLite model ``name`` (a generator, the encoder, a stylizer) at ``precision`` in
    ``directory``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    return Path(directory) / f"{name}_{precision}.tflite"


def card_file(directory: str | Path, name: str, precision: str) -> Path:
    """The interface card (JSON) beside :func:`model_file`."""
    return model_file(directory, name, precision).with_suffix(".json")


class ConversionCheck(Artifact):
    """One TFLite model run on LiteRT on the check latents, against its sources."""

    max_abs_error_vs_pytorch: float
    max_abs_error_vs_onnx: float
    psnr_db_vs_pytorch_min: float    # the worst check image
    psnr_db_vs_pytorch_mean: float
    bytes: int                       # size of the .tflite file


class GeneratorConversion(Artifact):
    """Both precisions of one generator."""

    float32: ConversionCheck
    float16: ConversionCheck


class ConversionMetrics(Artifact):
    """``metrics/convert_tflite.json``."""

    student: GeneratorConversion
    teacher: GeneratorConversion


class InputTensor(Artifact):
    """The card's ``input``: the latent tensor (looked up by index; names differ per converter)."""

    name: str
    index: int
    shape: tuple[int, ...]           # (batch, latent dim)
    dtype: str
    latent: Literal["z", "w"]
    meaning: str
    distribution: Literal["standard_normal", "mapped"]
    range: None                      # unbounded (written as null)


class OutputTensor(Artifact):
    """The card's ``output``: the image tensor and how it maps to pixels."""

    name: str
    index: int
    shape: tuple[int, ...]           # (batch, H, W, 3) or (batch, 3, H, W), per ``layout``
    dtype: str
    layout: Literal["NHWC", "NCHW"]
    channels: Literal["RGB"]
    range: tuple[float, float]
    normalization: str


# The tolerance each precision is gated by (pipeline.export.tflite.check_tflite).
TOLERANCE_KEYS = {"float32": "tolerance_max_abs_error", "float16": "tolerance_min_psnr_db"}


class Verified(ConversionCheck):
    """The card's ``verified``: the :class:`ConversionCheck` of this file and the tolerance it
    passed (max abs error for float32, PSNR for float16; the other key is absent)."""

    against: str
    latents: int
    tolerance_max_abs_error: float | None = pydantic.Field(default=None, exclude_if=omitted)
    tolerance_min_psnr_db: float | None = pydantic.Field(default=None, exclude_if=omitted)


class Source(Artifact):
    """The card's ``source``: what the model was built from (``pipeline.provenance``)."""

    git_commit: str | None           # None: not built in a git checkout
    code_dirty: bool | None
    params_sha256: str
    params_sections: tuple[str, ...]
    onnx: str                        # file name of the ONNX model converted
    onnx_sha256: str
    tflite_sha256: str


class TfliteCard(Artifact):
    """The interface card ``{name}_{precision}.json``: what goes in, what comes out, how it was
    checked, where it came from."""

    format: Literal["tflite"]
    precision: Precision
    weights: str
    resolution: int
    input: InputTensor
    output: OutputTensor
    verified: Verified
    source: Source

    @pydantic.field_validator("verified")
    @classmethod
    def _tolerance_of_its_precision(cls, verified: Verified, info: pydantic.ValidationInfo):
        return check_tolerance_key(verified, info)


def check_tolerance_key(verified: Artifact, info: pydantic.ValidationInfo) -> Artifact:
    """A card's ``verified`` validator: it states the tolerance of the card's precision (in
    :data:`TOLERANCE_KEYS`) and no other."""
    if "precision" in info.data:  # else the precision's own error is reported
        key = TOLERANCE_KEYS[info.data["precision"]]
        stated = {k for k in TOLERANCE_KEYS.values() if getattr(verified, k) is not None}
        if stated != {key}:
            raise ValueError(f"a {info.data['precision']} model states {key} only")
    return verified
