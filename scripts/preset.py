"""The params of a real job, as `dvc exp run -S` overrides built from the model presets.

Prints one ``-S key=value`` per line (or, with ``--yaml``, the same values as a params.yaml
overlay), so that a job runs as an experiment, with no edit of params.yaml:

    dvc exp run $(python scripts/preset.py distill-ffhq-256 --teacher-file ffhq-256.pt \
        --data data/raw/ffhq-256.zip)
    dvc exp run $(python scripts/preset.py train-ffhq-256 --data data/raw/ffhq-256.zip)

Jobs:

* ``distill-ffhq-256``: import a pretrained 256 px FFHQ StyleGAN2 (under data/pretrained) and
  distil it into ``blaze-256`` with the paper's settings (batch 32, Adam 0.9 / 0.999 for the
  student, the VGG19 perceptual distance), then invert and stylize with ``encoder-256``;
* ``train-ffhq-256``: train the ``ffhq-256`` teacher here with StyleGAN2-ADA's ``paper256``
  configuration (batch 64, lr 0.0025, R1 gamma 1, EMA 20 kimg, path length 2), then the same.

Both read 256 px data: ``--data`` names an FFHQ folder or zip under data/raw (the ``faces``
param; tracked with ``dvc add``). The model values come from the presets in ``pipeline/models``
(never copied), the training lengths from ``--kimg`` (thousands of images).
"""

import json
import sys

import typer
import yaml

from pipeline.models.blazestylegan import PRESETS as STUDENTS
from pipeline.models.encoder import PRESETS as ENCODERS
from pipeline.models.stylegan2 import PRESETS as TEACHERS

JOBS = ("distill-ffhq-256", "train-ffhq-256")


def downstream(resolution: int, student: str, encoder: str, batch: int, kimg: int,
               workers: int, allow_download: bool) -> dict:
    """The sections after the teacher: the student, its encoder, the stylizers' sizes."""
    student_config = STUDENTS[student]
    teacher = TEACHERS[f"ffhq-{resolution}"]
    return {
        "prepare": {"resolution": resolution},
        "distill": {
            "student": student_config.to_dict(),
            "discriminator": {"channel_base": teacher.channel_base,
                              "channel_max": teacher.channel_max},
            "perceptual": "vgg19-imagenet", "allow_download": allow_download,
            "batch_size": batch, "steps": kimg * 1000 // batch, "g_betas": [0.9, 0.999],
            "r1_gamma": round(0.0002 * resolution ** 2 / batch, 6), "data_workers": workers,
            "mixed_precision": True, "checkpoint_every": 1000, "log_every": 100,
            "eval_every": 1000, "sample_every": 1000},
        "train_encoder": {
            "encoder": ENCODERS[encoder].to_dict(), "backbone_weights": "imagenet",
            "allow_download": allow_download, "perceptual": "vgg19-imagenet", "batch_size": batch,
            "data_workers": workers, "holdout_images": 1000, "checkpoint_every": 1000,
            "log_every": 100, "eval_every": 1000, "sample_every": 1000},
    }


def job(name: str, teacher_file: str | None, kimg: int, workers: int,
        allow_download: bool = False) -> dict:
    if name == "distill-ffhq-256":
        if teacher_file is None:
            raise typer.BadParameter("distill-ffhq-256 imports a teacher: give --teacher-file, "
                                     "a checkpoint's name under data/pretrained")
        return {"teacher": {"source": teacher_file},
                **downstream(256, "blaze-256", "encoder-256", 32, kimg, workers, allow_download)}
    batch = 64  # StyleGAN2-ADA paper256
    return {"teacher": {"source": "train"},
            "train_teacher": {
                "model": TEACHERS["ffhq-256"].to_dict(), "batch_size": batch,
                "steps": kimg * 1000 // batch, "g_lr": 0.0025, "d_lr": 0.0025, "r1_gamma": 1.0,
                "pl_weight": 2.0, "ema_kimg": 20.0, "style_mixing": 0.9, "data_workers": workers,
                "mixed_precision": True, "checkpoint_every": 1000, "log_every": 100,
                "sample_every": 1000},
            **downstream(256, "blaze-256", "encoder-256", 32, kimg, workers, allow_download)}


def flatten(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Leaf keys (dotted) and values; a list is a leaf."""
    items = []
    for key, value in values.items():
        if isinstance(value, dict):
            items += flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def override(key: str, value: object) -> str:
    """One ``-S`` argument: strings as they are, everything else as compact JSON (lists, numbers,
    true / false / null), which DVC's override grammar reads back as the same YAML values."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"-S {key}={text}"


def main(name: str = typer.Argument(..., help=f"one of {', '.join(JOBS)}"),
         teacher_file: str = typer.Option(None, help="distill-*: the pretrained checkpoint's "
                                          "file name under data/pretrained"),
         kimg: int = typer.Option(5000, help="training length of each trainer, in thousands "
                                  "of images"),
         workers: int = typer.Option(8, help="data-loader worker processes per trainer"),
         allow_download: bool = typer.Option(False, help="may the trainers download the "
                                             "ImageNet VGG19 / MobileNetV2 weights (sha256-"
                                             "checked)? Otherwise they must be in the torch hub "
                                             "cache"),
         data: str = typer.Option(..., help="the FFHQ folder or zip under data/raw (the faces "
                                  "param)"),
         as_yaml: bool = typer.Option(False, "--yaml", help="print a params.yaml overlay")) -> None:
    if name not in JOBS:
        raise typer.BadParameter(f"unknown job {name!r}; one of {', '.join(JOBS)}")
    values = {"faces": data, **job(name, teacher_file, kimg, workers, allow_download)}
    if as_yaml:
        sys.stdout.write(yaml.safe_dump(values, sort_keys=False))
    else:
        print("\n".join(override(k, v) for k, v in flatten(values)))


if __name__ == "__main__":
    typer.run(main)
