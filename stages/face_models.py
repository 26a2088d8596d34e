"""DVC stage ``face_models``: the face detector and landmarks models every stylizer bundle
carries: an official ``face_landmarker.task`` named in params, or, without one, a test stand-in
from the models the mediapipe wheel ships (``scripts/mediapipe_venv.sh`` installs it)."""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.export.mediapipe import face_models, wheel_modules
from pipeline.export.stylizer import FaceModelsConfig, write_face_models
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with a 'face_models' section"),
    mediapipe_venv: Path = typer.Option(..., help="the mediapipe virtualenv (the stand-in's "
                                        "models; unused with an official landmarker)"),
    out: Path = typer.Option(..., help="directory to write the two models and source.json to"),
) -> None:
    with stage_run("face_models"):
        config = load_config(params, "face_models", FaceModelsConfig)
        log_config("face_models", config)
        task = Path(config.landmarker_task) if config.landmarker_task else None
        faces = face_models(task, None if task else wheel_modules(mediapipe_venv))
        write_face_models(faces, out)


if __name__ == "__main__":
    app()
