"""Print parameters and GFLOPs (2 x MACs, batch 1) of the model presets and, if given, of
trained snapshots. StyleGAN2 rows include the mapping network; BlazeStyleGAN rows, like the
paper's Table 1, count the synthesis network only (the mapping column shows what is left out)."""

from pathlib import Path

import typer

from pipeline.models.complexity_table import format_table, preset_rows, stylegan2_row
from pipeline.stage import stage_app, stage_run
from pipeline.models.snapshots import load_teacher

app = stage_app(__doc__)


@app.command()
def main(teacher: Path = typer.Option(None, help="a teacher snapshot to include")) -> None:
    with stage_run("complexity"):
        rows = preset_rows()
        if teacher is not None:
            rows.append(stylegan2_row(f"teacher ({teacher.name})", load_teacher(teacher).config))
        print(format_table(rows))


if __name__ == "__main__":
    app()
