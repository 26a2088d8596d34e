"""DVC stage ``prepare``: build the training dataset (synthetic faces or real images)."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.images import save_png
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    source: str = typer.Option(..., help="'synthetic', or a folder or .zip of aligned face images"),
    params: Path = typer.Option(..., help="params file with a 'prepare' section"),
    out: Path = typer.Option(..., help="dataset directory to write"),
    metrics: Path = typer.Option(..., help="JSON file for the image counts"),
    preview: Path = typer.Option(..., help="PNG grid of the first images"),
    workers: int = typer.Option(0, help="worker processes; 0: one per CPU core"),
) -> None:
    with stage_run("prepare"):
        config = load_config(params, "prepare", PrepareConfig)
        log_config("prepare", config)
        report = prepare_dataset(source, out, config, workers)
        write_json(metrics, report.metrics())
        save_png(preview, report.preview)


if __name__ == "__main__":
    app()
