"""Import a pretrained StyleGAN2 as the teacher: rosinality ``.pt`` or NVlabs ``.pkl``.

Writes the same inference snapshot as ``train_teacher``, so the rest of the pipeline uses either.
NVlabs pickles are read without executing any code they contain.
"""

from enum import Enum
from pathlib import Path

import typer

from pipeline.images import save_png
from pipeline.models.convert import load_nvlabs, load_rosinality
from pipeline.models.stylegan2 import TEACHER_KIND
from pipeline.snapshot import save_snapshot
from pipeline.stage import stage_app, stage_run
from pipeline.training.teacher import preview_grid

app = stage_app(__doc__)


class Format(str, Enum):
    rosinality = "rosinality"
    nvlabs = "nvlabs"


@app.command()
def main(
    source: Path = typer.Option(..., help="the pretrained checkpoint"),
    format: Format = typer.Option(..., help="rosinality (.pt with g_ema) or nvlabs (.pkl)"),
    snapshot: Path = typer.Option(..., help="teacher snapshot to write"),
    samples: Path = typer.Option(None, help="optional PNG grid of 16 samples (truncation 0.7)"),
    mapping_lr_mul: float = typer.Option(None, help="rosinality only: --lr_mlp it was trained "
                                                    "with, if the checkpoint does not record it"),
) -> None:
    with stage_run("import_teacher") as log:
        if format is Format.rosinality:
            G = load_rosinality(source, mapping_lr_mul)
        else:
            G = load_nvlabs(source)
        log.info("imported %s: %s", source, G.config.to_dict())
        save_snapshot(snapshot, TEACHER_KIND, G, G.config.to_dict(),
                      meta={"imported_from": str(source), "format": format.value})
        if samples is not None:
            save_png(samples, preview_grid(G))


if __name__ == "__main__":
    app()
