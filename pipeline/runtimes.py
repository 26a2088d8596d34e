"""The runtimes exported generators run on (ONNX Runtime, LiteRT) and the comparisons that gate
every conversion.

Shared by the export stages (each conversion checked against the step before it), evaluation
(quality and latency of the deployed files) and release verification. A model file that is
missing or is not a model of its format is a :class:`ModelFileError` naming the file, not a
runtime's traceback.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.similarity import psnr


class ModelFileError(PipelineError):
    """A model file is missing, unreadable or not a model of its format."""


class ConversionMismatch(PipelineError):
    """A converted model's outputs differ from its source's beyond the tolerance."""


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise ModelFileError(f"{path}: {what} not found")


def load_onnx(path: str | Path, load_external_data: bool = True):  # -> onnx.ModelProto
    """An ONNX model read from ``path``; a missing, truncated or foreign file fails clearly."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    _require_file(path, "ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node:
        raise ModelFileError(f"{path}: not an ONNX model (no graph)")
    return model


def onnx_session(model: str | Path | bytes, threads: int | None = None):
    """An ONNX Runtime CPU session of ``model`` (a path, or the serialized model), with
    ``threads`` intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not isinstance(model, bytes):
        model = Path(model)
        _require_file(model, "ONNX model")
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped exceptions
        name = "ONNX model" if isinstance(model, bytes) else str(model)
        raise ModelFileError(f"{name}: ONNX Runtime cannot load it ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None


def run_onnx(model: str | Path | bytes, latents: np.ndarray) -> np.ndarray:
    """Outputs of an ONNX generator with a static batch for ``latents`` (count, dim), the count a
    multiple of that batch, on ONNX Runtime's CPU provider."""
    session = onnx_session(model)
    (input_meta,) = session.get_inputs()
    batch = input_meta.shape[0]
    if len(latents) % batch:
        raise PipelineError(f"{model if isinstance(model, Path) else 'ONNX model'}: "
                            f"{len(latents)} check latents are not a multiple of its batch {batch}")
    return np.concatenate([session.run(None, {input_meta.name: latents[i:i + batch]})[0]
                           for i in range(0, len(latents), batch)])


def tflite_interpreter(model: str | Path, threads: int):  # -> ai_edge_litert Interpreter
    """A LiteRT interpreter (XNNPACK) of a one-input, one-output TFLite model, allocated."""
    from ai_edge_litert.interpreter import Interpreter

    model = Path(model)
    _require_file(model, "TFLite model")
    try:
        interpreter = Interpreter(model_path=str(model), num_threads=threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{model}: not a TFLite model LiteRT can run ("
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if len(interpreter.get_input_details()) != 1 or len(interpreter.get_output_details()) != 1:
        raise ModelFileError(f"{model}: expected one input and one output, got "
                             f"{len(interpreter.get_input_details())} and "
                             f"{len(interpreter.get_output_details())}")
    return interpreter


def tflite_operators(model: str | Path) -> Counter[str]:
    """The operators of a TFLite model by name, as converted (before a delegate takes them;
    nothing is allocated, so a model that could not run here is listed too)."""
    from ai_edge_litert.interpreter import Interpreter

    model = Path(model)
    _require_file(model, "TFLite model")
    try:
        interpreter = Interpreter(model_path=str(model))
    except (ValueError, RuntimeError) as e:
        raise ModelFileError(f"{model}: not a TFLite model ({type(e).__name__})") from None
    # The op list is only exposed by this private method.
    return Counter(op["op_name"] for op in interpreter._get_ops_details())


def run_tflite(model: str | Path, latents: np.ndarray, threads: int = 1) -> np.ndarray:
    """Outputs of a one-input, one-output TFLite generator for ``latents`` (count, dim) on LiteRT
    (XNNPACK), the count a multiple of the model's static batch."""
    interpreter = tflite_interpreter(model, threads)
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    batch = int(source["shape"][0])
    if len(latents) % batch:
        raise PipelineError(f"{model}: {len(latents)} check latents are not a multiple of its "
                            f"batch {batch}")
    outputs = []
    for i in range(0, len(latents), batch):
        interpreter.set_tensor(source["index"], latents[i:i + batch].astype(source["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(target["index"]).copy())
    return np.concatenate(outputs)


def tensor_interface(model: str | Path) -> dict[str, dict[str, Any]]:
    """Name, index, shape and dtype of the input and output tensors of a TFLite model."""
    interpreter = tflite_interpreter(model, 1)

    def describe(detail: dict) -> dict[str, Any]:
        return {"name": detail["name"], "index": int(detail["index"]),
                "shape": [int(d) for d in detail["shape"]],
                "dtype": np.dtype(detail["dtype"]).name}

    return {"input": describe(interpreter.get_input_details()[0]),
            "output": describe(interpreter.get_output_details()[0])}


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest |actual - expected| over every value (NaN if either holds a NaN)."""
    return float(np.abs(actual.astype(np.float64) - expected).max())


def check_max_abs(name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    """:func:`max_abs_error`, or :class:`ConversionMismatch` beyond ``tolerance`` (or NaN)."""
    if actual.shape != expected.shape:
        raise ConversionMismatch(f"{name}: output shape {actual.shape}, expected {expected.shape}")
    error = max_abs_error(actual, expected)
    if not error <= tolerance:  # also catches NaN
        raise ConversionMismatch(f"{name}: max abs error {error:.3g} is beyond the tolerance "
                                 f"{tolerance:g}; nothing written")
    return error


def psnr_db(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """PSNR per image in dB, images in [-1, 1] (peak-to-peak 2), any layout with batch first."""
    return psnr(torch.from_numpy(actual), torch.from_numpy(expected)).numpy()
