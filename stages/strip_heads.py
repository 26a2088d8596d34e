"""DVC stage ``strip_heads``: keep the student's inference graph (blocks + last head), verified
bit-equal to the full student, and record how much smaller it is."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.export.strip_heads import StripHeadsConfig, strip_heads
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'strip_heads' section"),
    student: Path = typer.Option(..., help="student snapshot written by distill"),
    snapshot: Path = typer.Option(..., help="inference generator snapshot to write"),
    metrics: Path = typer.Option(..., help="JSON: parameters and GFLOPs before and after"),
) -> None:
    with stage_run("strip_heads"):
        config = load_config(params, "strip_heads", StripHeadsConfig)
        log_config("strip_heads", config)
        write_json(metrics, strip_heads(config, student_path=student, snapshot_path=snapshot))


if __name__ == "__main__":
    app()
