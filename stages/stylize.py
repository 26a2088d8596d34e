"""DVC stage ``stylize``: fine-tune a copy of the distilled student to one style (resumable).
Multi-GPU: the same command under torchrun, e.g.
``torchrun --nproc-per-node 4 -m stages.stylize ...``.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run
from pipeline.training.run import RunPaths
from pipeline.training.runtime import is_main_process
from pipeline.training.stylize import StylizeConfig, stylize

app = stage_app(__doc__)


@app.command()
def main(
    style: str = typer.Option(..., help="the style's name (recorded in the snapshot)"),
    params: Path = typer.Option(..., help="params file with a 'stylize' section"),
    styles: Path = typer.Option(..., help="the style's images (prepare_styles stage)"),
    encoder: Path = typer.Option(..., help="the encoder snapshot (train_encoder stage)"),
    student: Path = typer.Option(..., help="the distilled student the encoder inverts"),
    discriminator: Path = typer.Option(..., help="the distillation discriminator (frozen)"),
    dataset: Path = typer.Option(..., help="the dataset of the encoder's held-out faces"),
    snapshot: Path = typer.Option(..., help="stylized generator snapshot to write"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory for curves and sample grids"),
    samples: Path = typer.Option(..., help="PNG: style images, faces, base, stylized"),
    metrics: Path = typer.Option(..., help="JSON: the loss terms before and after"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights in torchvision's format "
                                       "(feature_network: vgg19-imagenet); default: the torch "
                                       "hub cache"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    with stage_run("stylize"):
        config = load_config(params, "stylize", StylizeConfig)
        log_config("stylize", config)
        result = stylize(config, style=style, styles_dir=styles, encoder_path=encoder,
                         student_path=student, discriminator_path=discriminator,
                         dataset_dir=dataset, device=device, vgg19_weights=vgg19_weights,
                         paths=RunPaths(snapshot=snapshot, state=state, live=live,
                                        samples=samples))
        if is_main_process():
            write_json(metrics, result)


if __name__ == "__main__":
    app()
