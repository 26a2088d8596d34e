"""The ``strip_heads`` stage's library: the student's inference generator, verified bit-equal.

Training needs every auxiliary UpToRGB head; the deployed model keeps the blocks and the last
head only (``pipeline.models.inference``). The stripped model is checked against the full student on
fixed latents: same device, same inputs, outputs equal bit for bit, or nothing is written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import pydantic
import torch

from pipeline.config import StageConfig
from pipeline.errors import PipelineError
from pipeline.models.blazestylegan import load_student
from pipeline.models.complexity import count_flops, count_parameters
from pipeline.models.inference import INFERENCE_KIND, InputKind, Layout, strip_aux_heads
from pipeline.models.styles import broadcast_ws
from pipeline.seeding import fixed_latents
from pipeline.snapshot import save_snapshot

log = logging.getLogger(__name__)


class StripHeadsConfig(StageConfig):
    """The ``strip_heads`` section of params.yaml."""

    input: InputKind       # z: mapping network included; w: the app supplies w (e.g. an encoder)
    layout: Layout         # output layout; nhwc spares TFLite a transpose
    check_latents: Annotated[int, pydantic.Field(ge=1)]  # latents of the bit-equality check
    seed: int


class StrippingMismatch(PipelineError):
    """The stripped generator's output differs from the full student's."""


def strip_heads(config: StripHeadsConfig, *, student_path: str | Path,
                snapshot_path: str | Path) -> dict:
    """Write the inference generator of the student at ``student_path``; return its metrics.

    Raises:
        StrippingMismatch: the outputs are not bit-equal (no snapshot is written).

    Returns:
        parameter and FLOP counts of the full student and the stripped model (mapping network
        included when the input is z), and the check's maximum absolute difference (0).
    """
    student = load_student(student_path)
    model = strip_aux_heads(student, config.input, config.layout)

    z = fixed_latents(config.seed, config.check_latents, student.config.z_dim, "strip_heads")
    with torch.no_grad():
        w = student.mapping(z)
        expected, _ = student.synthesis(broadcast_ws(w, student.num_ws))
        if config.layout == "nhwc":
            expected = expected.permute(0, 2, 3, 1)
        latent = z if config.input == "z" else w
        actual = model(latent)
    if actual.shape != expected.shape:
        raise StrippingMismatch(f"{student_path}: the stripped generator returns "
                                f"{tuple(actual.shape)}, the full student {tuple(expected.shape)}")
    max_abs = float((actual - expected).abs().max())
    if not torch.equal(actual, expected):
        raise StrippingMismatch(f"{student_path}: the stripped generator differs from the full "
                                f"student's final image (max abs {max_abs:.3g}); nothing written")

    def full_forward():  # what the stripped model replaces: the same input, every head
        w_full = student.mapping(z[:1]) if config.input == "z" else w[:1]
        return student.synthesis(broadcast_ws(w_full, student.num_ws))

    full_params = count_parameters(student.synthesis) + (
        count_parameters(student.mapping) if config.input == "z" else 0)
    metrics = {
        "input": config.input, "layout": config.layout, "check_latents": config.check_latents,
        "max_abs_diff": max_abs,
        "params_full": full_params, "params_inference": count_parameters(model),
        "gflops_full": count_flops(full_forward) / 1e9,
        "gflops_inference": count_flops(lambda: model(latent[:1])) / 1e9,
    }
    if not (metrics["params_inference"] < metrics["params_full"]
            and metrics["gflops_inference"] < metrics["gflops_full"]):
        raise StrippingMismatch(f"{student_path}: stripping removed nothing ({metrics})")
    config_dict = {"student": student.config.to_dict(), "input": config.input,
                   "layout": config.layout}
    save_snapshot(snapshot_path, INFERENCE_KIND, model, config_dict,
                  meta={"student": str(student_path), **metrics})
    log.info("inference generator: %d params (full student %d), %.4f GFLOPs (full %.4f); "
             "bit-equal on %d latents", metrics["params_inference"], metrics["params_full"],
             metrics["gflops_inference"], metrics["gflops_full"], config.check_latents)
    return metrics
