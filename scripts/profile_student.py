"""Where a student's milliseconds go: the latency of each unit of its inference graph on LiteRT.

Builds a student preset (random weights with non-zero biases and noise strengths, as a trained
model has: ``pipeline.models.units.randomize_like_trained``) or loads a distilled student, cuts
its inference graph into units (``pipeline.models.units``: the per-invoke overhead, each level's
block, the last head, the mapping network), exports each unit and the whole graph with the
pipeline's own chain (float32 checked against PyTorch), and times them all in one process in
interleaved rounds (XNNPACK, batch 1, median of the rounds' p50s), with the sgemm peak measured
in the same process. A unit's own time is its p50 less the overhead's. Prints the table (ms,
share of the graph, GFLOPs, GFLOP/s, % of the sgemm peak, the TFLite operators of each unit)
and, with ``--json``, writes every figure. Asserts nothing.

    python scripts/profile_student.py --preset blaze-1024 --threads 2
    python scripts/profile_student.py --preset blaze-1024 --head subpixel --threads 2
    python scripts/profile_student.py --student models/student.pt --threads 2
"""

import tempfile
from pathlib import Path

import torch
import typer

from pipeline.io import write_json
from pipeline.metrics import latency
from pipeline.models.blazestylegan import PRESETS, BlazeStyleGAN, BlazeStyleGANConfig, load_student
from pipeline.models.inference import strip_aux_heads
from pipeline.models.units import randomize_like_trained, student_units
from pipeline.profiling.chain import export_for_timing, throughput, time_interleaved


def build(preset: str | None, head: str | None, student: Path | None) -> BlazeStyleGAN:
    if student is not None:
        return load_student(student).eval()
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    if head is not None:
        config = BlazeStyleGANConfig.model_validate({**config.to_dict(), "head": head})
    torch.manual_seed(0)
    return randomize_like_trained(BlazeStyleGAN(config)).eval()


def operator_summary(operators: dict[str, int]) -> str:
    return " ".join(f"{name.lower()}:{count}" for name, count in sorted(operators.items()))


def main(preset: str = typer.Option("blaze-256", help=f"one of {', '.join(PRESETS)}"),
         head: str = typer.Option(None, help="bilinear or subpixel (default: the preset's)"),
         student: Path = typer.Option(None, help="a distilled student snapshot instead"),
         threads: int = typer.Option(2), warmup: int = typer.Option(5),
         runs: int = typer.Option(20), rounds: int = typer.Option(5),
         json_out: Path = typer.Option(None, "--json", help="write every figure here")) -> None:
    model = build(preset, head, student)
    config = model.config
    units = student_units(model)
    graphs = {u.name: (u.model, u.input_dim, None if u.kind in ("overhead", "mapping")
                       else "nchw") for u in units}
    graphs["whole graph"] = (strip_aux_heads(model, "w", "nhwc"), config.w_dim, "nhwc")
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="profile_student-") as tmp:
        exported = {name: export_for_timing(module, torch.randn(2, dim, generator=generator),
                                            Path(tmp) / name.replace(" ", "_"), layout)
                    for name, (module, dim, layout) in graphs.items()}
        peak = max(latency.sgemm_peak_gflops(threads) for _ in range(3))
        timings = time_interleaved({name: e.tflite["float16"] for name, e in exported.items()},
                                   threads, warmup, runs, rounds)
    overhead = timings["overhead"]["p50_ms"]
    rows = {}
    for name, e in exported.items():
        own = timings[name]["p50_ms"] - (0.0 if name == "overhead" else overhead)
        rows[name] = {**timings[name], "own_ms": own, **throughput(own, e.gflops, peak),
                      "float32_max_abs_error": e.float32_max_abs_error,
                      "float16_psnr_db": e.float16_psnr_db, "operators": e.operators}
    whole = rows["whole graph"]["own_ms"]
    synthesis = [n for n, u in zip(rows, units) if u.kind in ("block", "head")]
    summed = sum(rows[n]["own_ms"] for n in synthesis)
    print(f"{'model':<14} {'res':>5} {'head':<9} threads {threads}, sgemm peak {peak:.0f} GFLOP/s")
    print(f"{student or preset:<14} {config.resolution:>5} {config.head:<9}")
    print(f"{'unit':<12} {'ms':>8} {'share':>6} {'GFLOPs':>7} {'GFLOP/s':>8} {'% peak':>6}  "
          f"TFLite operators")
    for name, row in rows.items():
        share = row["own_ms"] / whole if name in synthesis else float("nan")
        print(f"{name:<12} {row['own_ms']:>8.3f} {share:>6.1%} {row['gflops']:>7.3f} "
              f"{row['gflops_per_s']:>8.1f} {row['peak_share']:>6.1%}  "
              f"{operator_summary(row['operators'])}")
    print(f"units of the synthesis network summed: {summed:.3f} ms, the whole graph {whole:.3f} ms "
          f"({summed / whole:.1%}); times less the overhead of one invoke ({overhead:.3f} ms)")
    if json_out is not None:
        write_json(json_out, {
            "model": str(student or preset), "config": config.to_dict(), "threads": threads,
            "sgemm_peak_gflops": peak, "warmup": warmup, "runs": runs, "rounds": rounds,
            "units": rows, "synthesis_units_summed_ms": summed})


if __name__ == "__main__":
    typer.run(main)
