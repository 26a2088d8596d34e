"""Fine-tune one style at several settings and compare them on held-out faces: each run's style
distances (Gram, SWD) and content score, and a picture. The default runs are the style-strength
knob (swap layers and alpha):

    python scripts/stylize_sweep.py --style ink --out runs/strength
    python scripts/stylize_sweep.py --style cartoon --out runs/recipe \\
        --run "base:" --run "lr 2e-3:lr=0.002" --run "FM only:lambda_pixel=0;lambda_content=0"

Each ``--run "NAME:key=value;key=value"`` sets keys of params.yaml's ``stylize`` section (values
parsed as YAML). Reads the pipeline's artifacts (models/encoder.pt, models/student.pt,
models/discriminator.pt, data/prepared, data/styles/<style>: run `dvc repro` first). Writes
``<out>/<style>.png`` (top row: a style image and the held-out faces; then one row per run) and
``<out>/<style>.json``, and prints a Markdown table.
"""

import json
import logging
from pathlib import Path

import torch
import typer
from teacher_sweep import apply_overrides

from pipeline.config import load_config
from pipeline.data.dataset import heldout_images
from pipeline.images import make_grid, save_png, to_pixels
from pipeline.metrics.stylizer import score_outputs, style_images_of
from pipeline.models.encoder import load_encoder_and_generator
from pipeline.models.stylizer import Stylizer, feature_network, load_stylized
from pipeline.training.run import RunPaths
from pipeline.training.stylize import StylizeConfig, stylize

app = typer.Typer(add_completion=False)


KNOB = ["swap 5,6:swap_layers=[5, 6]", "swap 3-6:swap_layers=[3, 4, 5, 6]",
        "swap 3-6, alpha 0.5:swap_layers=[3, 4, 5, 6];alpha=0.5",
        "swap 1-6:swap_layers=[1, 2, 3, 4, 5, 6]"]


def parse_run(text: str) -> tuple[str, list[str]]:
    name, sep, sets = text.partition(":")
    if not sep:
        raise typer.BadParameter(f"--run {text!r}: expected NAME:key=value;key=value")
    return name, [item for item in sets.split(";") if item.strip()]


@app.command()
def main(style: str = typer.Option("ink"), out: Path = typer.Option(Path("runs/strength")),
         runs: list[str] = typer.Option(KNOB, "--run", help="NAME:key=value;key=value"),
         params: Path = typer.Option(Path("params.yaml")), faces: int = typer.Option(8),
         models: Path = typer.Option(Path("models")), data: Path = typer.Option(Path("data"))):
    logging.basicConfig(level=logging.WARNING)
    base = load_config(params, "stylize", StylizeConfig).to_dict()
    encoder, student, meta = load_encoder_and_generator(models / "encoder.pt",
                                                        models / "student.pt")
    held_out = heldout_images(data / "prepared", meta)[:32]
    style_images = style_images_of(data / "styles" / style)
    features = feature_network("discriminator", models / "discriminator.pt")
    rows = [torch.cat([style_images[:1], held_out[:faces]])]
    with torch.no_grad():  # the baseline: the faces through the encoder and the base student
        unstylized = Stylizer(encoder, student).eval()((held_out + 1) / 2) * 2 - 1
    keep = [k for k in range(student.num_ws) if k not in base["swap_layers"]]
    table = [{"run": "unstylized (base student)", "set": [],
              **score_outputs(unstylized, held_out, style_images, features, encoder, keep,
                              base["seed"])}]
    for text in runs:
        name, sets = parse_run(text)
        run = out / style / name.replace(" ", "_").replace(",", "")
        config = StylizeConfig.model_validate(apply_overrides(dict(base), sets, "stylize"))
        layers = config.swap_layers
        stylize(config, style=style, styles_dir=data / "styles" / style,
                encoder_path=models / "encoder.pt", student_path=models / "student.pt",
                discriminator_path=models / "discriminator.pt", dataset_dir=data / "prepared",
                device="cpu", paths=RunPaths(snapshot=run / "stylized.pt",
                                             state=run / "state.pt"))
        stylizer = Stylizer(encoder, load_stylized(run / "stylized.pt")).eval()
        with torch.no_grad():
            outputs = stylizer((held_out + 1) / 2) * 2 - 1
        keep = [k for k in range(student.num_ws) if k not in layers]
        scores = score_outputs(outputs, held_out, style_images, features, encoder, keep,
                               base["seed"])
        table.append({"run": name, "set": sets, **scores})
        rows.append(torch.cat([torch.ones_like(outputs[:1]), outputs[:faces]]))
    out.mkdir(parents=True, exist_ok=True)
    save_png(out / f"{style}.png",
             make_grid(to_pixels(torch.cat(rows).clamp(-1, 1)), columns=faces + 1))
    (out / f"{style}.json").write_text(json.dumps(table, indent=2) + "\n")
    print("| run | Gram distance | SWD | content (W+) |")
    print("| --- | --- | --- | --- |")
    for row in table:
        print(f"| {row['run']} | {row['gram_distance']:.3g} | {row['swd']:.0f} | "
              f"{row['content_wplus']:.3f} |")


if __name__ == "__main__":
    app()
