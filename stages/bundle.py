"""DVC stage ``bundle``: the release directory and zip: the student's float16 and float32
TFLite models with their interface JSON, a model card, the exact params, the metrics and
SHA256SUMS."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config, read_yaml
from pipeline.export.bundle import BundleConfig, build_bundle
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'bundle' section (shipped whole)"),
    tflite: Path = typer.Option(..., help="directory of the TFLite models (convert_tflite)"),
    evaluation: Path = typer.Option(..., help="metrics of the evaluate stage"),
    conversion: Path = typer.Option(..., help="metrics of the convert_tflite stage"),
    dataset: Path = typer.Option(..., help="prepared dataset directory (for its provenance)"),
    out: Path = typer.Option(..., help="release directory to write"),
    zip_path: Path = typer.Option(..., "--zip", help="release zip to write"),
    stylizers: Path = typer.Option(None, help="directory of the exported stylizers <style>/ "
                                   "(export_stylizer); the styles are params.yaml's"),
    stylizer_metrics: Path = typer.Option(None, help="metrics of the evaluate_stylizers stage"),
    export_metrics: Path = typer.Option(None, help="directory of export_stylizer's metrics"),
) -> None:
    with stage_run("bundle"):
        config = load_config(params, "bundle", BundleConfig)
        log_config("bundle", config)
        styles = list(read_yaml(params).get("styles") or {}) if stylizers else []
        build_bundle(config, params_path=params, tflite_dir=tflite, evaluation_path=evaluation,
                     conversion_path=conversion, dataset_dir=dataset, out_dir=out,
                     zip_path=zip_path, styles=styles, stylizers_dir=stylizers,
                     stylizer_metrics=stylizer_metrics, export_metrics=export_metrics)


if __name__ == "__main__":
    app()
