"""DVC stage ``train_teacher``: train the StyleGAN2 teacher (resumes from its last training state).

Multi-GPU / multi-node: run the same command under torchrun, e.g.
``torchrun --nproc-per-node 4 -m stages.train_teacher --params params.yaml ...``.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.stage import stage_app, stage_run
from pipeline.training.run import RunPaths
from pipeline.training.teacher import TrainTeacherConfig, train_teacher

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'train_teacher' section"),
    dataset: Path = typer.Option(..., help="dataset directory written by the prepare stage"),
    snapshot: Path = typer.Option(..., help="inference snapshot to write (EMA generator + config)"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory for metrics and sample grids"),
    samples: Path = typer.Option(..., help="PNG grid of the final EMA generator's samples"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    with stage_run("train_teacher"):
        config = load_config(params, "train_teacher", TrainTeacherConfig)
        log_config("train_teacher", config)
        train_teacher(config, dataset_dir=dataset, device=device, paths=RunPaths(
            snapshot=snapshot, state=state, live=live, samples=samples))


if __name__ == "__main__":
    app()
