"""The inversion encoder through the export chain: ONNX -> onnxsim -> TFLite float32 / float16,
each step checked against the one before, as the generators' are.

The check inputs are images the generator itself makes from fixed latents (faces of the
encoder's domain, no dataset needed). Gates: ONNX Runtime vs PyTorch and simplified vs original
on W+ (max abs error); the float32 TFLite W+ vs PyTorch (max abs error); and for both
precisions the *reconstruction*, the image the PyTorch generator makes from the TFLite W+,
against the one it makes from PyTorch's W+ (float32: max abs error; float16: PSNR on the worst
image), since what a W+ error costs is only visible in the image.

onnx2tf turns the NCHW image input of the ONNX graph into NHWC (TensorFlow's layout); the W+
output (1, num_ws, w_dim) keeps its shape. Both are checked, and the card records them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch

from pipeline.artifacts.encoder import (
    ENCODER,
    EncoderCard,
    EncoderCheck,
    EncoderConversion,
    EncoderVerified,
    GeneratorRecord,
    ImageInput,
    WPlusOutput,
)
from pipeline.artifacts.tflite import TOLERANCE_KEYS, Source
from pipeline.config import PositiveInt, StageConfig
from pipeline.export.chain import export_chain
from pipeline.io import atomic_path, sha256_file
from pipeline.models.blazestylegan import BlazeStyleGAN
from pipeline.models.encoder import Encoder, load_encoder_and_generator
from pipeline.runtimes import (
    ConversionMismatch,
    max_abs_error,
    psnr_db,
    run_tflite,
    tensor_interface,
)
from pipeline.seeding import fixed_latents
from pipeline.similarity import PSNR_MAX_DB

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "image", "ws"


class ExportEncoderConfig(StageConfig):
    """The ``export_encoder`` section of params.yaml."""

    opset: Annotated[int, pydantic.Field(ge=17)]
    check_images: PositiveInt       # generator images the exported models are checked on
    seed: int
    onnx_max_abs_error: Annotated[float, pydantic.Field(ge=0)]        # W+, ONNX RT vs PyTorch
    simplified_max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # W+, simplified vs orig.
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # float32 TFLite W+ and image
    min_psnr_db: Annotated[float, pydantic.Field(gt=0, le=PSNR_MAX_DB)]  # float16 image
    threads: PositiveInt            # LiteRT threads for the checks


@torch.no_grad()
def check_images(student: BlazeStyleGAN, count: int, seed: int) -> torch.Tensor:
    """Images (count, 3, R, R) of the generator from fixed latents, clamped to [-1, 1]."""
    z = fixed_latents(seed, count, student.config.z_dim, "export_encoder")
    return student.synthesis.final_image(
        student.mapping(z)[:, None].expand(-1, student.num_ws, -1)).clamp(-1, 1)


@torch.no_grad()
def _reconstruct(student: BlazeStyleGAN, ws: np.ndarray) -> np.ndarray:
    return torch.cat([student.synthesis.final_image(chunk)
                      for chunk in torch.from_numpy(ws).split(16)]).numpy()


def check_encoder_tflite(path: Path, student: BlazeStyleGAN, images: torch.Tensor,
                         expected_ws: np.ndarray, onnx_ws: np.ndarray,
                         threads: int) -> EncoderCheck:
    """Run one TFLite encoder on ``images`` (NHWC on LiteRT) against PyTorch and ONNX."""
    interface = tensor_interface(path)
    resolution = images.shape[-1]
    if interface["input"]["shape"] != [1, resolution, resolution, 3]:
        raise ConversionMismatch(f"{path}: input shape {interface['input']['shape']}, expected "
                                 f"[1, {resolution}, {resolution}, 3] (NHWC); nothing written")
    ws = run_tflite(path, images.permute(0, 2, 3, 1).contiguous().numpy(), threads)
    if ws.shape != expected_ws.shape:
        raise ConversionMismatch(f"{path}: output shape {ws.shape}, expected "
                                 f"{expected_ws.shape} (PyTorch); nothing written")
    reconstruction, expected = _reconstruct(student, ws), _reconstruct(student, expected_ws)
    image_psnr = psnr_db(np.clip(reconstruction, -1, 1), np.clip(expected, -1, 1))
    return EncoderCheck(max_abs_error_ws_vs_pytorch=max_abs_error(ws, expected_ws),
                        max_abs_error_ws_vs_onnx=max_abs_error(ws, onnx_ws),
                        max_abs_error_image_vs_pytorch=max_abs_error(reconstruction, expected),
                        psnr_db_image_vs_pytorch_min=float(image_psnr.min()),
                        psnr_db_image_vs_pytorch_mean=float(image_psnr.mean()),
                        bytes=path.stat().st_size)


def gate(checks: dict[str, EncoderCheck], config: ExportEncoderConfig) -> None:
    """float32: W+ and image max abs error; float16: worst-image PSNR."""
    fp32 = checks["float32"]
    error = max(fp32.max_abs_error_ws_vs_pytorch, fp32.max_abs_error_image_vs_pytorch)
    if not error <= config.max_abs_error:  # also catches NaN
        raise ConversionMismatch(f"encoder float32 TFLite: max abs error vs PyTorch {error:.3g} "
                                 f"(W+ or image) is beyond the tolerance {config.max_abs_error:g}; "
                                 "nothing written")
    worst = checks["float16"].psnr_db_image_vs_pytorch_min
    if not worst >= config.min_psnr_db:
        raise ConversionMismatch(f"encoder float16 TFLite: reconstruction PSNR vs PyTorch "
                                 f"{worst:.1f} dB on its worst image, below the tolerance "
                                 f"{config.min_psnr_db:g} dB; nothing written")


def encoder_card(path: Path, precision: str, encoder: Encoder, record: dict[str, Any],
                 check: EncoderCheck, images: int, config: ExportEncoderConfig, onnx_path: Path,
                 provenance: dict[str, Any]) -> EncoderCard:
    """The interface card of one exported encoder."""
    tensors = tensor_interface(path)
    c = encoder.config
    tolerance = config.max_abs_error if precision == "float32" else config.min_psnr_db
    return EncoderCard(
        format="tflite", precision=precision, resolution=c.resolution,
        weights="float16, dequantized at load time" if precision == "float16" else "float32",
        input=ImageInput(**{**tensors["input"], "shape": tuple(tensors["input"]["shape"])},
                         layout="NHWC", channels="RGB", range=(-1.0, 1.0),
                         normalization="x = uint8 / 127.5 - 1",
                         alignment=f"an aligned face crop resized to {c.resolution}x"
                                   f"{c.resolution}, aligned as the generator's training faces"),
        output=WPlusOutput(**{**tensors["output"], "shape": tuple(tensors["output"]["shape"])},
                           meaning=f"W+: one w per style input of the generator ({c.num_ws} x "
                                   f"{c.w_dim}), w_avg included; feed it to the generator's "
                                   "synthesis network"),
        generator=GeneratorRecord(**record),
        verified=EncoderVerified(against="PyTorch encoder and generator, LiteRT with XNNPACK "
                                         "on x86-64", images=images, **check.model_dump(),
                                 **{TOLERANCE_KEYS[precision]: tolerance}),
        source=Source(**{**provenance, "params_sections": tuple(provenance["params_sections"])},
                      onnx=onnx_path.name, onnx_sha256=sha256_file(onnx_path),
                      tflite_sha256=sha256_file(path)))


def export_encoder(config: ExportEncoderConfig, *, encoder_path: str | Path,
                   student_path: str | Path, out_dir: str | Path,
                   provenance: dict[str, Any]) -> EncoderConversion:
    """Export the encoder at ``encoder_path`` into the directory ``out_dir`` (ONNX, simplified
    ONNX, float32 and float16 TFLite with their cards), each step checked.

    ``out_dir`` is replaced whole, and only when every check passes.
    """
    encoder, student, meta = load_encoder_and_generator(encoder_path, student_path)
    record = meta["generator"]
    images = check_images(student, config.check_images, config.seed)
    with torch.no_grad():
        expected_ws = encoder(images).numpy()
    with atomic_path(out_dir, directory=True) as tmp:
        onnx_metrics, simplified_metrics, checks = export_chain(
            encoder, images, tmp, stem=ENCODER, opset=config.opset,
            onnx_max_abs_error=config.onnx_max_abs_error,
            simplified_max_abs_error=config.simplified_max_abs_error, input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            check=lambda path, onnx_ws: check_encoder_tflite(path, student, images, expected_ws,
                                                             onnx_ws, config.threads),
            gate=lambda checks: gate(checks, config),
            card=lambda target, precision, check, simplified: encoder_card(
                target, precision, encoder, record, check, len(images), config, simplified,
                provenance))
    log.info("encoder: float32 W+ max abs error %.3g, float16 reconstruction PSNR %.1f dB (worst "
             "image) vs PyTorch", checks["float32"].max_abs_error_ws_vs_pytorch,
             checks["float16"].psnr_db_image_vs_pytorch_min)
    return EncoderConversion(onnx=onnx_metrics, simplified=simplified_metrics, **checks)
