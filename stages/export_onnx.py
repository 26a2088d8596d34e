"""DVC stage ``export_onnx``: the stripped student and the teacher (activation-modulation form,
same interface) to ONNX, each checked against PyTorch with ONNX Runtime."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.export.onnx_export import ExportOnnxConfig, export_generators
from pipeline.io import write_json
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with an 'export_onnx' section"),
    student: Path = typer.Option(..., help="inference generator snapshot (strip_heads)"),
    teacher: Path = typer.Option(..., help="teacher snapshot"),
    student_onnx: Path = typer.Option(..., help="student ONNX file to write"),
    teacher_onnx: Path = typer.Option(..., help="teacher ONNX file to write"),
    metrics: Path = typer.Option(..., help="JSON: node counts, sizes, errors vs PyTorch"),
) -> None:
    with stage_run("export_onnx"):
        config = load_config(params, "export_onnx", ExportOnnxConfig)
        log_config("export_onnx", config)
        write_json(metrics, export_generators(config, student_path=student, teacher_path=teacher,
                                              student_onnx=student_onnx,
                                              teacher_onnx=teacher_onnx))


if __name__ == "__main__":
    app()
