"""DVC stage ``simplify_onnx``: onnx-simplifier on the student and teacher ONNX models, each
checked against its original with ONNX Runtime."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.export.onnx_simplify import SimplifyOnnxConfig, simplify_generators
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'simplify_onnx' section"),
    student: Path = typer.Option(..., help="student ONNX (export_onnx)"),
    teacher: Path = typer.Option(..., help="teacher ONNX (export_onnx)"),
    student_out: Path = typer.Option(..., help="simplified student ONNX to write"),
    teacher_out: Path = typer.Option(..., help="simplified teacher ONNX to write"),
    metrics: Path = typer.Option(..., help="JSON: node counts before and after, errors"),
) -> None:
    with stage_run("simplify_onnx"):
        config = load_config(params, "simplify_onnx", SimplifyOnnxConfig)
        log_config("simplify_onnx", config)
        write_json(metrics, simplify_generators(config, student_onnx=student, teacher_onnx=teacher,
                                                student_out=student_out,
                                                teacher_out=teacher_out))


if __name__ == "__main__":
    app()
