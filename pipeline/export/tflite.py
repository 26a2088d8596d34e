"""ONNX -> TFLite float32 and float16 (onnx2tf), each checked against PyTorch on LiteRT.

float16 is the standard post-training float16 quantization: weights stored as fp16 and
dequantized at load time (on XNNPACK and GPU delegates) or per op, inputs and outputs stay float32.
Both files come from one onnx2tf run.

Converters have returned success with silently wrong outputs (onnx2tf with a noise constant
stored as (1, H, W); docs/dependencies.md), so every model is run on LiteRT on fixed latents and
compared with the PyTorch model it comes from: fp32 by max abs error, fp16 by PSNR. A model that
needs TensorFlow Select ("Flex") ops is refused: it only runs where TensorFlow is loaded. Beyond
the tolerances nothing is written. TFLite tensor names differ from the ONNX ones, so tensors
are looked up by index (the generators have one input and one output) and the interface JSON
beside each model records the names as converted.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.artifacts.base import write_artifact
from pipeline.artifacts.tflite import (
    PRECISIONS,
    TOLERANCE_KEYS,
    ConversionCheck,
    ConversionMetrics,
    GeneratorConversion,
    InputTensor,
    OutputTensor,
    Source,
    TfliteCard,
    Verified,
    card_file,
    model_file,
)
from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, sha256_file
from pipeline.models.inference import check_latents, inference_models
from pipeline.runtimes import (
    ConversionMismatch,
    max_abs_error,
    psnr_db,
    run_onnx,
    run_tflite,
    tensor_interface,
    tflite_operators,
)
from pipeline.similarity import PSNR_MAX_DB

log = logging.getLogger(__name__)

class ConvertTfliteConfig(StageConfig):
    """The ``convert_tflite`` section of params.yaml."""

    check_latents: PositiveInt  # a multiple of export_onnx.batch_size
    seed: int
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # float32 TFLite vs PyTorch
    # float16 TFLite vs PyTorch, on the worst check image (at most the PSNR cap)
    min_psnr_db: Annotated[float, pydantic.Field(gt=0, le=PSNR_MAX_DB)]
    threads: PositiveInt        # LiteRT threads for the checks


class ConversionFailed(PipelineError):
    """onnx2tf could not convert the model."""


def _offline_calibration_sample() -> np.ndarray:
    """Stands in for ``onnx2tf.onnx2tf.download_test_image_data``, which downloads 20 MS-COCO
    images from GitHub. onnx2tf only runs them through the model as dummy inputs (when every
    input is an NHWC image); deterministic noise in [0, 1] of the same shape does the same
    offline."""
    return np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)


def onnx_to_tflite(onnx_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Convert an ONNX model with onnx2tf into ``out_dir``; returns {precision: .tflite path}.

    The model should be simplified already: onnx2tf is told not to run onnxsim (it would run the
    CLI in a subprocess and overwrite its input in place), and converts a copy.
    """
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_main

    out_dir = Path(out_dir)
    source = out_dir / "model.onnx"
    shutil.copyfile(onnx_path, source)
    tf_dir, log_path = out_dir / "saved_model", out_dir / "onnx2tf.log"
    download = onnx2tf_main.download_test_image_data
    onnx2tf_main.download_test_image_data = _offline_calibration_sample
    try:
        # Its progress and TensorFlow's saved-model listing go to a log file, kept for errors.
        # (Not copy_onnx_input_output_names_to_tflite: with `flatc` installed it downloads a
        # schema from GitHub; tensors are looked up by index anyway.)
        with open(log_path, "w") as log_file, contextlib.redirect_stdout(log_file):
            onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(tf_dir),
                            not_use_onnxsim=True, non_verbose=True)
    except (SystemExit, Exception) as e:  # onnx2tf reports some errors by sys.exit(1)
        what = f"exit status {e.code}" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
        raise ConversionFailed(f"{onnx_path}: onnx2tf failed ({what}); the end of its log:\n"
                               f"{_log_tail(log_path)}") from None
    finally:
        onnx2tf_main.download_test_image_data = download
    paths = {precision: tf_dir / f"model_{precision}.tflite" for precision in PRECISIONS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConversionFailed(f"{onnx_path}: onnx2tf reported success but wrote no {missing}")
    for path in paths.values():
        flex = select_tf_ops(path)
        if flex:
            raise ConversionFailed(f"{onnx_path}: the TFLite model needs TensorFlow Select ops "
                                   f"({', '.join(sorted(flex))}), which LiteRT's builtin runtime "
                                   f"and mobile apps do not have; nothing written")
    return paths


def _log_tail(path: Path, chars: int = 2000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[-chars:]  # without onnx2tf's colour codes


def select_tf_ops(model: str | Path) -> set[str]:
    """Names of the TensorFlow Select ("Flex") ops in a TFLite model. They only run where the
    Flex delegate is linked in (e.g. in a process that imported TensorFlow, like this
    conversion), so a model that has any passes a check here and fails on device."""
    return {name for name in tflite_operators(model) if name.startswith("Flex")}


def output_layout(name: str, tflite_shape: list[int], pytorch_shape: tuple[int, ...],
                  layout: str) -> str:
    """The layout of a converted model's image output: the PyTorch model's, except that onnx2tf
    turns an NCHW output into NHWC (TensorFlow's layout). Anything else is a mismatch."""
    if tuple(tflite_shape[1:]) == pytorch_shape[1:]:
        return layout
    nhwc = ((pytorch_shape[2], pytorch_shape[3], pytorch_shape[1]) if len(pytorch_shape) == 4
            else None)
    if layout == "nchw" and tuple(tflite_shape[1:]) == nhwc:
        return "nhwc"
    raise ConversionMismatch(f"{name} TFLite: output shape {tflite_shape}, expected "
                             f"{[tflite_shape[0], *pytorch_shape[1:]]} "
                             f"(PyTorch, {layout.upper()}); "
                             f"nothing written")


def check_tflite(name: str, paths: dict[str, Path], expected: np.ndarray, onnx_output: np.ndarray,
                 latents: np.ndarray, config: ConvertTfliteConfig) -> GeneratorConversion:
    """Run the float32 and float16 models on ``latents`` and gate them against PyTorch's
    ``expected`` outputs (in the TFLite layout); ``onnx_output`` (the source ONNX on ONNX
    Runtime, same layout) is compared too, for the record. Raises :class:`ConversionMismatch`
    beyond a tolerance."""
    checks = {}
    for precision, path in paths.items():
        actual = run_tflite(path, latents, config.threads)
        if actual.shape != expected.shape:
            raise ConversionMismatch(f"{name} {precision} TFLite: output shape {actual.shape}, "
                                     f"expected {expected.shape} (PyTorch); nothing written")
        image_psnr = psnr_db(actual, expected)
        checks[precision] = ConversionCheck(
            max_abs_error_vs_pytorch=max_abs_error(actual, expected),
            max_abs_error_vs_onnx=max_abs_error(actual, onnx_output),
            psnr_db_vs_pytorch_min=float(image_psnr.min()),
            psnr_db_vs_pytorch_mean=float(image_psnr.mean()),
            bytes=path.stat().st_size,
        )
    metrics = GeneratorConversion(**checks)
    error = metrics.float32.max_abs_error_vs_pytorch
    if not error <= config.max_abs_error:  # also catches NaN
        raise ConversionMismatch(f"{name} float32 TFLite: max abs error vs PyTorch {error:.3g} is "
                                 f"beyond the tolerance {config.max_abs_error:g}; nothing written")
    worst = metrics.float16.psnr_db_vs_pytorch_min
    if not worst >= config.min_psnr_db:
        raise ConversionMismatch(f"{name} float16 TFLite: PSNR vs PyTorch {worst:.1f} dB on its "
                                 f"worst image, below the tolerance {config.min_psnr_db:g} dB; "
                                 f"nothing written")
    return metrics


def interface_card(tflite_path: Path, precision: str, model: nn.Module, layout: str,
                   onnx_path: str | Path, provenance: dict[str, Any],
                   verified: Verified) -> TfliteCard:
    """The card written beside a model: what goes in, what comes out, how it was checked, where
    it came from (``provenance``: :func:`pipeline.provenance.provenance`)."""
    tensors = {side: {**tensor, "shape": tuple(tensor["shape"])}  # the card's shapes: tuples
               for side, tensor in tensor_interface(tflite_path).items()}
    latent = ("z: standard normal noise, one row per image" if model.input == "z" else
              "w: an intermediate latent (the mapping network's output, e.g. from an encoder)")
    return TfliteCard(
        format="tflite",
        precision=precision,
        weights="float16, dequantized at load time" if precision == "float16" else "float32",
        resolution=model.config.resolution,
        input=InputTensor(**tensors["input"], latent=model.input, meaning=latent,
                          distribution="standard_normal" if model.input == "z" else "mapped",
                          range=None),
        output=OutputTensor(**tensors["output"], layout=layout.upper(), channels="RGB",
                            range=(-1.0, 1.0),
                            normalization="uint8 = clip(round((x + 1) * 127.5), 0, 255); values "
                                          "slightly outside [-1, 1] occur and are clipped"),
        verified=verified,
        source=Source(**{**provenance, "params_sections": tuple(provenance["params_sections"])},
                      onnx=Path(onnx_path).name, onnx_sha256=sha256_file(onnx_path),
                      tflite_sha256=sha256_file(tflite_path)),
    )


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="convert_tflite-") as tmp:
        yield Path(tmp)


def convert_tflite(name: str, onnx_path: str | Path, model: nn.Module, latents: torch.Tensor,
                   out_dir: Path, config: ConvertTfliteConfig,
                   provenance: dict[str, Any]) -> GeneratorConversion:
    """Convert one ONNX generator to ``out_dir/{name}_float32.tflite`` and ``..._float16.tflite``
    (each with a ``.json`` interface card), after checking both against the PyTorch ``model``
    the ONNX was exported from, on ``latents`` (count, dim).

    ``out_dir`` must exist; a failed check raises before anything is written there.
    """
    with torch.no_grad():
        expected = model.eval()(latents).numpy()
    onnx_output = run_onnx(Path(onnx_path), latents.numpy())
    with _scratch() as scratch:
        paths = onnx_to_tflite(onnx_path, scratch)
        layout = output_layout(name, tensor_interface(paths["float32"])["output"]["shape"],
                               expected.shape, model.layout)
        if layout != model.layout:
            expected, onnx_output = (a.transpose(0, 2, 3, 1) for a in (expected, onnx_output))
        metrics = check_tflite(name, paths, expected, onnx_output, latents.numpy(), config)
        tolerances = {"float32": config.max_abs_error, "float16": config.min_psnr_db}
        for precision, path in paths.items():
            target = model_file(out_dir, name, precision)
            shutil.copyfile(path, target)
            verified = Verified(against="PyTorch, LiteRT with XNNPACK on x86-64",
                                latents=len(latents), **getattr(metrics, precision).model_dump(),
                                **{TOLERANCE_KEYS[precision]: tolerances[precision]})
            write_artifact(card_file(out_dir, name, precision), interface_card(
                target, precision, model, layout, onnx_path, provenance, verified))
    log.info("%s: float32 max abs error %.3g, float16 PSNR %.1f dB (worst image) vs PyTorch",
             name, metrics.float32.max_abs_error_vs_pytorch,
             metrics.float16.psnr_db_vs_pytorch_min)
    return metrics


def convert_generators(config: ConvertTfliteConfig, *, student_path: str | Path,
                       teacher_path: str | Path, student_onnx: str | Path,
                       teacher_onnx: str | Path, out_dir: str | Path,
                       provenance: dict[str, Any]) -> ConversionMetrics:
    """Convert the simplified student and teacher ONNX models into the directory ``out_dir``
    (``{student,teacher}_{float32,float16}.{tflite,json}``), each checked against the PyTorch
    model it was exported from (the snapshots at ``student_path`` and ``teacher_path``);
    ``provenance`` (:func:`pipeline.provenance.provenance`) goes into every interface card.

    ``out_dir`` is replaced whole, and only when all four models pass: a failure leaves the
    previous one (or none) in place.
    """
    models = inference_models(student_path, teacher_path)
    latents = check_latents(models, config.check_latents, config.seed, "convert_tflite")
    with atomic_path(out_dir, directory=True) as tmp:
        metrics = ConversionMetrics(**{
            name: convert_tflite(name, source, models[name], latents, tmp, config, provenance)
            for name, source in (("student", student_onnx), ("teacher", teacher_onnx))})
    return metrics  # the directory is in place only now, when the block has exited
