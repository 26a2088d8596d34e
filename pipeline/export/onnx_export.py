"""ONNX export of the inference generators, checked numerically against PyTorch.

:func:`export_onnx`: ``torch.onnx.export`` with the dynamo exporter, one self-contained file
(``external_data=False``), a fixed opset, static shapes, named input (``z`` or ``w``) and output
(``image``); ``onnx.checker`` with full shape inference; then ONNX Runtime on fixed latents
against PyTorch. Beyond a tolerance the step fails with
:class:`~pipeline.runtimes.ConversionMismatch` and writes nothing: converters have returned
success with wrong outputs before (docs/dependencies.md), so an exit code is never trusted on its
own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pydantic
import torch
from torch import nn

from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import PipelineError
from pipeline.io import atomic_path
from pipeline.models.inference import check_latents, inference_models
from pipeline.runtimes import check_max_abs, run_onnx

log = logging.getLogger(__name__)

OUTPUT_NAME = "image"


class ExportOnnxConfig(StageConfig):
    """The ``export_onnx`` section of params.yaml."""

    opset: Annotated[int, pydantic.Field(ge=17)]  # ONNX opset of the exported graphs
    batch_size: PositiveInt       # static batch of the exported graphs (1 for on-device use)
    check_latents: PositiveInt    # fixed latents of the check; a multiple of batch_size
    seed: int
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # ONNX Runtime vs PyTorch


def export_onnx(model: nn.Module, path: str | Path, opset: int, batch_size: int,
                latents: torch.Tensor, max_abs_error: float, input_name: str | None = None,
                output_name: str = OUTPUT_NAME) -> dict:
    """Export ``model`` (one input -> one output) to ONNX at ``path`` and verify it.

    Args:
        model:         an inference generator (input ``model.input``, "z" or "w"), or any model
                       of one input named ``input_name``.
        opset:         ONNX opset version.
        batch_size:    the static batch of the exported graph (1 for on-device use).
        latents:       (count, ...) fixed inputs for the check; count a multiple of batch_size.
        max_abs_error: largest allowed |ONNX Runtime - PyTorch| over every output value.
        input_name, output_name: the graph's tensor names (default: ``model.input``, "image").

    Returns:
        metrics: opset, node count, file size, max abs error against PyTorch.
    """
    import onnx

    model = model.eval()
    if len(latents) % batch_size:
        raise PipelineError(f"{len(latents)} check latents are not a multiple of the batch "
                            f"size {batch_size}")
    example = torch.zeros(batch_size, *latents.shape[1:])
    with torch.no_grad():
        expected = torch.cat([model(chunk) for chunk in latents.split(batch_size)]).numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                          opset_version=opset, input_names=[input_name or model.input],
                          output_names=[output_name], verbose=False)
        graph = onnx.load(str(tmp))
        onnx.checker.check_model(graph, full_check=True)
        error = check_max_abs(f"{path} (ONNX Runtime vs PyTorch)",
                               run_onnx(Path(tmp), latents.numpy()), expected, max_abs_error)
        metrics = {"opset": opset, "nodes": len(graph.graph.node), "bytes": tmp.stat().st_size,
                   "max_abs_error_vs_pytorch": error}
    log.info("%s: %d nodes, max abs error vs PyTorch %.3g", path, metrics["nodes"], error)
    return metrics


def export_generators(config: ExportOnnxConfig, *, student_path: str | Path,
                      teacher_path: str | Path, student_onnx: str | Path,
                      teacher_onnx: str | Path) -> dict:
    """Export the stripped student and the teacher (activation-modulation form) with the same
    interface, the student's (input z or w, layout), and verify both on :func:`check_latents`."""
    models = inference_models(student_path, teacher_path)
    latents = check_latents(models, config.check_latents, config.seed, "export")
    return {name: export_onnx(models[name], path, config.opset, config.batch_size, latents,
                              config.max_abs_error)
            for name, path in (("student", student_onnx), ("teacher", teacher_onnx))}
