"""The real-data check of the inversion encoder: the whole chain on real aligned faces at 64 px.

From the folder of real faces (``../shared/data/faces`` by default; the script exits with a
message when it is absent): prepare them at 64 px, train a ``tiny-64`` teacher on them, distil a
``blaze-tiny-64`` student, train an ``encoder-tiny-64`` on that student with ``--holdout`` faces
held out, export it (float32 / float16 TFLite, gated), and evaluate it against the mean face and
the optimiser on the held-out real faces, with the stages' own library code and the settings of
params.yaml otherwise. Prints the evaluation as JSON and writes the held-out picture
(input | encoder | optimiser) to ``--out``. Asserts nothing. ``scripts/stylizer_real_faces.py``
continues from its ``--out`` (the distillation's discriminator is kept for it). Every training
resumes from its state in ``--out``: a second run with the same settings only re-evaluates.

    python scripts/encoder_real_faces.py --out runs/real_faces
"""

import json
import logging
import time
from pathlib import Path

import typer

from pipeline.config import read_yaml
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.export.encoder import ExportEncoderConfig, export_encoder
from pipeline.images import save_png
from pipeline.metrics.inversion import EvaluateEncoderConfig, evaluate_encoder
from pipeline.models.blazestylegan import PRESETS as STUDENTS
from pipeline.models.encoder import PRESETS as ENCODERS
from pipeline.models.stylegan2 import PRESETS as TEACHERS
from pipeline.provenance import ENCODER_SECTIONS, provenance
from pipeline.training.distill import DistillConfig, distill
from pipeline.training.encoder import TrainEncoderConfig, train_encoder
from pipeline.training.run import RunPaths
from pipeline.training.teacher import TrainTeacherConfig, train_teacher

ROOT = Path(__file__).resolve().parents[1]


def main(out: Path = typer.Option(..., help="directory for every artifact of the check"),
         faces: Path = typer.Option(ROOT.parent / "shared" / "data" / "faces",
                                    help="folder of aligned real face images"),
         params: Path = typer.Option(ROOT / "params.yaml", help="params file to start from"),
         teacher_steps: int = typer.Option(2000), distill_steps: int = typer.Option(600),
         encoder_steps: int = typer.Option(1000), holdout: int = typer.Option(20),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    if not faces.is_dir():
        raise SystemExit(f"{faces}: no real faces here; nothing to check")
    sections, clock = read_yaml(params), {}
    teacher_model = TEACHERS["tiny-64"].model_copy(update={"noise": False})
    student_model = STUDENTS["blaze-tiny-64"]
    encoder_model = ENCODERS["encoder-tiny-64"]
    data = out / "prepared"
    start = time.perf_counter()
    prepare_dataset(str(faces), data, PrepareConfig.model_validate(
        {**sections["prepare"], "resolution": 64, "min_images": holdout + 1}))
    clock["prepare"] = time.perf_counter() - start

    teacher = TrainTeacherConfig.model_validate({**sections["train_teacher"],
                                                 "model": teacher_model.to_dict(),
                                                 "steps": teacher_steps, "sample_grid": 16})
    start = time.perf_counter()
    train_teacher(teacher, dataset_dir=data, device=device, paths=RunPaths(
        snapshot=out / "teacher.pt", state=out / "teacher_state.pt",
        samples=out / "teacher_samples.png"))
    clock["train_teacher"] = time.perf_counter() - start

    student = DistillConfig.model_validate({**sections["distill"],
                                            "student": student_model.to_dict(),
                                            "steps": distill_steps})
    start = time.perf_counter()
    distill(student, teacher_path=out / "teacher.pt", dataset_dir=data, device=device,
            discriminator_path=out / "discriminator.pt",
            paths=RunPaths(snapshot=out / "student.pt", state=out / "student_state.pt",
                           samples=out / "student_samples.png"))
    clock["distill"] = time.perf_counter() - start

    encoder = TrainEncoderConfig.model_validate({**sections["train_encoder"],
                                                 "encoder": encoder_model.to_dict(),
                                                 "steps": encoder_steps,
                                                 "holdout_images": holdout})
    start = time.perf_counter()
    trained = train_encoder(encoder, student_path=out / "student.pt", dataset_dir=data,
                            device=device, paths=RunPaths(
                                snapshot=out / "encoder.pt", state=out / "encoder_state.pt",
                                samples=out / "encoder_samples.png"))
    clock["train_encoder"] = time.perf_counter() - start
    export_encoder(ExportEncoderConfig.model_validate(sections["export_encoder"]),
                   encoder_path=out / "encoder.pt", student_path=out / "student.pt",
                   out_dir=out / "encoder", provenance=provenance(params, ENCODER_SECTIONS))
    metrics, picture = evaluate_encoder(
        EvaluateEncoderConfig.model_validate(sections["evaluate_encoder"]),
        encoder_path=out / "encoder.pt", student_path=out / "student.pt", dataset_dir=data,
        tflite_dir=out / "encoder")
    save_png(out / "reconstructions.png", picture)
    print(json.dumps({"seconds": {k: round(v) for k, v in clock.items()},
                      "train_images": trained["train_images"], **metrics}, indent=1))


if __name__ == "__main__":
    typer.run(main)
