"""DVC stage ``fit_speed_model``: the latency search's speed model, an MLP ensemble on the
measured unit latencies of ``measure_latency`` (and an analytic baseline fitted on the same
split), with its held-out accuracy and its additivity on whole students."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.profiling.speed_model import FitSpeedModelConfig, run_fit_speed_model
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'fit_speed_model' section"),
    data: Path = typer.Option(..., help="dataset directory written by measure_latency"),
    out: Path = typer.Option(..., help="speed model snapshot to write"),
    predictions: Path = typer.Option(..., help="CSV of predicted vs measured, for dvc plots"),
    metrics: Path = typer.Option(..., help="JSON: held-out and whole-student accuracy"),
) -> None:
    with stage_run("fit_speed_model"):
        config = load_config(params, "fit_speed_model", FitSpeedModelConfig)
        log_config("fit_speed_model", config)
        write_json(metrics, run_fit_speed_model(config, data=data, out=out,
                                                predictions=predictions))


if __name__ == "__main__":
    app()
