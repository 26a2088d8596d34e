"""Inference snapshots of the generators: each rebuilt from the config it carries (no params.yaml).

Kinds: the StyleGAN2 teacher (trained or imported), the BlazeStyleGAN student with every head
(written by ``distill``), and its stripped inference generator (written by ``strip_heads``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import pydantic
import torch
from torch import nn

from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.strip import InferenceGenerator
from pipeline.models.stylegan2 import Generator, StyleGAN2Config
from pipeline.training.checkpoint import CheckpointError, load_snapshot

TEACHER_KIND = "stylegan2-generator"
STUDENT_KIND = "blazestylegan-student"
INFERENCE_KIND = "blazestylegan-inference"

ModelT = TypeVar("ModelT", bound=nn.Module)


def _rebuild(path: str | Path, kind: str, build: Callable[[dict], ModelT],
             device: str | torch.device) -> ModelT:
    payload = load_snapshot(path, kind)
    try:
        model = build(payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (pydantic.ValidationError, RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: snapshot does not match this version's {kind} "
                              f"({str(e).splitlines()[0]}...); re-create it") from None
    return model.to(device).eval().requires_grad_(False)


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """The teacher's EMA generator."""
    return _rebuild(path, TEACHER_KIND, lambda c: Generator(StyleGAN2Config.model_validate(c)), device)


def load_student(path: str | Path, device: str | torch.device = "cpu") -> BlazeStyleGAN:
    """The distilled student's EMA generator, every auxiliary head included."""
    return _rebuild(path, STUDENT_KIND,
                    lambda c: BlazeStyleGAN(BlazeStyleGANConfig.model_validate(c)), device)


def load_inference_generator(path: str | Path,
                             device: str | torch.device = "cpu") -> InferenceGenerator:
    """The stripped inference generator; its config holds the student's plus input and layout."""
    def build(c: dict) -> InferenceGenerator:
        return InferenceGenerator(BlazeStyleGANConfig.model_validate(c["student"]), c["input"],
                                  c["layout"])

    return _rebuild(path, INFERENCE_KIND, build, device)
