"""The export chain every exported model of this pipeline shares: PyTorch -> ONNX (checked
against PyTorch) -> simplified ONNX (checked against the original) -> TFLite float32 and
float16 (each checked by the caller's ``check`` and ``gate``), with an interface card beside
each TFLite model. Files in the output directory: ``<stem>.onnx``, ``<stem>_simplified.onnx``,
``<stem>_{float32,float16}.tflite`` and ``<stem>_{float32,float16}.json``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from pipeline.artifacts.base import Artifact, write_artifact
from pipeline.artifacts.tflite import PRECISIONS, card_file, model_file
from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.export.tflite import onnx_to_tflite
from pipeline.runtimes import run_onnx

CheckT = TypeVar("CheckT", bound=Artifact)


def onnx_file(directory: str | Path, stem: str, simplified: bool) -> Path:
    """The exported (or simplified) ONNX model ``stem`` in ``directory``."""
    return Path(directory) / f"{stem}{'_simplified' if simplified else ''}.onnx"


def export_chain(model: nn.Module, images: torch.Tensor, out_dir: Path, *, stem: str,
                 opset: int, onnx_max_abs_error: float, simplified_max_abs_error: float,
                 input_name: str, output_name: str,
                 check: Callable[[Path, np.ndarray], CheckT],
                 gate: Callable[[dict[str, CheckT]], None],
                 card: Callable[[Path, str, CheckT, Path], Artifact],
                 ) -> tuple[dict, dict, dict[str, CheckT]]:
    """Take ``model`` (one input, one output) through the chain into ``out_dir`` (the caller's
    temporary directory: nothing is final until it is renamed).

    Args:
        images:   the check inputs, (count, ...), batch 1 each.
        check:    (TFLite file, the simplified ONNX model's outputs) -> that model's checks.
        gate:     raises when the checks of the two precisions miss their tolerances.
        card:     (TFLite file in ``out_dir``, precision, its checks, simplified ONNX file) ->
                  its interface card.

    Returns:
        (export_onnx's metrics, simplify_onnx's metrics, {precision: checks}).
    """
    onnx_path, simplified = onnx_file(out_dir, stem, False), onnx_file(out_dir, stem, True)
    onnx_metrics = export_onnx(model, onnx_path, opset, 1, images, onnx_max_abs_error,
                               input_name=input_name, output_name=output_name)
    simplified_metrics = simplify_onnx(onnx_path, simplified, images, simplified_max_abs_error)
    onnx_output = run_onnx(simplified, images.numpy())
    with tempfile.TemporaryDirectory(prefix=f"export_{stem}-") as scratch:
        paths = onnx_to_tflite(simplified, scratch)
        checks = {precision: check(paths[precision], onnx_output) for precision in PRECISIONS}
        gate(checks)
        for precision in PRECISIONS:
            target = model_file(out_dir, stem, precision)
            shutil.copyfile(paths[precision], target)
            write_artifact(card_file(out_dir, stem, precision),
                           card(target, precision, checks[precision], simplified))
    return onnx_metrics, simplified_metrics, checks
