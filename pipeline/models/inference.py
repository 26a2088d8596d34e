"""The generators' inference graphs: what is exported, converted and evaluated.

* :class:`InferenceGenerator`: the student stripped down for inference (the ``strip_heads``
  stage). Training needs every auxiliary UpToRGB head; inference needs the blocks and the last head
  only. It holds exactly those modules (the student's own classes, run by the student's own block
  loop, so its output is bit-equal to the student's final image).
* :class:`ExportedTeacher`: the teacher in its exportable form, with the same interface.

Both take z or w as input and return NCHW or NHWC images (NHWC spares mobile runtimes a
transpose); :func:`inference_models` loads the pair from their snapshots.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.models.blazestylegan import BlazeStyleGAN, BlazeStyleGANConfig, run_blocks
from pipeline.models.stylegan2 import Generator, load_teacher
from pipeline.models.styles import broadcast_ws
from pipeline.seeding import fixed_latents
from pipeline.snapshot import rebuild_from_snapshot

InputKind = Literal["z", "w"]
Layout = Literal["nchw", "nhwc"]
INFERENCE_KIND = "blazestylegan-inference"  # snapshot kind of a stripped inference generator


class InferenceGenerator(nn.Module):
    """Student blocks + last UpToRGB head (+ the mapping network when the input is z).

    Args:
        config: the student's config.
        input:  ``"z"`` (N, z_dim) or ``"w"`` (N, w_dim, one w for every layer).
        layout: ``"nchw"`` (N, 3, R, R) or ``"nhwc"`` (N, R, R, 3) output, values in [-1, 1].
    """

    def __init__(self, config: BlazeStyleGANConfig, input: InputKind, layout: Layout):
        super().__init__()
        self.config, self.input, self.layout = config, input, layout
        student = BlazeStyleGAN(config)
        self.mapping = student.mapping if input == "z" else None
        self.const = student.synthesis.const
        self.blocks = student.synthesis.blocks
        self.head = student.synthesis.heads[-1]

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        w = self.mapping(latent) if self.mapping is not None else latent
        w4 = w[:, :, None, None]  # (N, w_dim, 1, 1): the style affines' input, the same everywhere
        *_, (_, x) = run_blocks(self.const, self.blocks, [w4] * self.config.num_ws)
        image = self.head(x, w4)
        return image.permute(0, 2, 3, 1) if self.layout == "nhwc" else image


def strip_aux_heads(student: BlazeStyleGAN, input: InputKind, layout: Layout) -> InferenceGenerator:
    """The inference generator of ``student``, with its weights (auxiliary heads dropped)."""
    model = InferenceGenerator(student.config, input, layout)
    last = f"synthesis.heads.{len(student.synthesis.heads) - 1}."
    renamed = {}
    for key, value in student.state_dict().items():
        if key.startswith(last):
            renamed["head." + key[len(last):]] = value
        elif key.startswith("synthesis.") and not key.startswith("synthesis.heads."):
            renamed[key[len("synthesis."):]] = value
        elif key.startswith("mapping.") and input == "z":
            renamed[key] = value
    model.load_state_dict(renamed)
    return model.eval()


def load_inference_generator(path: str | Path,
                             device: str | torch.device = "cpu") -> InferenceGenerator:
    """The stripped generator; its snapshot config holds the student's plus input and layout."""
    def build(c: dict) -> InferenceGenerator:
        return InferenceGenerator(BlazeStyleGANConfig.model_validate(c["student"]), c["input"],
                                  c["layout"])

    return rebuild_from_snapshot(path, INFERENCE_KIND, build, device)


class ExportedTeacher(nn.Module):
    """The teacher's inference graph in its exportable form: activation modulation (constant conv
    weights, which mobile converters need), constant noise, z or w in, NCHW or NHWC out. Same
    interface as the student's :class:`InferenceGenerator`."""

    def __init__(self, teacher: Generator, input: InputKind, layout: Layout):
        super().__init__()
        self.config, self.input, self.layout = teacher.config, input, layout
        self.generator = copy.deepcopy(teacher).set_fused(False).eval()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        G = self.generator
        w = G.mapping(latent) if self.input == "z" else latent
        image = G.synthesis(broadcast_ws(w, G.num_ws), noise_mode="const")
        return image.permute(0, 2, 3, 1) if self.layout == "nhwc" else image


def inference_models(student_path: str | Path, teacher_path: str | Path) -> dict[str, nn.Module]:
    """The stripped student and the teacher in its exportable form with the student's interface
    (input z or w, layout): {"student": ..., "teacher": ...}."""
    student = load_inference_generator(student_path)
    teacher = ExportedTeacher(load_teacher(teacher_path), student.input, student.layout)
    return {"student": student, "teacher": teacher}


def latent_shape(model: nn.Module, batch_size: int) -> tuple[int, int]:
    """(batch, z_dim or w_dim) of the input of an inference generator."""
    return batch_size, model.config.z_dim if model.input == "z" else model.config.w_dim


def check_latents(models: dict[str, nn.Module], count: int, seed: int, stream: str) -> torch.Tensor:
    """Fixed check latents for :func:`inference_models`: standard normal z, or for a w input the
    teacher's mapping of them (the w the generators were trained on)."""
    teacher = models["teacher"]
    z = fixed_latents(seed, count, teacher.config.z_dim, stream)
    with torch.no_grad():
        return z if teacher.input == "z" else teacher.generator.mapping(z)
