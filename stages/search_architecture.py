"""DVC stage ``search_architecture``: the latency-driven width search. The student
(``distill.student``) widened into a supernet with straight-through channel masks, distilled
from the teacher with the distill stage's loss plus the fitted speed model's latency penalty;
writes the extracted student (a regular student snapshot) and its searched widths (resumable).

Multi-GPU: ``torchrun --nproc-per-node 4 -m stages.search_architecture ...``, as distill.
"""

from pathlib import Path

import typer

from pipeline.config import load_config, log_config
from pipeline.io import write_json
from pipeline.search.architecture import SearchConfig, SearchSection, search_architecture
from pipeline.stage import stage_app, stage_run
from pipeline.training.distill import DistillConfig
from pipeline.training.run import RunPaths
from pipeline.training.runtime import is_main_process

app = stage_app(__doc__)


@app.command()
def main(
    params: Path = typer.Option(..., help="params file with 'distill' and "
                                "'search_architecture' sections"),
    teacher: Path = typer.Option(..., help="teacher snapshot (the teacher stage's)"),
    dataset: Path = typer.Option(..., help="dataset directory of real images (prepare stage)"),
    speed_model: Path = typer.Option(..., help="speed model snapshot (fit_speed_model)"),
    snapshot: Path = typer.Option(..., help="searched student snapshot to write (every head)"),
    state: Path = typer.Option(..., help="training state to resume from and save to"),
    live: Path = typer.Option(..., help="dvclive directory: losses, widths, latency"),
    samples: Path = typer.Option(..., help="PNG: teacher | masked supernet, fixed latents"),
    metrics: Path = typer.Option(..., help="JSON: searched widths, predicted latency"),
    vgg19_weights: Path = typer.Option(None, help="VGG19 weights (perceptual: vgg19-imagenet)"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
) -> None:
    with stage_run("search_architecture"):
        distill = load_config(params, "distill", DistillConfig)
        search = load_config(params, "search_architecture", SearchSection)
        config = SearchConfig.build(distill, search)
        log_config("search_architecture", config)  # the search keys and the supernet
        result = search_architecture(
            config, teacher_path=teacher, dataset_dir=dataset, speed_model_path=speed_model,
            device=device, vgg19_weights=vgg19_weights,
            paths=RunPaths(snapshot=snapshot, state=state, live=live, samples=samples))
        if is_main_process():
            write_json(metrics, result)


if __name__ == "__main__":
    app()
