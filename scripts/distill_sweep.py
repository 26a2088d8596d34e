"""Distil one student variant outside DVC and score it: a quick way to compare distillation
settings, the counterpart of ``teacher_sweep.py``.

Takes the ``distill`` section of params.yaml, applies ``--set key=value`` overrides (dotted keys
reach into ``student``), distils ``--teacher`` with the stage's own code into ``--out``, then
prints the SWD (x 1e3, lower is better) of ``--count`` student images and of the teacher's on the
same latents (psi 1, quantized to 8 bits as the evaluate stage does), against as many images of
the prepared dataset, with the student-vs-teacher PSNR and SSIM per level; writes the teacher |
student grid. Asserts nothing. (``distill_and_score`` is the latency search's validation's too:
``validate_search.py``.)

    python scripts/distill_sweep.py --teacher models/teacher.pt --dataset data/prepared \
        --out runs/distill/heads32 --set 'student.head_channels=[16,16,32]'
"""

import json
import logging
import shutil
import time
from pathlib import Path

import torch
import typer
from teacher_sweep import apply_overrides

from pipeline.config import read_yaml
from pipeline.data.dataset import FaceDataset
from pipeline.metrics import swd
from pipeline.models.blazestylegan import load_student
from pipeline.models.stylegan2 import load_teacher
from pipeline.training.distill import DistillConfig, distill
from pipeline.training.run import RunPaths

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def quantized(images: torch.Tensor) -> torch.Tensor:
    """Images as an 8-bit file would hold them, back in [-1, 1]."""
    return torch.round((images.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def distill_and_score(config: DistillConfig, teacher: Path, dataset: Path, out: Path,
                      count: int = 500, resume: bool = False, device: str = "auto") -> dict:
    """Distil ``config`` into ``out`` and score it: SWD (x 1e3) of ``count`` student and teacher
    images against as many dataset images, the student-vs-teacher PSNR (and SSIM) per level,
    the training time."""
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "state.pt").unlink(missing_ok=True)
    start = time.perf_counter()
    result = distill(config, teacher_path=teacher, dataset_dir=dataset, device=device,
                     paths=RunPaths(snapshot=out / "student.pt", state=out / "state.pt",
                                    samples=out / "samples.png"))
    seconds = time.perf_counter() - start

    G, S = load_teacher(teacher).eval(), load_student(out / "student.pt").eval()
    data = FaceDataset(dataset)
    if len(data) < count:
        raise typer.BadParameter(f"{dataset} holds {len(data)} images, fewer than --count {count}")
    real = quantized(torch.stack([data[i] for i in range(count)]))
    reference = swd.SWD(swd.level_descriptors(real, 0), 0)
    z = torch.randn(count, G.config.z_dim, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        images = {"teacher": torch.cat([G(c, noise_mode="const") for c in z.split(100)]),
                  "student": torch.cat([S(c)[0] for c in z.split(100)])}
    summary = {"steps": config.steps, "seconds": round(seconds)}
    for name, generated in images.items():
        distances = reference.distance(swd.level_descriptors(quantized(generated), 0))
        summary.update({f"{name}_{k}": round(v, 1) for k, v in distances.items()})
    summary.update({k: round(v, 2) for k, v in result["final"].items()
                    if k.startswith(("psnr", "ssim"))})
    shutil.copy(out / "samples.png", out / f"samples_{config.steps}.png")
    return summary


def main(out: Path = typer.Option(..., help="directory for the run's snapshot, state and grid"),
         teacher: Path = typer.Option(..., help="teacher snapshot to distil"),
         overrides: list[str] = typer.Option([], "--set", help="distill key=value"),
         dataset: Path = typer.Option(..., help="dataset directory written by the prepare stage"),
         params: Path = typer.Option(DEFAULTS, help="params file to start from"),
         count: int = typer.Option(500, help="images compared (generated and real)"),
         resume: bool = typer.Option(False, help="continue the training state in --out"),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = DistillConfig.model_validate(
        apply_overrides(read_yaml(params)["distill"], overrides, "distill"))
    summary = distill_and_score(config, teacher, dataset, out, count, resume, device)
    print(json.dumps({"overrides": overrides, **summary}))


if __name__ == "__main__":
    typer.run(main)
