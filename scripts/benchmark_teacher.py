"""Teacher training throughput (images/s of full G+D steps, lazy regularizers included).

Runs the real training loop (``pipeline.training.teacher.train_teacher``) for ``--warmup`` +
``--steps`` steps and reports the rate over the last ``--steps`` only, with the share of that
time the loop waited on its data loader. The images are procedural faces, or a folder / zip of
real ones (``--images``), prepared at the preset's resolution; ``--stream`` reads them from disk
at every step as a dataset larger than memory would be, decoded by ``--workers`` DataLoader
processes (0: in the training process). Prints figures; asserts nothing.

    python scripts/benchmark_teacher.py --preset tiny-64 --batch 16
    python scripts/benchmark_teacher.py --preset ffhq-256 --batch 32 --images ../shared/data/faces \
        --stream --workers 2
    python scripts/benchmark_teacher.py --preset ffhq-256 --batch 32 --device cuda --workers 8
    python scripts/benchmark_teacher.py --preset ffhq-256 --images ../shared/data/faces \
        --decode-only     # what one image costs the process that decodes it
"""

import contextlib
import logging
import platform
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import typer
import yaml

from pipeline.data.dataset import FaceDataset
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.models.stylegan2 import PRESETS
from pipeline.training.run import RunPaths
from pipeline.training.teacher import TrainTeacherConfig, train_teacher

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


@contextlib.contextmanager
def benchmark_dataset(resolution: int, count: int, images: Path | None,
                      stream: bool) -> Iterator[Path]:
    """A prepared dataset in a temporary folder: ``count`` procedural faces, or ``images``; with
    ``stream``, trainers read it from disk at every step (not from an in-memory copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data"
        prepare_dataset("synthetic" if images is None else str(images), out, PrepareConfig(
            resolution=resolution, synthetic_images=count, seed=0, min_images=1,
            preview_images=1))
        saved = FaceDataset.AUTO_MEMORY_BYTES
        FaceDataset.AUTO_MEMORY_BYTES = 0 if stream else saved
        try:
            yield out
        finally:
            FaceDataset.AUTO_MEMORY_BYTES = saved


def where(device: str) -> str:
    if torch.cuda.is_available() and device != "cpu":
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def loader_note(images: Path | None, stream: bool, workers: int, metrics: dict) -> str:
    data = "procedural faces" if images is None else str(images)
    return (f"{data}, {'streamed from disk' if stream else 'in memory'}, {workers} workers: "
            f"{100 * metrics.get('data_wait_share', 0.0):.1f}% of the time waiting for data")


def main(preset: str = typer.Option("tiny-64", help=f"one of {sorted(PRESETS)}"),
         batch: int = typer.Option(16, help="images per step"),
         steps: int = typer.Option(20, help="timed steps"),
         warmup: int = typer.Option(5, help="untimed steps first"),
         images: Path = typer.Option(None, help="folder or zip of face images (default: "
                                     "procedural faces)"),
         stream: bool = typer.Option(False, help="read the images from disk at every step"),
         workers: int = typer.Option(0, help="DataLoader worker processes (0: in-process)"),
         device: str = typer.Option("auto", help="auto, cpu or cuda"),
         mixed_precision: bool = typer.Option(True, help="bfloat16 autocast on CUDA"),
         decode_only: bool = typer.Option(False, help="only time decoding the prepared images "
                                          "from disk, one by one")) -> None:
    logging.basicConfig(level=logging.WARNING)
    model = PRESETS[preset]
    if decode_only:
        with benchmark_dataset(model.resolution, max(batch, 8), images, stream=True) as data:
            dataset = FaceDataset(data, in_memory=False)
            start = time.perf_counter()
            for i in range(len(dataset)):
                dataset.pixels(i)
            per_image = (time.perf_counter() - start) / len(dataset)
        print(f"{model.resolution} px: {per_image * 1e3:.2f} ms per image decoded from disk "
              f"({len(dataset)} images), {per_image * batch * 1e3:.0f} ms per batch of {batch}")
        return
    params = yaml.safe_load(DEFAULTS.read_text())["train_teacher"]
    config = TrainTeacherConfig.model_validate({
        **params, "model": model.to_dict(), "batch_size": batch, "steps": warmup + steps,
        "log_every": warmup, "checkpoint_every": 10 ** 9, "sample_every": 10 ** 9,
        "sample_grid": 1, "mixed_precision": mixed_precision, "data_workers": workers,
        "r1_gamma": 0.0002 * model.resolution ** 2 / batch, "pl_weight": 2.0})
    with benchmark_dataset(model.resolution, max(batch, 8), images, stream) as data, \
            tempfile.TemporaryDirectory() as tmp:
        metrics = train_teacher(config, dataset_dir=data, device=device, paths=RunPaths(
            snapshot=Path(tmp) / "g.pt", state=Path(tmp) / "state.pt"))
    print(f"{preset} batch {batch} on {where(device)}: {metrics['images_per_second']:.3g} "
          f"images/s ({batch / metrics['images_per_second']:.3f} s per G+D step, R1 every "
          f"{config.r1_interval}, path length every {config.pl_interval}); "
          f"{loader_note(images, stream, workers, metrics)}")


if __name__ == "__main__":
    typer.run(main)
