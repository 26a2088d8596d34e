"""The speed model unit by unit: each unit of some students, predicted and timed now.

For each ``--arch`` (``c<level widths>-h<last head width>``, e.g. ``c128-96-16-h8``, and
``-d<convolutions per level>`` where a level's block has one, e.g. ``c128-96-16-h8-d212``: the
``distill.student`` of ``--params`` with those widths), the units of its graph at
``--latency-resolution`` (:func:`pipeline.search.geometry.latency_sizes`, as the search budgets
it) are built as ``measure_latency`` builds its micro-models
(:func:`pipeline.profiling.speed_data.unit_model`) and exported with the whole graph
(:func:`pipeline.search.geometry.scaled_graph`) through the pipeline's chain; all are timed in one
process, interleaved (LiteRT float16, XNNPACK). Prints, per unit and per whole graph, the
prediction of every ``--speed-model`` against the p50 measured; a whole graph's row also has the
sum of its units' measured latencies (the additivity the speed model assumes). With no
``--speed-model`` it only measures; with ``--no-units`` it builds and times the whole graphs only
(architectures compared at one timing: the latency search's validation). Asserts nothing.

    python scripts/speed_model_units.py --speed-model models/speed_model.pt \\
        --arch c128-96-16-h8 --arch c32-32-16-h16
    python scripts/speed_model_units.py --no-units --arch c128-120-48-h16 --arch c48-48-24-h24
"""

import tempfile
from pathlib import Path

import torch
import typer

from pipeline.config import read_yaml
from pipeline.models.blazestylegan import BlazeStyleGANConfig
from pipeline.profiling.chain import export_for_timing, time_interleaved
from pipeline.profiling.speed_data import (
    UnitSpec,
    machine_note,
    machine_record,
    unit_model,
)
from pipeline.profiling.speed_model import load_speed_model, student_units
from pipeline.search.geometry import latency_sizes, scaled_graph

DEFAULTS = Path(__file__).resolve().parents[1] / "params.yaml"


def parse_arch(arch: str, base: BlazeStyleGANConfig) -> BlazeStyleGANConfig:
    try:
        levels, head = arch.removeprefix("c").split("-h")
        head, _, lengths = head.partition("-d")
        channels = [int(c) for c in levels.split("-")]
        return BlazeStyleGANConfig.model_validate({
            **base.to_dict(), "channels": channels,
            "head_channels": [*base.head_channels[:-1], int(head)],
            "convs": [int(n) for n in lengths] if lengths else base.convs})
    except ValueError as error:
        raise typer.BadParameter(f"--arch {arch!r}: c<widths>-h<width>[-d<convs>] with "
                                 f"{len(base.channels)} level widths ({error})") from None


def spec_of(family: str, size: int, cin: float, cout: float, head: str) -> UnitSpec:
    if family.startswith("head"):
        return UnitSpec(kind="head", size=size, in_channels=int(cin), out_channels=int(cout),
                        head=head)
    return UnitSpec(kind="block", size=size, in_channels=int(cin), out_channels=int(cout),
                    upsample=not family.startswith("block-const"),
                    convs=1 if family.endswith("-short") else 2)


def main(speed_model: list[Path] = typer.Option([], help="speed model snapshot(s); none: "
                                                "measured latencies only"),
         arch: list[str] = typer.Option(..., help="c<level widths>-h<last head width>"
                                        "[-d<convolutions per level>]"),
         params: Path = typer.Option(DEFAULTS, help="params file (distill.student)"),
         latency_resolution: int = typer.Option(256, help="as search_architecture's"),
         threads: int = typer.Option(2), rounds: int = typer.Option(7),
         units: bool = typer.Option(True, help="time each graph's units too")) -> None:
    base = BlazeStyleGANConfig.model_validate(read_yaml(params)["distill"]["student"])
    speeds = [load_speed_model(p) for p in speed_model]
    machine = machine_record(threads)
    print(f"this machine: {machine['cpu']} ({machine['cpu_id']}; {machine['isa']}; "
          f"{machine['caches']}), {threads} threads, LiteRT {machine['litert']}")
    for i, (path, speed) in enumerate(zip(speed_model, speeds)):
        print(machine_note(f"model {i} ({path})", speed.config.machine, machine))
    inputs = torch.randn(2, base.w_dim, generator=torch.Generator().manual_seed(0))
    paths, units_of, predicted = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="units-") as tmp, torch.no_grad():
        for name in arch:
            config = parse_arch(name, base)
            graph_units = student_units(config.channels, config.head_channels[-1],
                                        latency_sizes(config, latency_resolution), config.head,
                                        config.level_convs)
            units_of[name] = []
            for unit in graph_units if units else []:
                spec = spec_of(*unit, config.head)
                units_of[name].append(spec.key)
                predicted[spec.key] = [float(s.unit_ms(*unit)) for s in speeds]
                if spec.key not in paths:
                    paths[spec.key] = export_for_timing(
                        unit_model(spec, config.w_dim, 0), inputs, Path(tmp) / spec.key,
                        "nchw").tflite["float16"]
            predicted[name] = [float(s.student_ms(graph_units)) for s in speeds]
            paths[name] = export_for_timing(scaled_graph(config, latency_resolution), inputs,
                                            Path(tmp) / name, "nhwc").tflite["float16"]
        timed = time_interleaved(paths, threads, 5, 20, rounds, shuffle_seed=0)
    columns = ["unit or graph", "measured ms (CV)",
               *(f"model {i} ms (error)" for i in range(len(speeds))),
               *(["sum of units measured"] if units else [])]
    print("| " + " | ".join(columns) + " |")
    print("| --- " * len(columns) + "|")
    for name in arch:
        for key in [*units_of[name], name]:
            ms = timed[key]["p50_ms"]
            cells = [key, f"{ms:.3f} ({timed[key]['cv']:.2f})",
                     *(f"{p:.3f} ({100 * (p / ms - 1):+.1f}%)" for p in predicted[key])]
            if units:
                cells.append(f"{sum(timed[k]['p50_ms'] for k in units_of[name]):.3f}"
                             if key == name else "")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    typer.run(main)
