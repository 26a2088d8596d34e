"""DVC stage ``evaluate``: complexity, latency (LiteRT, ONNX Runtime, PyTorch; optionally a
phone) and quality (SWD, FID, PSNR / SSIM) of the teacher, the student and the deployed float16
student, with a markdown report."""

from pathlib import Path

import typer

from pipeline.artifacts.base import write_artifact
from pipeline.config import load_config, log_config
from pipeline.images import save_png
from pipeline.io import write_json
from pipeline.metrics.evaluate import EvaluateConfig, evaluate
from pipeline.metrics.reference import FidConfig
from pipeline.metrics.report import latency_rows, write_report
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with 'evaluate' and 'fid' sections"),
    student: Path = typer.Option(..., help="inference generator snapshot (strip_heads)"),
    teacher: Path = typer.Option(..., help="teacher snapshot"),
    student_onnx: Path = typer.Option(..., help="simplified student ONNX"),
    teacher_onnx: Path = typer.Option(..., help="simplified teacher ONNX"),
    tflite: Path = typer.Option(..., help="directory of the TFLite models (convert_tflite)"),
    reference: Path = typer.Option(..., help="reference directory (reference_stats)"),
    metrics: Path = typer.Option(..., help="JSON metrics to write"),
    latency_plot: Path = typer.Option(..., help="JSON latency table to write (DVC plot)"),
    chart: Path = typer.Option(..., help="latency bar chart PNG to write"),
    grid: Path = typer.Option(..., help="teacher | student | float16 grid PNG to write"),
    report: Path = typer.Option(..., help="markdown report to write"),
) -> None:
    with stage_run("evaluate"):
        config = load_config(params, "evaluate", EvaluateConfig)
        fid_config = load_config(params, "fid", FidConfig)
        log_config("evaluate", config)
        log_config("fid", fid_config)
        results, samples = evaluate(config, fid_config, student_path=student,
                                    teacher_path=teacher,
                                    onnx_paths={"student": student_onnx, "teacher": teacher_onnx},
                                    tflite_dir=tflite, reference_dir=reference)
        save_png(grid, samples)
        write_report(results, report, chart, grid)
        write_json(latency_plot, latency_rows(results))
        write_artifact(metrics, results)


if __name__ == "__main__":
    app()
