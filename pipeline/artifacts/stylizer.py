"""The ``export_stylizer`` output directory of one style::

    stylizer.onnx, stylizer_simplified.onnx
    stylizer_{float32,float16}.tflite   the image-to-image stylizer, with an interface card
    stylizer_{float32,float16}.json     beside each
    face_stylizer.tflite                the float32 model with MediaPipe's metadata
    face_stylizer.task                  the MediaPipe Tasks bundle (with the face models)

and the stage's metrics (``metrics/export_stylizer/<style>.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from pipeline.artifacts.base import Artifact, omitted
from pipeline.artifacts.encoder import ImageInput
from pipeline.artifacts.tflite import PRECISIONS, Precision, Source, check_tolerance_key

STYLIZER = "stylizer"
MEDIAPIPE_MODEL = "face_stylizer.tflite"
TASK_BUNDLE = "face_stylizer.task"


def stylizer_onnx_file(directory: str | Path, simplified: bool) -> Path:
    return Path(directory) / f"{STYLIZER}{'_simplified' if simplified else ''}.onnx"


def stylizer_model_file(directory: str | Path, precision: str) -> Path:
    """The stylizer's TFLite model at ``precision`` in ``directory``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
    return Path(directory) / f"{STYLIZER}_{precision}.tflite"


def stylizer_card_file(directory: str | Path, precision: str) -> Path:
    return stylizer_model_file(directory, precision).with_suffix(".json")


class StylizerCheck(Artifact):
    """One TFLite stylizer against the PyTorch composition and ONNX Runtime, on the check images."""

    max_abs_error_vs_pytorch: float
    max_abs_error_vs_onnx: float
    psnr_db_vs_pytorch_min: float       # the worst check image
    psnr_db_vs_pytorch_mean: float
    bytes: int


class StylizerVerified(StylizerCheck):
    against: str
    images: int
    tolerance_max_abs_error: float | None = pydantic.Field(default=None, exclude_if=omitted)
    tolerance_min_psnr_db: float | None = pydantic.Field(default=None, exclude_if=omitted)


class ImageOutput(Artifact):
    name: str
    index: int
    shape: tuple[int, ...]          # (1, R, R, 3)
    dtype: str
    layout: Literal["NHWC"]
    channels: Literal["RGB"]
    range: tuple[float, float]


class StylizerCard(Artifact):
    """The interface card ``stylizer_{precision}.json``."""

    format: Literal["tflite"]
    precision: Precision
    weights: str
    style: str
    resolution: int
    input: ImageInput
    output: ImageOutput
    built_from: dict[str, dict[str, str]]   # encoder / stylized generator: file and sha256
    verified: StylizerVerified
    source: Source

    @pydantic.field_validator("verified")
    @classmethod
    def _tolerance_of_its_precision(cls, verified: StylizerVerified,
                                    info: pydantic.ValidationInfo):
        return check_tolerance_key(verified, info)


class BundleRecord(Artifact):
    """The MediaPipe bundle of the metrics: what it holds and where its face models came from."""

    file: str
    bytes: int
    sha256: str
    entries: tuple[str, ...]
    face_models: str                   # "official face landmarker <sha256>" or the test stand-in
    metadata: dict                     # the stylizer's TFLite metadata, parsed back
    max_abs_error_vs_float32: float    # face_stylizer.tflite (metadata added) vs the float32 model


class StylizerExport(Artifact):
    """``metrics/export_stylizer/<style>.json``."""

    style: str
    onnx: dict[str, float | int]
    simplified: dict[str, float | int]
    float32: StylizerCheck
    float16: StylizerCheck
    bundle: BundleRecord
