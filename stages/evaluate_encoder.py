"""DVC stage ``evaluate_encoder``: the inversion encoder (PyTorch and its float16 TFLite) against
the mean face and optimisation-based inversion, on held-out real images and synthetic pairs:
PSNR, SSIM, W+ error, seconds per image, LiteRT latency; and a picture input | encoder |
optimiser."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.images import save_png
from pipeline.io import write_json
from pipeline.metrics.inversion import EvaluateEncoderConfig, evaluate_encoder
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with an 'evaluate_encoder' section"),
    encoder: Path = typer.Option(..., help="encoder snapshot (train_encoder)"),
    student: Path = typer.Option(..., help="the student snapshot the encoder inverts (distill)"),
    dataset: Path = typer.Option(..., help="the dataset the encoder was trained on (prepare)"),
    tflite: Path = typer.Option(..., help="directory of the exported encoder (export_encoder)"),
    metrics: Path = typer.Option(..., help="JSON: scores, seconds per image, latency"),
    grid: Path = typer.Option(..., help="PNG: held-out input | encoder | optimiser"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights, when the encoder was trained "
                                       "with perceptual: vgg19-imagenet"),
) -> None:
    with stage_run("evaluate_encoder"):
        config = load_config(params, "evaluate_encoder", EvaluateEncoderConfig)
        log_config("evaluate_encoder", config)
        result, picture = evaluate_encoder(config, encoder_path=encoder, student_path=student,
                                           dataset_dir=dataset, tflite_dir=tflite,
                                           vgg19_weights=vgg19_weights)
        write_json(metrics, result)
        save_png(grid, picture)


if __name__ == "__main__":
    app()
