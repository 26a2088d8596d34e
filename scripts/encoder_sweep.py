"""Train one encoder variant outside DVC and score it: a quick way to compare encoder settings.

Takes the ``train_encoder`` section of params.yaml, applies ``--set key=value`` overrides (dotted
keys reach into ``encoder``), trains with the stage's own code into ``--out`` on the student and
dataset given, then prints the mean PSNR (dB) of the reconstructions of the held-out real images
and of fixed synthetic pairs, the W+ error on the latter, and the training time. With
``--optimizer-steps N`` it also prints the optimisation baseline on the same held-out images (the
``evaluate_encoder`` stage's, with the encoder's losses). Asserts nothing.

    python scripts/encoder_sweep.py --student models/student.pt --dataset data/prepared \
        --out runs/encoder/lr1e-3 --set lr=0.001
"""

import json
import logging
import time
from pathlib import Path

import torch
import typer
from teacher_sweep import apply_overrides

from pipeline.config import read_yaml
from pipeline.data.dataset import heldout_images
from pipeline.inversion import optimize_ws
from pipeline.metrics.inversion import score, synthesize
from pipeline.models.encoder import load_encoder_and_generator
from pipeline.perceptual import perceptual_distance
from pipeline.training.encoder import TrainEncoderConfig, train_encoder
from pipeline.training.run import RunPaths

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def main(out: Path = typer.Option(..., help="directory for the run's snapshot, state and grid"),
         overrides: list[str] = typer.Option([], "--set", help="train_encoder key=value"),
         student: Path = typer.Option(..., help="student snapshot (distill stage)"),
         dataset: Path = typer.Option(..., help="dataset directory written by the prepare stage"),
         params: Path = typer.Option(DEFAULTS, help="params file to start from"),
         optimizer_steps: int = typer.Option(0, help="also run the optimisation baseline"),
         optimizer_lr: float = typer.Option(0.05, help="its Adam learning rate"),
         resume: bool = typer.Option(False, help="continue the training state in --out"),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    config = TrainEncoderConfig.model_validate(
        apply_overrides(read_yaml(params)["train_encoder"], overrides, "train_encoder"))
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        (out / "state.pt").unlink(missing_ok=True)
    start = time.perf_counter()
    result = train_encoder(config, student_path=student, dataset_dir=dataset, device=device,
                           paths=RunPaths(snapshot=out / "encoder.pt", state=out / "state.pt",
                                          samples=out / "samples.png"))
    summary = {"overrides": overrides, "steps": config.steps,
               "seconds": round(time.perf_counter() - start), **result["final"]}
    if optimizer_steps:
        encoder, generator, meta = load_encoder_and_generator(out / "encoder.pt", student)
        real = heldout_images(dataset, meta, torch.device("cpu"))
        ws, seconds = optimize_ws(generator.synthesis.final_image, real, encoder.w_avg,
                                  generator.num_ws, perceptual_distance(config.perceptual),
                                  config.weights(), optimizer_steps, optimizer_lr)
        summary["optimizer_psnr_heldout"] = score(synthesize(generator, ws), real)["psnr_db"]
        summary["optimizer_seconds"] = round(seconds)
    print(json.dumps(summary))


if __name__ == "__main__":
    typer.run(main)
