"""ONNX export and simplification, each checked numerically against the step before it.

* :func:`export_onnx`: ``torch.onnx.export`` with the dynamo exporter, one self-contained file
  (``external_data=False``), a fixed opset, static shapes, named input (``z`` or ``w``) and output
  (``image``); ``onnx.checker`` with full shape inference; then ONNX Runtime on fixed latents
  against PyTorch.
* :func:`simplify_onnx`: onnx-simplifier (constant folding, dead-node removal), node counts before
  and after, ONNX Runtime on the simplified model against the original.

Beyond a tolerance the step fails with :class:`ConversionMismatch` and writes nothing: converters
have returned success with wrong outputs before (docs/dependencies.md), so an exit code is never
trusted on its own.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import PipelineError
from pipeline.io import atomic_path
from pipeline.models.strip import InputKind, Layout, load_inference_generator
from pipeline.models.stylegan2 import Generator, load_teacher
from pipeline.training.runtime import fixed_latents

log = logging.getLogger(__name__)

OUTPUT_NAME = "image"


class ExportOnnxConfig(StageConfig):
    """The ``export_onnx`` section of params.yaml."""

    opset: Annotated[int, pydantic.Field(ge=17)]  # ONNX opset of the exported graphs
    batch_size: PositiveInt       # static batch of the exported graphs (1 for on-device use)
    check_latents: PositiveInt    # fixed latents of the check; a multiple of batch_size
    seed: int
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # ONNX Runtime vs PyTorch


class SimplifyOnnxConfig(StageConfig):
    """The ``simplify_onnx`` section of params.yaml."""

    check_latents: PositiveInt
    seed: int
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # simplified vs original


class ConversionMismatch(PipelineError):
    """A converted model's outputs differ from its source's beyond the tolerance."""


class ExportedTeacher(nn.Module):
    """The teacher's inference graph in its exportable form: activation modulation (constant conv
    weights, which mobile converters need), constant noise, z or w in, NCHW or NHWC out. Same
    interface as the student's :class:`~pipeline.models.strip.InferenceGenerator`."""

    def __init__(self, teacher: Generator, input: InputKind, layout: Layout):
        super().__init__()
        self.config, self.input, self.layout = teacher.config, input, layout
        self.generator = copy.deepcopy(teacher).set_fused(False).eval()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        G = self.generator
        w = G.mapping(latent) if self.input == "z" else latent
        image = G.synthesis(w[:, None].expand(-1, G.num_ws, -1), noise_mode="const")
        return image.permute(0, 2, 3, 1) if self.layout == "nhwc" else image


def latent_shape(model: nn.Module, batch_size: int) -> tuple[int, int]:
    """(batch, z_dim or w_dim) of a generator exported with :func:`export_onnx`."""
    return batch_size, model.config.z_dim if model.input == "z" else model.config.w_dim


def run_onnx(model: str | Path | bytes, latents: np.ndarray) -> np.ndarray:
    """Outputs of an ONNX generator with a static batch for ``latents`` (count, dim), the count a
    multiple of that batch, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    (input_meta,) = session.get_inputs()
    batch = input_meta.shape[0]
    if len(latents) % batch:
        raise PipelineError(f"{model if isinstance(model, Path) else 'ONNX model'}: "
                            f"{len(latents)} check latents are not a multiple of its batch {batch}")
    return np.concatenate([session.run(None, {input_meta.name: latents[i:i + batch]})[0]
                           for i in range(0, len(latents), batch)])


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest |actual - expected| over every value (NaN if either holds a NaN)."""
    return float(np.abs(actual.astype(np.float64) - expected).max())


