"""Distillation throughput (images/s of full student + discriminator steps, teacher forward
included), the counterpart of ``benchmark_teacher.py``.

A teacher of ``--teacher`` with random weights (throughput does not depend on them) is distilled
into ``--student`` by the real loop (``pipeline.training.distill.distill``) for ``--warmup`` +
``--steps`` steps; the rate is over the last ``--steps``, with the share of that time the loop
waited on its data loader (the discriminator's real images). Prints figures; asserts nothing.

    python scripts/benchmark_distill.py --teacher tiny-64 --student blaze-tiny-64 --batch 16
    python scripts/benchmark_distill.py --teacher ffhq-256 --student blaze-256 --batch 32 \
        --images ../shared/data/faces --stream --workers 2
"""

import logging
import tempfile
from pathlib import Path

import torch
import typer
import yaml
from benchmark_teacher import benchmark_dataset, loader_note, where

from pipeline.models.blazestylegan import PRESETS as STUDENTS
from pipeline.models.stylegan2 import PRESETS as TEACHERS
from pipeline.models.stylegan2 import TEACHER_KIND, Generator
from pipeline.snapshot import save_snapshot
from pipeline.training.distill import DistillConfig, distill
from pipeline.training.run import RunPaths

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def main(teacher: str = typer.Option("tiny-64", help=f"one of {sorted(TEACHERS)}"),
         student: str = typer.Option("blaze-tiny-64", help=f"one of {sorted(STUDENTS)}"),
         batch: int = typer.Option(16, help="images per step"),
         steps: int = typer.Option(20, help="timed steps"),
         warmup: int = typer.Option(5, help="untimed steps first"),
         images: Path = typer.Option(None, help="folder or zip of face images (default: "
                                     "procedural faces)"),
         stream: bool = typer.Option(False, help="read the images from disk at every step"),
         workers: int = typer.Option(0, help="DataLoader worker processes (0: in-process)"),
         device: str = typer.Option("auto", help="auto, cpu or cuda"),
         mixed_precision: bool = typer.Option(True, help="bfloat16 autocast on CUDA")) -> None:
    logging.basicConfig(level=logging.WARNING)
    teacher_config, student_config = TEACHERS[teacher], STUDENTS[student]
    params = yaml.safe_load(DEFAULTS.read_text())["distill"]
    config = DistillConfig.model_validate({
        **params, "student": student_config.to_dict(), "batch_size": batch,
        "steps": warmup + steps, "log_every": warmup, "checkpoint_every": 10 ** 9,
        "sample_every": 10 ** 9, "eval_every": 10 ** 9, "eval_latents": 1, "sample_grid": 1,
        "discriminator": {"channel_base": teacher_config.channel_base,
                          "channel_max": teacher_config.channel_max},
        "mixed_precision": mixed_precision, "data_workers": workers,
        "r1_gamma": 0.0002 * student_config.resolution ** 2 / batch})
    with benchmark_dataset(student_config.resolution, max(batch, 8), images, stream) as data, \
            tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        save_snapshot(tmp / "teacher.pt", TEACHER_KIND, Generator(teacher_config),
                      teacher_config.to_dict())
        metrics = distill(config, teacher_path=tmp / "teacher.pt", dataset_dir=data,
                          device=device, paths=RunPaths(snapshot=tmp / "student.pt",
                                                        state=tmp / "state.pt"))
    metrics = metrics["training"]
    rate = metrics["images_per_second"]
    print(f"{teacher} -> {student} batch {batch} on {where(device)}: {rate:.3g} images/s "
          f"({batch / rate:.3f} s per step); {loader_note(images, stream, workers, metrics)}")


if __name__ == "__main__":
    typer.run(main)
