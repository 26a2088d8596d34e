"""DVC stage ``export_encoder``: the inversion encoder to ONNX, simplified ONNX and float32 /
float16 TFLite, each step checked against the one before (W+ and the generator's reconstruction
from it), with an interface card beside each TFLite model."""

from pathlib import Path

import typer

from pipeline.artifacts.base import write_artifact
from pipeline.config import load_config, log_config
from pipeline.export.encoder import ExportEncoderConfig, export_encoder
from pipeline.provenance import ENCODER_SECTIONS, provenance
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with an 'export_encoder' section"),
    encoder: Path = typer.Option(..., help="encoder snapshot (train_encoder)"),
    student: Path = typer.Option(..., help="the student snapshot the encoder inverts (distill)"),
    out: Path = typer.Option(..., help="directory to write the ONNX and TFLite encoders to"),
    metrics: Path = typer.Option(..., help="JSON: each step's errors, PSNR, sizes"),
) -> None:
    with stage_run("export_encoder"):
        config = load_config(params, "export_encoder", ExportEncoderConfig)
        log_config("export_encoder", config)
        write_artifact(metrics, export_encoder(
            config, encoder_path=encoder, student_path=student, out_dir=out,
            provenance=provenance(params, ENCODER_SECTIONS)))


if __name__ == "__main__":
    app()