def _check_max_abs(name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    if actual.shape != expected.shape:
        raise ConversionMismatch(f"{name}: output shape {actual.shape}, expected {expected.shape}")
    error = max_abs_error(actual, expected)
    if not error <= tolerance:  # also catches NaN
        raise ConversionMismatch(f"{name}: max abs error {error:.3g} is beyond the tolerance "
                                 f"{tolerance:g}; nothing written")
    return error


def export_onnx(model: nn.Module, path: str | Path, opset: int, batch_size: int,
                latents: torch.Tensor, max_abs_error: float) -> dict:
    """Export ``model`` (latent -> image) to ONNX at ``path`` and verify it.

    Args:
        model:         an inference generator with ``input`` ("z" or "w") and ``config``.
        opset:         ONNX opset version.
        batch_size:    the static batch of the exported graph (1 for on-device use).
        latents:       (count, dim) fixed latents for the check; count a multiple of batch_size.
        max_abs_error: largest allowed |ONNX Runtime - PyTorch| over every output value.

    Returns:
        metrics: opset, node count, file size, max abs error against PyTorch.
    """
    import onnx

    model = model.eval()
    if len(latents) % batch_size:
        raise PipelineError(f"{len(latents)} check latents are not a multiple of the batch "
                            f"size {batch_size}")
    example = torch.zeros(latent_shape(model, batch_size))
    with torch.no_grad():
        expected = torch.cat([model(chunk) for chunk in latents.split(batch_size)]).numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                          opset_version=opset, input_names=[model.input],
                          output_names=[OUTPUT_NAME], verbose=False)
        graph = onnx.load(str(tmp))
        onnx.checker.check_model(graph, full_check=True)
        error = _check_max_abs(f"{path} (ONNX Runtime vs PyTorch)",
                               run_onnx(Path(tmp), latents.numpy()), expected, max_abs_error)
        metrics = {"opset": opset, "nodes": len(graph.graph.node), "bytes": tmp.stat().st_size,
                   "max_abs_error_vs_pytorch": error}
    log.info("%s: %d nodes, max abs error vs PyTorch %.3g", path, metrics["nodes"], error)
    return metrics


def simplify_onnx(source: str | Path, path: str | Path, latents: torch.Tensor,
                  max_abs_error: float) -> dict:
    """Simplify the ONNX model at ``source`` into ``path`` with onnx-simplifier and verify it
    against the original on ``latents`` (both on ONNX Runtime).

    Returns:
        metrics: node counts before and after, max abs error against the original.
    """
    import onnx
    from onnxsim import simplify

    original = onnx.load(str(source))
    simplified, valid = simplify(original)
    if not valid:
        raise ConversionMismatch(f"{source}: onnx-simplifier could not validate its result")
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(simplified, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        error = _check_max_abs(f"{path} (simplified vs original)",
                               run_onnx(Path(tmp), latents.numpy()),
                               run_onnx(Path(source), latents.numpy()), max_abs_error)
    metrics = {"nodes_before": len(original.graph.node), "nodes_after": len(simplified.graph.node),
               "max_abs_error_vs_original": error}
    log.info("%s: %d -> %d nodes, max abs error vs original %.3g", path, metrics["nodes_before"],
             metrics["nodes_after"], error)
    return metrics


def export_generators(student_path: str | Path, teacher_path: str | Path,
                      student_onnx: str | Path, teacher_onnx: str | Path,
                      config: ExportOnnxConfig) -> dict:
    """Export the stripped student and the teacher (activation-modulation form) with the same
    interface, the student's (input z or w, layout), and verify both on :func:`check_latents`."""
    models = inference_models(student_path, teacher_path)
    latents = check_latents(models, config.check_latents, config.seed, "export")
    return {name: export_onnx(models[name], path, config.opset, config.batch_size, latents,
                              config.max_abs_error)
            for name, path in (("student", student_onnx), ("teacher", teacher_onnx))}


def inference_models(student_path: str | Path, teacher_path: str | Path) -> dict[str, nn.Module]:
    """The stripped student and the teacher in its exportable form with the student's interface
    (input z or w, layout): {"student": ..., "teacher": ...}."""
    student = load_inference_generator(student_path)
    teacher = ExportedTeacher(load_teacher(teacher_path), student.input, student.layout)
    return {"student": student, "teacher": teacher}


def check_latents(models: dict[str, nn.Module], count: int, seed: int, stream: str) -> torch.Tensor:
    """Fixed check latents for :func:`inference_models`: standard normal z, or for a w input the
    teacher's mapping of them (the w the generators were trained on)."""
    teacher = models["teacher"]
    z = fixed_latents(seed, count, teacher.config.z_dim, stream)
    with torch.no_grad():
        return z if teacher.input == "z" else teacher.generator.mapping(z)


def onnx_latents(path: str | Path, count: int, seed: int) -> torch.Tensor:
    """Standard normal check latents (count, dim) for the ONNX generator at ``path``."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return fixed_latents(seed, count, dims[1].dim_value, "simplify")


def simplify_generators(student_onnx: str | Path, teacher_onnx: str | Path,
                        student_out: str | Path, teacher_out: str | Path,
                        config: SimplifyOnnxConfig) -> dict:
    """:func:`simplify_onnx` on the student and the teacher, on standard normal check latents
    (the comparison is between two graphs of the same function)."""
    return {name: simplify_onnx(source, out,
                                onnx_latents(source, config.check_latents, config.seed),
                                config.max_abs_error)
            for name, source, out in (("student", student_onnx, student_out),
                                      ("teacher", teacher_onnx, teacher_out))}
