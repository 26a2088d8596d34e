"""DVC stage ``train_encoder``: train the GAN-inversion encoder of the distilled student
(resumable). Multi-GPU / multi-node: the same command under torchrun, e.g.
``torchrun --nproc-per-node 4 -m stages.train_encoder --params params.yaml ...``.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run
from pipeline.training.encoder import TrainEncoderConfig, train_encoder
from pipeline.training.run import RunPaths
from pipeline.training.runtime import is_main_process

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'train_encoder' section"),
    student: Path = typer.Option(..., help="the distilled student snapshot (distill stage)"),
    dataset: Path = typer.Option(..., help="dataset directory of real images (prepare stage)"),
    snapshot: Path = typer.Option(..., help="encoder snapshot to write (config, generator, split)"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory for curves and sample grids"),
    samples: Path = typer.Option(..., help="PNG: input | reconstruction pairs"),
    metrics: Path = typer.Option(..., help="JSON: held-out PSNR before and after training"),
    mobilenet_weights: Path = typer.Option(None, help="MobileNetV2 ImageNet weights in "
                                           "torchvision's format (backbone_weights: imagenet); "
                                           "default: the torch hub cache"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights in torchvision's format "
                                       "(perceptual: vgg19-imagenet); default: the torch hub "
                                       "cache"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    with stage_run("train_encoder"):
        config = load_config(params, "train_encoder", TrainEncoderConfig)
        log_config("train_encoder", config)
        result = train_encoder(config, student_path=student, dataset_dir=dataset, device=device,
                               mobilenet_weights=mobilenet_weights, vgg19_weights=vgg19_weights,
                               paths=RunPaths(snapshot=snapshot, state=state, live=live,
                                              samples=samples))
        if is_main_process():
            write_json(metrics, result)


if __name__ == "__main__":
    app()
