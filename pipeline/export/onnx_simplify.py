"""ONNX simplification with onnx-simplifier (constant folding, dead-node removal), checked
numerically: ONNX Runtime on the simplified model against the original, node counts before and
after. Reads and writes ONNX only: no model code is involved.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pydantic
import torch

from pipeline.config import PositiveInt, StageConfig
from pipeline.io import atomic_path
from pipeline.runtimes import ConversionMismatch, check_max_abs, load_onnx, run_onnx
from pipeline.seeding import fixed_latents

log = logging.getLogger(__name__)


class SimplifyOnnxConfig(StageConfig):
    """The ``simplify_onnx`` section of params.yaml."""

    check_latents: PositiveInt
    seed: int
    max_abs_error: Annotated[float, pydantic.Field(ge=0)]  # simplified vs original


def simplify_onnx(source: str | Path, path: str | Path, latents: torch.Tensor,
                  max_abs_error: float) -> dict:
    """Simplify the ONNX model at ``source`` into ``path`` with onnx-simplifier and verify it
    against the original on ``latents`` (both on ONNX Runtime).

    Returns:
        metrics: node counts before and after, max abs error against the original.
    """
    import onnx
    from onnxsim import simplify

    original = load_onnx(source)
    simplified, valid = simplify(original)
    if not valid:
        raise ConversionMismatch(f"{source}: onnx-simplifier could not validate its result")
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(simplified, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        error = check_max_abs(f"{path} (simplified vs original)",
                               run_onnx(Path(tmp), latents.numpy()),
                               run_onnx(Path(source), latents.numpy()), max_abs_error)
    metrics = {"nodes_before": len(original.graph.node), "nodes_after": len(simplified.graph.node),
               "max_abs_error_vs_original": error}
    log.info("%s: %d -> %d nodes, max abs error vs original %.3g", path, metrics["nodes_before"],
             metrics["nodes_after"], error)
    return metrics


def onnx_latents(path: str | Path, count: int, seed: int) -> torch.Tensor:
    """Standard normal check latents (count, dim) for the ONNX generator at ``path``."""
    dims = load_onnx(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return fixed_latents(seed, count, dims[1].dim_value, "simplify")


def simplify_generators(config: SimplifyOnnxConfig, *, student_onnx: str | Path,
                        teacher_onnx: str | Path, student_out: str | Path,
                        teacher_out: str | Path) -> dict:
    """:func:`simplify_onnx` on the student and the teacher, on standard normal check latents
    (the comparison is between two graphs of the same function)."""
    return {name: simplify_onnx(source, out,
                                onnx_latents(source, config.check_latents, config.seed),
                                config.max_abs_error)
            for name, source, out in (("student", student_onnx, student_out),
                                      ("teacher", teacher_onnx, teacher_out))}
