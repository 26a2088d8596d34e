"""Print parameters and GFLOPs (2 x MACs, batch 1) of the model presets and, if given, of
trained snapshots. StyleGAN2 rows include the mapping network; BlazeStyleGAN rows, like the
paper's Table 1, count the synthesis network only (the mapping column shows what is left out);
encoder rows count the whole inversion encoder."""

from pathlib import Path

import typer

from pipeline.models.blazestylegan import load_student
from pipeline.models.complexity import blaze_row, format_table, preset_rows, stylegan2_row
from pipeline.models.encoder import PRESETS as ENCODER_PRESETS
from pipeline.models.encoder import encoder_row, load_encoder
from pipeline.models.stylegan2 import load_teacher
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(teacher: Path = typer.Option(None, help="a teacher snapshot to include"),
         student: Path = typer.Option(None,
                                      help="a student snapshot (distill) to include"),
         encoder: Path = typer.Option(None,
                                      help="an encoder snapshot (train_encoder) to include")
         ) -> None:
    with stage_run("complexity"):
        rows = preset_rows() + [encoder_row(name, c) for name, c in ENCODER_PRESETS.items()]
        if teacher is not None:
            rows.append(stylegan2_row(f"teacher ({teacher.name})", load_teacher(teacher).config))
        if student is not None:
            rows.append(blaze_row(f"student ({student.name})", load_student(student).config))
        if encoder is not None:
            rows.append(encoder_row(f"encoder ({encoder.name})", load_encoder(encoder).config))
        print(format_table(rows))


if __name__ == "__main__":
    app()
