"""DVC stage ``evaluate_stylizers``: every style's stylizer on held-out faces: style distance
to its style images (Gram, SWD) and content against the unstylized baseline, the float16 TFLite
model scored the same way, LiteRT latency; and the picture (styles along the top, faces down the
left)."""

from pathlib import Path

import typer

from pipeline.artifacts.base import write_artifact
from pipeline.config import load_config, log_config, read_yaml
from pipeline.errors import ConfigError
from pipeline.images import save_png
from pipeline.metrics.stylizer import EvaluateStylizersConfig, evaluate_stylizers
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with 'styles' and 'evaluate_stylizers'"),
    encoder: Path = typer.Option(..., help="encoder snapshot (train_encoder)"),
    student: Path = typer.Option(..., help="the student the encoder inverts (distill)"),
    discriminator: Path = typer.Option(..., help="the distillation discriminator"),
    dataset: Path = typer.Option(..., help="the dataset of the encoder's held-out faces"),
    stylized: Path = typer.Option(..., help="directory of the stylized generators <style>.pt"),
    styles: Path = typer.Option(..., help="directory of the style images <style>/"),
    stylizers: Path = typer.Option(..., help="directory of the exported stylizers <style>/"),
    metrics: Path = typer.Option(..., help="JSON: the scores of every style"),
    picture: Path = typer.Option(..., help="PNG: styles along the top, faces down the left"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights (feature_network: "
                                       "vgg19-imagenet); default: the torch hub cache"),
) -> None:
    with stage_run("evaluate_stylizers"):
        config = load_config(params, "evaluate_stylizers", EvaluateStylizersConfig)
        log_config("evaluate_stylizers", config)
        names = read_yaml(params).get("styles")
        if not isinstance(names, dict) or not names:
            raise ConfigError(f"{params}: 'styles' must map one or more style names to entries")
        scores, grid = evaluate_stylizers(
            config, styles=list(names), encoder_path=encoder, student_path=student,
            discriminator_path=discriminator, dataset_dir=dataset, stylized_dir=stylized,
            styles_dir=styles, stylizers_dir=stylizers, vgg19_weights=vgg19_weights)
        write_artifact(metrics, scores)
        save_png(picture, grid)


if __name__ == "__main__":
    app()
