"""Train one teacher variant outside DVC and score it: a quick way to compare teacher settings.

Takes the ``train_teacher`` section of params.yaml, applies ``--set key=value`` overrides (dotted
keys reach into ``model``), trains with the stage's own code into ``--out``, then prints the SWD
(x 1e3, lower is better) of ``--count`` generated images against as many images of the prepared
dataset, at psi 1 and psi 0.7, and writes a grid of truncated samples. Asserts nothing.

Re-running with a higher ``steps`` and ``--resume`` continues the same run, as ``dvc repro`` does:

    python scripts/teacher_sweep.py --dataset data/prepared --out runs/lr2 \
        --set g_lr=0.002 --set d_lr=0.002
    python scripts/teacher_sweep.py --dataset data/prepared --out runs/lr2 \
        --set g_lr=0.002 --set d_lr=0.002 --set steps=2400 --resume
"""

import json
import logging
import time
from pathlib import Path

import torch
import typer
import yaml

from pipeline.config import read_yaml
from pipeline.data.dataset import FaceDataset
from pipeline.images import save_png
from pipeline.metrics import swd
from pipeline.models.stylegan2 import load_teacher
from pipeline.training.run import RunPaths
from pipeline.training.teacher import TrainTeacherConfig, sample_grid, train_teacher

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def apply_overrides(section: dict, overrides: list[str], name: str = "train_teacher") -> dict:
    """``section`` (params.yaml's ``name``) with each ``key=value`` (value parsed as YAML, dotted
    key) set."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set {item!r}: expected key=value")
        *parents, last = key.split(".")
        node = section
        for parent in parents:
            node = node[parent]
        if last not in node:
            raise typer.BadParameter(f"--set {item!r}: {name} has no key {key!r}")
        node[last] = yaml.safe_load(value)
    return section


def main(out: Path = typer.Option(..., help="directory for the run's snapshot, state and grids"),
         overrides: list[str] = typer.Option([], "--set", help="train_teacher key=value"),
         dataset: Path = typer.Option(..., help="dataset directory written by the prepare stage"),
         params: Path = typer.Option(DEFAULTS, help="params file to start from"),
         count: int = typer.Option(1000, help="images compared (generated and real)"),
         resume: bool = typer.Option(False, help="continue the training state in --out"),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = TrainTeacherConfig.model_validate(
        apply_overrides(read_yaml(params)["train_teacher"], overrides))
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "state.pt").unlink(missing_ok=True)
    start = time.perf_counter()
    train_teacher(config, dataset_dir=dataset, device=device, paths=RunPaths(
        snapshot=out / "teacher.pt", state=out / "state.pt", samples=out / "samples.png"))
    seconds = time.perf_counter() - start

    G = load_teacher(out / "teacher.pt").eval()
    data = FaceDataset(dataset)
    if len(data) < count:
        raise typer.BadParameter(f"{dataset} holds {len(data)} images, fewer than --count {count}")
    real = torch.stack([data[i] for i in range(count)])
    z = torch.randn(count, G.config.z_dim, generator=torch.Generator().manual_seed(123))
    reference = swd.SWD(swd.level_descriptors(real, 0), 0)
    result = {"overrides": overrides, "steps": config.steps, "seconds": round(seconds)}
    for psi in (1.0, 0.7):
        with torch.no_grad():
            fake = torch.cat([G(chunk, psi=psi) for chunk in z.split(100)]).clamp(-1, 1)
        distances = reference.distance(swd.level_descriptors(fake, 0))
        result.update({f"{k}@psi{psi}": round(v, 1) for k, v in distances.items()})
    save_png(out / f"grid_psi0.7_{config.steps}.png", sample_grid(G, z[:64], "cpu", psi=0.7))
    print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
