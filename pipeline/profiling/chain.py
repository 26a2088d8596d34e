"""Latency measured on the runtime that ships, for models built on the spot: each one exported by
the pipeline's own chain (ONNX, onnxsim, onnx2tf float32 and float16, the float32 model checked
against PyTorch), then all of them timed on LiteRT in one process, in interleaved rounds, with the
machine's sgemm peak measured in the same process. Used by the benchmark scripts (the student's
units, ``scripts/profile_student.py``; whole graphs side by side,
``scripts/benchmark_students.py``); the latency search's speed-model data is measured the same
way (:mod:`pipeline.profiling.speed_data`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.export.tflite import onnx_to_tflite
from pipeline.metrics import latency
from pipeline.models.complexity import count_flops
from pipeline.runtimes import (
    ConversionMismatch,
    max_abs_error,
    psnr_db,
    run_tflite,
    tflite_operators,
)

OPSET = 18


@dataclass
class Exported:
    """A model through the chain: its TFLite files, FLOPs, checks and operators."""

    tflite: dict[str, Path]          # {"float32": ..., "float16": ...}
    gflops: float                    # 2 x MACs per run, batch 1
    float32_max_abs_error: float     # float32 TFLite vs PyTorch
    float16_psnr_db: float           # float16 TFLite vs PyTorch, worst check input
    operators: dict[str, int] = field(default_factory=dict)  # float32 TFLite ops by name


def export_for_timing(model: nn.Module, inputs: torch.Tensor, out_dir: Path, layout: str,
                      max_abs_error_tol: float = 1e-4) -> Exported:
    """Take ``model`` (one input, ``inputs`` (count, dim) to check it on) through the chain into
    ``out_dir``; raise :class:`ConversionMismatch` when the float32 TFLite model is farther than
    ``max_abs_error_tol`` from PyTorch. ``layout`` is the model's 4-D output's, ``"nchw"`` or
    ``"nhwc"`` (onnx2tf gives every 4-D output in NHWC: an NCHW one is compared transposed,
    whatever its shape; a square one cannot tell), or ``None`` for an output of another rank."""
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out_dir / "model.onnx", OPSET, 1, inputs, 1e-3, input_name="input",
                output_name="output")
    simplify_onnx(out_dir / "model.onnx", out_dir / "simplified.onnx", inputs, 1e-4)
    with tempfile.TemporaryDirectory(prefix="profile-") as scratch:
        converted = onnx_to_tflite(out_dir / "simplified.onnx", scratch)
        paths = {precision: out_dir / f"model_{precision}.tflite" for precision in converted}
        for precision, path in converted.items():
            shutil.copyfile(path, paths[precision])
    with torch.no_grad():
        expected = model(inputs).numpy()
    outputs = {p: run_tflite(path, inputs.numpy()) for p, path in paths.items()}
    if (expected.ndim == 4) != (layout is not None):
        raise ValueError(f"layout {layout!r} for a {expected.ndim}-D output")
    if layout == "nchw":
        expected = expected.transpose(0, 2, 3, 1)
    error = max_abs_error(outputs["float32"], expected)
    if not error <= max_abs_error_tol:
        raise ConversionMismatch(f"{out_dir}: float32 TFLite vs PyTorch max abs error "
                                 f"{error:.3g}, beyond {max_abs_error_tol:g}")
    flops = count_flops(lambda: model(inputs[:1]))
    return Exported(tflite=paths, gflops=flops / 1e9, float32_max_abs_error=error,
                    float16_psnr_db=float(psnr_db(outputs["float16"], expected).min()),
                    operators=dict(tflite_operators(paths["float32"])))


def time_interleaved(models: Mapping[str, Path], threads: int, warmup: int, runs: int,
                     rounds: int, shuffle_seed: int | None = None) -> dict[str, dict[str, Any]]:
    """p50 latency (ms) of each TFLite model on LiteRT: ``rounds`` rounds, each timing every model
    once (warm-up, then ``runs`` timed runs, batch 1) in turn, so that a slow spell of the machine
    touches all of them alike; with ``shuffle_seed``, each round in its own shuffled order. Per
    model: the median of the rounds' p50s, their spread (max - min), their coefficient of
    variation (standard deviation / mean) and every round's p50."""
    runners = {name: latency.litert_runner(path, threads) for name, path in models.items()}
    p50s: dict[str, list[float]] = {name: [] for name in models}
    order = list(models)
    rng = np.random.default_rng(shuffle_seed)
    for _ in range(rounds):
        if shuffle_seed is not None:
            rng.shuffle(order)
        for name in order:
            p50s[name].append(latency.time_runs(runners[name], warmup, runs)["p50_ms"])
    return {name: summarize_rounds(v) for name, v in p50s.items()}


def summarize_rounds(p50s: list[float]) -> dict[str, Any]:
    """The median, spread, coefficient of variation and list of a model's per-round p50s."""
    values = np.asarray(p50s)
    return {"p50_ms": float(np.median(values)), "spread_ms": float(values.max() - values.min()),
            "cv": float(values.std() / values.mean()), "rounds_ms": [float(v) for v in values]}


def throughput(ms: float, gflops: float, peak_gflops: float) -> dict[str, float]:
    """GFLOPs per run, GFLOP/s achieved at ``ms`` per run and that as a share of the sgemm
    peak (NaN for a time that is not positive: a unit lost in the noise of the overhead)."""
    rate = gflops / (ms / 1e3) if ms > 0 else float("nan")
    return {"gflops": gflops, "gflops_per_s": rate, "peak_share": rate / peak_gflops}
