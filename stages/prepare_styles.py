"""DVC stage ``prepare_styles``: the style images of one style (``styles.<name>``), resized to
the generator's resolution (``prepare.resolution``), with ``prepare``'s bad-file handling."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.data.styles import StyleConfig
from pipeline.images import save_png
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    style: str = typer.Option(..., help="the style's name: its key in the 'styles' section"),
    params: Path = typer.Option(..., help="params file with 'styles' and 'prepare' sections"),
    out: Path = typer.Option(..., help="style dataset directory to write"),
    metrics: Path = typer.Option(..., help="JSON file for the image counts"),
    preview: Path = typer.Option(..., help="PNG grid of the style images"),
) -> None:
    with stage_run("prepare_styles"):
        config = load_config(params, f"styles.{style}", StyleConfig)
        log_config(f"styles.{style}", config)
        resolution = load_config(params, "prepare", PrepareConfig).resolution
        report = prepare_dataset(config.source, out, PrepareConfig(
            resolution=resolution, synthetic_images=config.images, seed=config.seed,
            min_images=1, preview_images=config.images), workers=1)
        write_json(metrics, report.metrics())
        save_png(preview, report.preview)


if __name__ == "__main__":
    app()
