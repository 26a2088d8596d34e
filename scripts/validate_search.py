"""Validate the latency search: searched students against uniformly scaled ones at the same
budget, each distilled for the same steps, their latency measured on LiteRT.

For each ``--scales`` value s, the uniform student is ``distill.student`` with every level and
its last head s times as wide (multiples of 8); its latency, predicted by ``--speed-model`` at
``search_architecture.latency_resolution``, is the budget (``target_ms``) of one search per
``--seeds`` value. Every searched and uniform student is then distilled from scratch with the
distill section's settings for ``--distill-steps`` (the same seed for both) and scored as
``distill_sweep.py`` scores (SWD x 1e3 against the dataset, PSNR / SSIM against the teacher).
Finally every architecture is exported at the latency geometry by the pipeline's chain
(:func:`pipeline.search.geometry.scaled_graph`, random weights as trained) and timed in one
process, interleaved: measured against predicted latency, and against the budget. With
``--speed-data``, the dataset's first whole students are timed with them: the median ratio of
their latency now to the dataset's is the host's drift since the dataset was timed, and the
predictions are compared at the drift too (``predicted_drift_error_pct``). Where this machine
differs from the speed model's (CPU, its ISA features or caches, threads, LiteRT: the
``machine_differences`` of the results), the comparison is of two machines.

Prints one JSON line per student, then the summary table; writes ``--out``/validation.json and
the quality-vs-latency plot ``--out``/pareto.png. Asserts nothing.

    python scripts/validate_search.py --teacher models/teacher.pt --dataset data/prepared \\
        --speed-model runs/speed/speed_model.pt --out runs/validate_search --scales 1.0,0.75 \\
        --seeds 0,1 --speed-data runs/speed/data/points.json
"""

import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import typer
from distill_sweep import distill_and_score

from pipeline.config import read_yaml
from pipeline.io import write_json
from pipeline.models.blazestylegan import BlazeStyleGANConfig
from pipeline.models.masked import GROUP
from pipeline.profiling.chain import export_for_timing, time_interleaved
from pipeline.profiling.speed_data import machine_differences, machine_note, machine_record
from pipeline.profiling.speed_model import load_speed_model, student_units
from pipeline.search.architecture import SearchConfig, SearchSection, search_architecture
from pipeline.search.geometry import latency_sizes, scaled_graph
from pipeline.training.distill import DistillConfig
from pipeline.training.run import RunPaths

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def uniform(student: BlazeStyleGANConfig, scale: float) -> BlazeStyleGANConfig:
    def scaled(c: int) -> int:
        return max(GROUP, GROUP * round(c * scale / GROUP))

    return BlazeStyleGANConfig.model_validate({
        **student.to_dict(), "channels": [scaled(c) for c in student.channels],
        "head_channels": [*student.head_channels[:-1], scaled(student.head_channels[-1])]})


def predicted_ms(speed, config: BlazeStyleGANConfig, resolution: int) -> float:
    units = student_units(config.channels, config.head_channels[-1],
                          latency_sizes(config, resolution), config.head, config.level_convs)
    with torch.no_grad():
        return float(speed.student_ms(units))


def key(config: BlazeStyleGANConfig) -> str:
    """c<level widths>-h<last head width>, and -d<convolutions per level> where a level has
    one (as ``speed_model_units.py --arch`` reads it)."""
    lengths = "" if config.convs is None else f"-d{''.join(map(str, config.convs))}"
    return f"c{'-'.join(map(str, config.channels))}-h{config.head_channels[-1]}{lengths}"


def measure(configs: dict[str, tuple[BlazeStyleGANConfig, int]], threads: int,
            rounds: int) -> dict[str, float]:
    """p50 ms of every (architecture, latency resolution), timed together, interleaved."""
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        paths = {}
        for name, (config, resolution) in configs.items():
            graph = scaled_graph(config, resolution)
            inputs = torch.randn(2, config.w_dim, generator=torch.Generator().manual_seed(0))
            exported = export_for_timing(graph, inputs, Path(tmp) / name, "nhwc")
            paths[name] = exported.tflite["float16"]
        timings = time_interleaved(paths, threads, 5, 20, rounds, shuffle_seed=0)
    return {name: t["p50_ms"] for name, t in timings.items()}


def references(speed_data: Path | None, count: int) -> dict[str, tuple[dict, float]]:
    """The first ``count`` whole students of the speed model's dataset, with the latency it
    measured: timed again beside the validation's graphs, their ratio is the host's drift since
    the dataset was timed (this VM's speed varies by more than 10% between hours)."""
    if speed_data is None or count == 0:
        return {}
    students = json.loads(speed_data.read_text())["students"][:count]
    if not students:
        raise typer.BadParameter(f"{speed_data} holds no whole students to time again "
                                 "(measure_latency.students 0): no drift can be measured")
    return {f"reference-{s['key']}": (s["student"], s["latency_ms"]) for s in students}


