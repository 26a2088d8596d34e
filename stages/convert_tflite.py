"""DVC stage ``convert_tflite``: the simplified student and teacher ONNX models to float32 and
float16 TFLite with onnx2tf, each run on LiteRT and checked against its PyTorch model, with an
interface JSON beside each."""

from pathlib import Path

import typer

from pipeline.artifacts.base import write_artifact
from pipeline.config import load_config, log_config
from pipeline.export.tflite import ConvertTfliteConfig, convert_generators
from pipeline.provenance import provenance
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'convert_tflite' section"),
    student: Path = typer.Option(..., help="inference generator snapshot (strip_heads)"),
    teacher: Path = typer.Option(..., help="teacher snapshot"),
    student_onnx: Path = typer.Option(..., help="simplified student ONNX (simplify_onnx)"),
    teacher_onnx: Path = typer.Option(..., help="simplified teacher ONNX (simplify_onnx)"),
    out: Path = typer.Option(..., help="directory to write the TFLite models and their JSON to"),
    metrics: Path = typer.Option(..., help="JSON: errors vs PyTorch and ONNX, PSNR, sizes"),
) -> None:
    with stage_run("convert_tflite"):
        config = load_config(params, "convert_tflite", ConvertTfliteConfig)
        log_config("convert_tflite", config)
        write_artifact(metrics, convert_generators(
            config, student_path=student, teacher_path=teacher, student_onnx=student_onnx,
            teacher_onnx=teacher_onnx, out_dir=out, provenance=provenance(params)))


if __name__ == "__main__":
    app()
