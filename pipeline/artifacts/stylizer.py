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
from pipeline.artifacts.tflite import (
    Precision,
    Source,
    card_file,
    check_tolerance_key,
    model_file,
)

STYLIZER = "stylizer"
MEDIAPIPE_MODEL = "face_stylizer.tflite"
TASK_BUNDLE = "face_stylizer.task"


def stylizer_model_file(directory: str | Path, precision: str) -> Path:
    """The stylizer's TFLite model at ``precision`` in ``directory``."""
    return model_file(directory, STYLIZER, precision)


def stylizer_card_file(directory: str | Path, precision: str) -> Path:
    """The interface card (JSON) beside :func:`stylizer_model_file`."""
    return card_file(directory, STYLIZER, precision)


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


# --- metrics/evaluate_stylizers.json -------------------------------------------------------------

class OutputScores(Artifact):
    """One set of outputs on the held-out faces (``pipeline.metrics.stylizer.score_outputs``)."""

    gram_distance: float      # to the style images, relative, summed over layers (lower: closer)
    swd: float                # to the style images, x 1e3, style-set normalization
    content_wplus: float      # W+ distance to the input on the unmixed layers, / between faces


class StylizerTiming(Artifact):
    """The float16 stylizer on LiteRT, batch 1."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    gflops: float
    peak_share: float


class StyleEvaluation(Artifact):
    """One style: the stylizer, its float16 TFLite model and the unstylized baseline."""

    stylized: OutputScores
    stylized_float16: OutputScores
    unstylized: OutputScores
    gram_distance_vs_unstylized: float   # stylized / unstylized: below 1 is closer to the style
    swd_vs_unstylized: float
    style_images: int
    swap_layers: list[int]
    alpha: float
    latency_float16: StylizerTiming


class StylizersEvaluation(Artifact):
    """``metrics/evaluate_stylizers.json``."""

    faces: int
    feature_network: str
    sgemm_peak_gflops: float
    threads: int
    styles: dict[str, StyleEvaluation]