def main(teacher: Path = typer.Option(..., help="teacher snapshot"),
         dataset: Path = typer.Option(..., help="dataset directory (prepare stage)"),
         speed_model: Path = typer.Option(..., help="speed model snapshot (fit_speed_model)"),
         out: Path = typer.Option(..., help="directory for the runs and the results"),
         params: Path = typer.Option(DEFAULTS, help="params file (distill, search_architecture)"),
         scales: str = typer.Option("1.0,0.75", help="uniform students' width scales"),
         seeds: str = typer.Option("0,1", help="seeds of the searches and distillations"),
         search_steps: int = typer.Option(None, help="default: search_architecture.steps"),
         distill_steps: int = typer.Option(None, help="default: distill.steps"),
         mask_step: str = typer.Option(None, help="default: search_architecture.mask_step"),
         fit_budget: bool = typer.Option(None, help="default: search_architecture.fit_budget"),
         count: int = typer.Option(500, help="images of the SWD"),
         threads: int = typer.Option(2, help="LiteRT threads"),
         rounds: int = typer.Option(5, help="interleaved timing rounds"),
         speed_data: Path = typer.Option(None, help="the speed model's points.json: its first "
                                         "students are timed again (the host's drift)"),
         reference_students: int = typer.Option(4, help="dataset students timed again"),
         device: str = typer.Option("auto", help="auto, cpu or cuda")) -> None:
    logging.basicConfig(level=logging.WARNING)
    sections = read_yaml(params)
    distill = DistillConfig.model_validate(sections["distill"])
    if distill_steps is not None:
        distill = distill.model_copy(update={"steps": distill_steps})
    overrides = {key: value for key, value in (("steps", search_steps), ("mask_step", mask_step),
                                               ("fit_budget", fit_budget)) if value is not None}
    search = SearchSection.model_validate({**sections["search_architecture"], **overrides})
    speed = load_speed_model(speed_model)
    machine = machine_record(threads)  # elsewhere, the budgets are another machine's latency
    differences, unrecorded = machine_differences(speed.config.machine, machine)
    print(machine_note(str(speed_model), speed.config.machine, machine), file=sys.stderr)
    resolution = search.latency_resolution
    rows, architectures = [], {}
    for scale in (float(s) for s in scales.split(",")):
        base = uniform(distill.student, scale)
        budget = predicted_ms(speed, base, resolution)
        architectures[key(base)] = base
        for seed in (int(s) for s in seeds.split(",")):
            run = out / f"scale{scale:g}" / f"seed{seed}"
            config = SearchConfig.build(
                distill.model_copy(update={"seed": seed}),
                search.model_copy(update={"target_ms": budget, "target_ratio": None,
                                          "seed": seed}))
            found = search_architecture(
                config, teacher_path=teacher, dataset_dir=dataset, speed_model_path=speed_model,
                device=device, paths=RunPaths(snapshot=run / "search" / "student.pt",
                                              state=run / "search" / "state.pt"))
            searched = BlazeStyleGANConfig.model_validate({
                **distill.student.to_dict(), **found["searched"]})
            architectures[key(searched)] = searched
            for name, student in (("searched", searched), ("uniform", base)):
                trained = distill.model_copy(update={"seed": seed, "student": student})
                # resume=True: a run of the same config already in its directory is scored,
                # not trained again (the state's identity decides)
                score = distill_and_score(trained, teacher, dataset, run / name, count,
                                          resume=True, device=device)
                row = {"scale": scale, "seed": seed, "student": name, "arch": key(student),
                       "budget_ms": budget,
                       "predicted_ms": predicted_ms(speed, student, resolution), **score}
                if name == "searched":
                    row["fit_budget"] = found["fit_budget"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    reference = references(speed_data, reference_students)
    timed = {name: (config, resolution) for name, config in architectures.items()}
    for name, (student, _) in reference.items():
        config = BlazeStyleGANConfig.model_validate(student)
        timed[name] = (config, config.resolution)  # scale 1: the dataset's own graph
    measured = measure(timed, threads, rounds)
    drift = (float(np.median([measured[name] / ms for name, (_, ms) in reference.items()]))
             if reference else None)
    for row in rows:
        row["measured_ms"] = measured[row["arch"]]
        row["predicted_error_pct"] = 100 * (row["predicted_ms"] / row["measured_ms"] - 1)
        if drift is not None:  # the prediction at the host's speed of this hour
            row["predicted_drift_error_pct"] = 100 * (drift * row["predicted_ms"]
                                                      / row["measured_ms"] - 1)
    summary = summarize(rows)
    print(json.dumps(summary, indent=1))
    print(json.dumps({"host_drift": drift}))
    write_json(out / "validation.json", {
        "rows": rows, "summary": summary, "latency_resolution": resolution, "host_drift": drift,
        "machine": machine, "machine_differences": differences,
        "machine_unrecorded": unrecorded,
        "references": {name: {"dataset_ms": ms, "measured_ms": measured[name]}
                       for name, (_, ms) in reference.items()}})
    plot(rows, out / "pareto.png")


def summarize(rows: list[dict]) -> list[dict]:
    """Per scale and student kind: the mean and spread over seeds of quality and latency."""
    table = []
    for scale in sorted({r["scale"] for r in rows}, reverse=True):
        for name in ("searched", "uniform"):
            group = [r for r in rows if r["scale"] == scale and r["student"] == name]
            entry = {"scale": scale, "student": name, "seeds": len(group),
                     "archs": sorted({r["arch"] for r in group})}
            for metric in ("student_swd_mean", "psnr", "ssim", "predicted_ms", "measured_ms",
                           "budget_ms", "predicted_error_pct"):
                values = np.array([r[metric] for r in group], dtype=float)
                entry[metric] = float(values.mean())
                entry[f"{metric}_range"] = [float(values.min()), float(values.max())]
            table.append(entry)
    return table


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in (("searched", "o"), ("uniform", "s")):
        group = [r for r in rows if r["student"] == name]
        ax.scatter([r["measured_ms"] for r in group], [r["student_swd_mean"] for r in group],
                   marker=marker, label=name)
    ax.set_xlabel("measured latency at the search geometry (ms, LiteRT)")
    ax.set_ylabel("student SWD x 1e3 (lower is better)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(typer.run(main))
