"""One style's stylizer through the export chain, and its MediaPipe bundle.

The stylizer is one graph (``pipeline.models.stylizer.Stylizer``): image in [0, 1] -> encoder ->
the stylized student's blocks and last head -> clamp((x + 1) / 2, 0, 1). It goes ONNX -> onnxsim
-> TFLite float32 / float16 like every model here, each step checked against the one before:
ONNX Runtime vs PyTorch and simplified vs original (max abs error), float32 TFLite vs PyTorch
(max abs error) and float16 TFLite vs PyTorch (PSNR of the worst image). Check images: faces the
base generator makes from fixed latents (the encoder's domain; no dataset needed).

The bundle: the float32 model with MediaPipe's face stylizer metadata (checked to compute the
same as the model without it), zipped with the face detector and landmarks models into
``face_stylizer.task`` (``pipeline.export.mediapipe``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch

from pipeline.artifacts.encoder import ImageInput
from pipeline.artifacts.stylizer import (
    MEDIAPIPE_MODEL,
    STYLIZER,
    TASK_BUNDLE,
    BundleRecord,
    ImageOutput,
    StylizerCard,
    StylizerCheck,
    StylizerExport,
    StylizerVerified,
    stylizer_model_file,
)
from pipeline.artifacts.tflite import TOLERANCE_KEYS, Source
from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import DataError, FileError
from pipeline.export.chain import export_chain
from pipeline.export.encoder import check_images
from pipeline.export.mediapipe import (
    FaceModels,
    check_task_bundle,
    with_stylizer_metadata,
    write_task_bundle,
)
from pipeline.io import atomic_path, describe_os_error, sha256_bytes, sha256_file, write_json
from pipeline.models.blazestylegan import BlazeStyleGAN
from pipeline.models.encoder import load_encoder_and_generator
from pipeline.models.stylizer import Stylizer, load_stylized, stylized_meta, stylized_mismatch
from pipeline.runtimes import (
    ConversionMismatch,
    max_abs_error,
    psnr_db,
    run_tflite,
    tensor_interface,
)

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "stylized"


class ExportStylizerConfig(StageConfig):
    """The ``export_stylizer`` section of params.yaml (shared by every style)."""

    opset: Annotated[int, pydantic.Field(ge=18)]
    check_images: PositiveInt
    seed: int
    onnx_max_abs_error: Annotated[float, pydantic.Field(ge=0)]
    simplified_max_abs_error: Annotated[float, pydantic.Field(ge=0)]
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]     # float32 TFLite vs PyTorch
    min_psnr_db: Annotated[float, pydantic.Field(gt=0)]       # float16 TFLite, worst image
    threads: PositiveInt
    version: str                      # written into the MediaPipe metadata


def load_parts(encoder_path: str | Path, student_path: str | Path,
               stylized_path: str | Path) -> tuple[Stylizer, BlazeStyleGAN, dict[str, Any]]:
    """(the stylizer of the encoder and a stylized student, the base student, the stylized
    snapshot's meta); refused when the stylized student was fine-tuned with another encoder or
    base student."""
    encoder, base, _ = load_encoder_and_generator(encoder_path, student_path)
    meta = stylized_meta(stylized_path)
    mismatch = stylized_mismatch(meta, stylized_path, encoder_path, student_path)
    if mismatch:
        raise ConversionMismatch(mismatch)
    return Stylizer(encoder, load_stylized(stylized_path)).eval(), base, meta


def build_stylizer(encoder_path: str | Path, student_path: str | Path,
                   stylized_path: str | Path) -> tuple[Stylizer, dict[str, Any]]:
    """The stylizer and the stylized snapshot's meta (:func:`load_parts`)."""
    stylizer, _, meta = load_parts(encoder_path, student_path, stylized_path)
    return stylizer, meta


def check_stylizer_tflite(path: Path, images: torch.Tensor, expected: np.ndarray,
                          onnx_output: np.ndarray, threads: int) -> StylizerCheck:
    """Run one TFLite stylizer (NHWC) on ``images`` (NCHW, [0, 1]) against PyTorch and ONNX."""
    resolution = images.shape[-1]
    interface = tensor_interface(path)
    for end in ("input", "output"):
        if interface[end]["shape"] != [1, resolution, resolution, 3]:
            raise ConversionMismatch(f"{path}: {end} shape {interface[end]['shape']}, expected "
                                     f"[1, {resolution}, {resolution}, 3] (NHWC); nothing "
                                     "written")
    output = run_tflite(path, images.permute(0, 2, 3, 1).contiguous().numpy(), threads)
    output = output.transpose(0, 3, 1, 2)                     # NHWC -> NCHW, as PyTorch's
    image_psnr = psnr_db(output * 2 - 1, expected * 2 - 1)    # [0, 1] -> psnr_db's [-1, 1]
    return StylizerCheck(max_abs_error_vs_pytorch=max_abs_error(output, expected),
                         max_abs_error_vs_onnx=max_abs_error(output, onnx_output),
                         psnr_db_vs_pytorch_min=float(image_psnr.min()),
                         psnr_db_vs_pytorch_mean=float(image_psnr.mean()),
                         bytes=path.stat().st_size)


def gate(checks: dict[str, StylizerCheck], config: ExportStylizerConfig, style: str) -> None:
    """float32: max abs error vs PyTorch; float16: PSNR vs PyTorch on the worst image."""
    error = checks["float32"].max_abs_error_vs_pytorch
    if not error <= config.max_abs_error:  # also catches NaN
        raise ConversionMismatch(f"stylizer {style} float32 TFLite: max abs error vs PyTorch "
                                 f"{error:.3g} is beyond the tolerance {config.max_abs_error:g}; "
                                 "nothing written")
    worst = checks["float16"].psnr_db_vs_pytorch_min
    if not worst >= config.min_psnr_db:
        raise ConversionMismatch(f"stylizer {style} float16 TFLite: PSNR vs PyTorch {worst:.1f} "
                                 f"dB on its worst image, below the tolerance "
                                 f"{config.min_psnr_db:g} dB; nothing written")


def stylizer_card(path: Path, precision: str, style: str, resolution: int,
                  built_from: dict[str, dict[str, str]], check: StylizerCheck, images: int,
                  config: ExportStylizerConfig, onnx_path: Path,
                  provenance: dict[str, Any]) -> StylizerCard:
    """The interface card of one exported stylizer."""
    tensors = tensor_interface(path)
    tolerance = config.max_abs_error if precision == "float32" else config.min_psnr_db
    return StylizerCard(
        format="tflite", precision=precision, style=style, resolution=resolution,
        weights="float16, dequantized at load time" if precision == "float16" else "float32",
        input=ImageInput(**{**tensors["input"], "shape": tuple(tensors["input"]["shape"])},
                         layout="NHWC", channels="RGB", range=(0.0, 1.0),
                         normalization="x = uint8 / 255",
                         alignment=f"an aligned face crop resized to {resolution}x{resolution} "
                                   "(FFHQ alignment: MediaPipe's FaceAligner)"),
        output=ImageOutput(**{**tensors["output"], "shape": tuple(tensors["output"]["shape"])},
                           layout="NHWC", channels="RGB", range=(0.0, 1.0)),
        built_from=built_from,
        verified=StylizerVerified(against="PyTorch encoder + stylized generator, LiteRT with "
                                          "XNNPACK on x86-64", images=images,
                                  **check.model_dump(), **{TOLERANCE_KEYS[precision]: tolerance}),
        source=Source(**{**provenance, "params_sections": tuple(provenance["params_sections"])},
                      onnx=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
                      tflite_sha256=sha256_file(path)))


def mediapipe_bundle(directory: Path, float32_model: Path, faces: FaceModels,
                     images: torch.Tensor, style: str, config: ExportStylizerConfig,
                     threads: int) -> BundleRecord:
    """``face_stylizer.tflite`` (the float32 model with MediaPipe's metadata, checked to compute
    the same) and ``face_stylizer.task`` in ``directory``."""
    model = with_stylizer_metadata(float32_model.read_bytes(), version=config.version,
                                   description=f"BlazeStyleGAN face stylizer, style {style}")
    target = directory / MEDIAPIPE_MODEL
    target.write_bytes(model)
    inputs = images.permute(0, 2, 3, 1).contiguous().numpy()
    error = max_abs_error(run_tflite(target, inputs, threads),
                          run_tflite(float32_model, inputs, threads))
    if error != 0:
        raise ConversionMismatch(f"{target}: with metadata it computes otherwise (max abs error "
                                 f"{error:.3g}); nothing written")
    bundle = directory / TASK_BUNDLE
    write_task_bundle(bundle, face_detector=faces.face_detector,
                      face_landmarks_detector=faces.face_landmarks_detector, face_stylizer=model)
    contents = check_task_bundle(bundle)
    return BundleRecord(file=bundle.name, bytes=bundle.stat().st_size,
                        sha256=sha256_bytes(bundle.read_bytes()),
                        entries=tuple(contents["entries"]), face_models=faces.source,
                        metadata=contents["metadata"], max_abs_error_vs_float32=error)


def export_stylizer(config: ExportStylizerConfig, *, style: str, encoder_path: str | Path,
                    student_path: str | Path, stylized_path: str | Path, faces: FaceModels,
                    out_dir: str | Path, provenance: dict[str, Any]) -> StylizerExport:
    """Export the stylizer of ``style`` into the directory ``out_dir`` (ONNX, simplified ONNX,
    float32 and float16 TFLite with their cards, the MediaPipe model and bundle), each step
    checked. ``out_dir`` is replaced whole, and only when every check passes."""
    stylizer, base, meta = load_parts(encoder_path, student_path, stylized_path)
    images = (check_images(base, config.check_images, config.seed) + 1) / 2    # [0, 1]
    with torch.no_grad():
        expected = stylizer(images).numpy()
    built_from = {"encoder": meta["encoder"], "stylized_generator": {
        "file": Path(stylized_path).name, "sha256": sha256_file(stylized_path)}}
    with atomic_path(out_dir, directory=True) as tmp:
        onnx_metrics, simplified_metrics, checks = export_chain(
            stylizer, images, tmp, stem=STYLIZER, opset=config.opset,
            onnx_max_abs_error=config.onnx_max_abs_error,
            simplified_max_abs_error=config.simplified_max_abs_error, input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            check=lambda path, onnx_output: check_stylizer_tflite(path, images, expected,
                                                                  onnx_output, config.threads),
            gate=lambda checks: gate(checks, config, style),
            card=lambda target, precision, check, simplified: stylizer_card(
                target, precision, style, stylizer.config.resolution, built_from, check,
                len(images), config, simplified, provenance))
        bundle = mediapipe_bundle(tmp, stylizer_model_file(tmp, "float32"), faces, images,
                                  style, config, config.threads)
    log.info("stylizer %s: float32 max abs error %.3g, float16 PSNR %.1f dB (worst image) vs "
             "PyTorch; bundle %s (%d bytes)", style, checks["float32"].max_abs_error_vs_pytorch,
             checks["float16"].psnr_db_vs_pytorch_min, bundle.file, bundle.bytes)
    return StylizerExport(style=style, onnx=onnx_metrics, simplified=simplified_metrics,
                          **checks, bundle=bundle)


# --- the face models of the bundles ------------------------------------------------------------

FACE_DETECTOR, FACE_LANDMARKS, FACE_SOURCE = ("face_detector.tflite",
                                              "face_landmarks_detector.tflite", "source.json")


class FaceModelsConfig(StageConfig):
    """The ``face_models`` section of params.yaml."""

    landmarker_task: str | None  # an official face_landmarker.task; None: the test stand-in


def write_face_models(faces: FaceModels, out_dir: str | Path) -> None:
    """The face models of every bundle, in ``out_dir`` (replaced whole): the two TFLite files and
    ``source.json`` (which models they are)."""
    with atomic_path(out_dir, directory=True) as tmp:
        (tmp / FACE_DETECTOR).write_bytes(faces.face_detector)
        (tmp / FACE_LANDMARKS).write_bytes(faces.face_landmarks_detector)
        write_json(tmp / FACE_SOURCE, {"source": faces.source})


def read_face_models(directory: str | Path) -> FaceModels:
    """What :func:`write_face_models` wrote; a missing or unreadable file names itself."""
    directory = Path(directory)
    try:
        return FaceModels(face_detector=(directory / FACE_DETECTOR).read_bytes(),
                          face_landmarks_detector=(directory / FACE_LANDMARKS).read_bytes(),
                          source=json.loads((directory / FACE_SOURCE).read_text())["source"])
    except OSError as e:
        raise FileError(describe_os_error(e)) from None
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{directory / FACE_SOURCE}: unreadable ({e})") from None
