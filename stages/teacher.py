"""DVC stage ``teacher``: the StyleGAN2 teacher, trained here or imported, as params choose.

``teacher.source: train`` trains it with the ``train_teacher`` section (resuming from its last
training state); a file name under ``--pretrained`` imports that checkpoint instead: a
rosinality/stylegan2-pytorch ``.pt`` or an NVlabs ``.pkl`` (read without executing any code it
contains). Either way the same teacher snapshot comes out, so ``dvc exp run -S
teacher.source=ffhq-256.pt`` switches with no edit of dvc.yaml.

Multi-GPU / multi-node training: run the same command under torchrun, e.g.
``torchrun --nproc-per-node 4 -m stages.teacher --params params.yaml ...``.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run
from pipeline.training.run import RunPaths
from pipeline.training.runtime import is_main_process
from pipeline.training.teacher import (
    TeacherConfig,
    TrainTeacherConfig,
    import_teacher,
    train_teacher,
    trained_summary,
)

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with the 'teacher' and 'train_teacher' "
                                "sections"),
    dataset: Path = typer.Option(..., help="dataset directory written by the prepare stage"),
    pretrained: Path = typer.Option(..., help="folder of pretrained checkpoints that "
                                    "teacher.source names"),
    snapshot: Path = typer.Option(..., help="teacher snapshot to write (generator + config)"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory for metrics and sample grids"),
    samples: Path = typer.Option(..., help="PNG grid of the teacher's samples"),
    metrics: Path = typer.Option(..., help="JSON: where the teacher came from, what it is"),
    device: str = typer.Option("auto", help="auto, cpu or cuda (training)"),
) -> None:
    with stage_run("teacher"):
        source = load_config(params, "teacher", TeacherConfig)
        log_config("teacher", source)
        if source.trains:
            config = load_config(params, "train_teacher", TrainTeacherConfig)
            log_config("train_teacher", config)
            trained = train_teacher(config, dataset_dir=dataset, device=device, paths=RunPaths(
                snapshot=snapshot, state=state, live=live, samples=samples))
        if not is_main_process():  # under torchrun, rank 0 alone writes (and imports)
            return
        if source.trains:
            result = trained_summary(config, trained)
        else:
            result = import_teacher(source, pretrained_dir=pretrained, dataset_dir=dataset,
                                    snapshot=snapshot, samples=samples)
        # The training state and logs outputs exist in both modes (DVC requires every declared
        # output); an import leaves a previous training's in place.
        state.parent.mkdir(parents=True, exist_ok=True)
        live.mkdir(parents=True, exist_ok=True)
        write_json(metrics, result)


if __name__ == "__main__":
    app()
