"""DVC stage ``reference_stats``: the real images' side of the distribution metrics, computed
once per dataset: a fixed subset for the sliced Wasserstein distance and, when the FID weights
are available, the real FID statistics."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.metrics.reference import FidConfig, ReferenceStatsConfig, build_reference
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with 'reference_stats' and 'fid' sections"),
    dataset: Path = typer.Option(..., help="prepared dataset directory"),
    out: Path = typer.Option(..., help="reference directory to write"),
) -> None:
    with stage_run("reference_stats"):
        config = load_config(params, "reference_stats", ReferenceStatsConfig)
        fid_config = load_config(params, "fid", FidConfig)
        log_config("reference_stats", config)
        log_config("fid", fid_config)
        build_reference(dataset, out, config, fid_config)


if __name__ == "__main__":
    app()
