"""DVC stage ``distill``: distill the BlazeStyleGAN student from the teacher (resumable).

Multi-GPU / multi-node: run the same command under torchrun, e.g.
``torchrun --nproc-per-node 4 -m stages.distill --params params.yaml ...``.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run
from pipeline.training.distill import DistillConfig, distill
from pipeline.training.run import RunPaths
from pipeline.training.runtime import is_main_process

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'distill' section"),
    teacher: Path = typer.Option(..., help="teacher snapshot (the teacher stage's)"),
    dataset: Path = typer.Option(..., help="dataset directory of real images (prepare stage)"),
    snapshot: Path = typer.Option(..., help="student snapshot to write (EMA, every head, config)"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory for curves and sample grids"),
    samples: Path = typer.Option(..., help="PNG: teacher | student on the same fixed latents"),
    metrics: Path = typer.Option(..., help="JSON: student-vs-teacher PSNR / SSIM per level"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights in torchvision's format "
                                       "(perceptual: vgg19-imagenet); "
                                       "default: the torch hub cache"),
    discriminator: Path = typer.Option(None, help="discriminator snapshot to write (the "
                                       "stylizer's frozen feature network)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    with stage_run("distill"):
        config = load_config(params, "distill", DistillConfig)
        log_config("distill", config)
        result = distill(config, teacher_path=teacher, dataset_dir=dataset, device=device,
                         vgg19_weights=vgg19_weights, discriminator_path=discriminator,
                         paths=RunPaths(
                             snapshot=snapshot, state=state, live=live, samples=samples))
        if is_main_process():
            write_json(metrics, result)


if __name__ == "__main__":
    app()
