"""Teacher training throughput (images/s of full G+D steps, lazy regularizers included).

Runs the real training loop (``pipeline.training.teacher.train_teacher``) on a small synthetic
dataset for ``--warmup`` + ``--steps`` steps and reports the rate over the last ``--steps`` only.
Prints figures; asserts nothing.

    python scripts/benchmark_teacher.py --preset tiny-64 --batch 16
    python scripts/benchmark_teacher.py --preset ffhq-256 --batch 32 --device cuda
"""

import logging
import platform
import tempfile
from pathlib import Path

import torch
import typer
import yaml

from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.models.stylegan2 import PRESETS
from pipeline.training.run import RunPaths
from pipeline.training.teacher import TrainTeacherConfig, train_teacher

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def main(preset: str = typer.Option("tiny-64", help=f"one of {sorted(PRESETS)}"),
         batch: int = typer.Option(16, help="images per step"),
         steps: int = typer.Option(20, help="timed steps"),
         warmup: int = typer.Option(5, help="untimed steps first"),
         device: str = typer.Option("auto", help="auto, cpu or cuda"),
         mixed_precision: bool = typer.Option(True, help="bfloat16 autocast on CUDA")) -> None:
    logging.basicConfig(level=logging.WARNING)
    model = PRESETS[preset]
    params = yaml.safe_load(DEFAULTS.read_text())["train_teacher"]
    config = TrainTeacherConfig.model_validate({
        **params, "model": model.to_dict(), "batch_size": batch, "steps": warmup + steps,
        "log_every": warmup, "checkpoint_every": 10 ** 9, "sample_every": 10 ** 9,
        "sample_grid": 1, "mixed_precision": mixed_precision,
        "r1_gamma": 0.0002 * model.resolution ** 2 / batch, "pl_weight": 2.0})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepare_dataset("synthetic", tmp / "data", PrepareConfig(
            resolution=model.resolution, synthetic_images=max(batch, 8), seed=0, min_images=1,
            preview_images=1))
        metrics = train_teacher(config, dataset_dir=tmp / "data", device=device,
                                paths=RunPaths(snapshot=tmp / "g.pt", state=tmp / "state.pt"))
    where = torch.cuda.get_device_name() if torch.cuda.is_available() and device != "cpu" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"{preset} batch {batch} on {where}: {metrics['images_per_second']:.3g} images/s "
          f"({batch / metrics['images_per_second']:.3f} s per G+D step, "
          f"R1 every {config.r1_interval}, path length every {config.pl_interval})")


if __name__ == "__main__":
    typer.run(main)
