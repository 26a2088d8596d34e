"""The real-data check of the face stylizer: a few-shot fine-tune from one real style portrait,
applied to held-out real faces.

Continues from the output of ``scripts/encoder_real_faces.py`` (a 64 px teacher, student,
discriminator and encoder trained on the real faces of ``../shared/data/faces``, 20 of them held
out): prepares one portrait of ``../shared/data/styles`` at 64 px (the script exits with a
message when the folder is absent), fine-tunes a copy of the student to it with the ``stylize``
settings of params.yaml, and scores the stylized held-out faces against their unstylized
reconstructions (``pipeline.metrics.stylizer``: Gram distance, SWD, content). Prints the scores
as JSON and writes the picture (the style image, then held-out faces | stylized) to ``--out``.
The picture stays there: the faces and styles are test data only, never part of the repository.

    python scripts/encoder_real_faces.py --out runs/real_faces
    python scripts/stylizer_real_faces.py --chain runs/real_faces --out runs/real_style
"""

import json
import logging
import tempfile
import time
from pathlib import Path

import torch
import typer

from pipeline.config import read_yaml
from pipeline.data.dataset import heldout_images
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.images import make_grid, save_png, to_pixels
from pipeline.metrics.stylizer import score_outputs, style_images_of
from pipeline.models.encoder import load_encoder_and_generator
from pipeline.models.stylizer import Stylizer, feature_network, load_stylized
from pipeline.training.run import RunPaths
from pipeline.training.stylize import StylizeConfig, stylize

ROOT = Path(__file__).resolve().parents[1]


def main(chain: Path = typer.Option(..., help="--out of scripts/encoder_real_faces.py"),
         out: Path = typer.Option(..., help="directory for the fine-tune and the picture"),
         styles: Path = typer.Option(ROOT.parent / "shared" / "data" / "styles",
                                     help="folder of style portraits"),
         style: str = typer.Option("", help="file name in --styles (default: the first)"),
         params: Path = typer.Option(ROOT / "params.yaml", help="params file to start from"),
         steps: int = typer.Option(300, help="fine-tuning steps"),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    portraits = sorted(p for p in styles.glob("*") if p.is_file()) if styles.is_dir() else []
    if not portraits:
        raise SystemExit(f"{styles}: no style portraits here; nothing to check")
    portrait = styles / style if style else portraits[0]
    with tempfile.TemporaryDirectory() as folder:  # a one-image source folder
        (Path(folder) / portrait.name).symlink_to(portrait.resolve())
        prepare_dataset(folder, out / "style", PrepareConfig(
            resolution=64, synthetic_images=1, seed=0, min_images=1, preview_images=1))
    config = StylizeConfig.model_validate({**read_yaml(params)["stylize"], "steps": steps})
    start = time.perf_counter()
    stylize(config, style=portrait.stem, styles_dir=out / "style",
            encoder_path=chain / "encoder.pt", student_path=chain / "student.pt",
            discriminator_path=chain / "discriminator.pt",
            dataset_dir=chain / "prepared", device=device,
            paths=RunPaths(snapshot=out / "stylized.pt", state=out / "state.pt",
                           samples=out / "samples.png"))
    seconds = time.perf_counter() - start
    encoder, student, meta = load_encoder_and_generator(chain / "encoder.pt", chain / "student.pt")
    faces = heldout_images(chain / "prepared", meta)
    style_images = style_images_of(out / "style")
    features = feature_network("discriminator", chain / "discriminator.pt")
    keep = [k for k in range(student.num_ws) if k not in config.swap_layers]
    outputs = {}
    with torch.no_grad():
        for name, generator in (("stylized", load_stylized(out / "stylized.pt")),
                                ("unstylized", student)):
            outputs[name] = Stylizer(encoder, generator).eval()((faces + 1) / 2) * 2 - 1
    scores = {name: score_outputs(images, faces, style_images, features, encoder, keep,
                                  config.seed) for name, images in outputs.items()}
    pairs = torch.stack([faces, outputs["stylized"]], dim=1).flatten(0, 1)
    top = torch.cat([style_images, torch.ones_like(faces[:7])])
    save_png(out / "real_style.png", make_grid(to_pixels(torch.cat([top, pairs]).clamp(-1, 1)),
                                               columns=8))
    print(json.dumps({"style_image": portrait.name, "faces": len(faces), "steps": steps,
                      "fine_tune_seconds": round(seconds, 1), **scores}, indent=1))


if __name__ == "__main__":
    typer.run(main)
