"""DVC stage ``export_stylizer``: one style's image-to-image stylizer (encoder + stylized
generator) to ONNX, simplified ONNX and float32 / float16 TFLite, each step checked, with an
interface card beside each TFLite model; and its MediaPipe ``face_stylizer.task`` bundle."""

from pathlib import Path

import typer

from pipeline.artifacts.base import write_artifact
from pipeline.config import load_config, log_config
from pipeline.export.stylizer import ExportStylizerConfig, export_stylizer, read_face_models
from pipeline.provenance import provenance, stylizer_sections
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    style: str = typer.Option(..., help="the style's name: its key in the 'styles' section"),
    params: Path = typer.Option(..., help="params file with an 'export_stylizer' section"),
    encoder: Path = typer.Option(..., help="encoder snapshot (train_encoder)"),
    student: Path = typer.Option(..., help="the student the encoder inverts (distill)"),
    stylized: Path = typer.Option(..., help="the stylized generator (stylize)"),
    face_models: Path = typer.Option(..., help="the bundle's face models (face_models stage)"),
    out: Path = typer.Option(..., help="directory to write the models and the bundle to"),
    metrics: Path = typer.Option(..., help="JSON: each step's errors, PSNR, sizes, the bundle"),
) -> None:
    with stage_run("export_stylizer"):
        config = load_config(params, "export_stylizer", ExportStylizerConfig)
        log_config("export_stylizer", config)
        write_artifact(metrics, export_stylizer(
            config, style=style, encoder_path=encoder, student_path=student,
            stylized_path=stylized, faces=read_face_models(face_models), out_dir=out,
            provenance=provenance(params, stylizer_sections(style))))


if __name__ == "__main__":
    app()
