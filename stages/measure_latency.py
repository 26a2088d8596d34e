"""DVC stage ``measure_latency``: the latency search's speed-model data. Micro-models of the
student's units (level blocks, the last head) over sampled widths at the geometry of a student
preset, plus the per-invoke overhead and the mapping network, each exported by the pipeline's
chain and timed on LiteRT, their operators checked against the preset's graph; resumable
(exports persist in the state directory)."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.profiling.speed_data import MeasureLatencyConfig, measure_latency
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'measure_latency' section"),
    state: Path = typer.Option(..., help="directory of the exported micro-models (persists)"),
    out: Path = typer.Option(..., help="dataset directory to write (points.json)"),
    metrics: Path = typer.Option(..., help="JSON: points, overhead, spread of the timings"),
) -> None:
    with stage_run("measure_latency"):
        config = load_config(params, "measure_latency", MeasureLatencyConfig)
        log_config("measure_latency", config)
        write_json(metrics, measure_latency(config, state=state, out=out))


if __name__ == "__main__":
    app()
