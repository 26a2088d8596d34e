"""The students' inference graphs side by side on LiteRT: every preset with each head variant.

Builds each student preset with each head (``bilinear``, the paper's; ``subpixel``) from random
weights with non-zero biases and noise strengths (as a trained model has), exports its inference
graph (w in, NHWC out) with the pipeline's own chain, checks float32 against PyTorch (max abs
error) and float16 (PSNR on the worst of the check latents), then times all of them in one
process in interleaved rounds (XNNPACK, batch 1, median of the rounds' p50s), with the sgemm peak
measured in the same process. Prints the table (params, GFLOPs, ms, GFLOP/s, % of the sgemm
peak, speed-up over the bilinear head of the same preset) and, with ``--json``, writes every
figure. Asserts nothing.

    python scripts/benchmark_students.py --presets blaze-256,blaze-512,blaze-1024 --threads 2
    python scripts/benchmark_students.py --presets blaze-1024 --heads bilinear \
        --extra 'wide={"preset": "blaze-1024", "head": "subpixel", "head_channels": [32, 32, 32,
                32, 32, 32, 16, 64]}'

``--extra NAME=JSON`` adds a model: a preset (the JSON's ``preset``) with the other keys of the
JSON overriding its config; its speed-up is against the bilinear head of that preset when that
is in the run.
"""

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
import typer

from pipeline.io import write_json
from pipeline.metrics import latency
from pipeline.models.blazestylegan import PRESETS, BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.complexity import blaze_row
from pipeline.models.inference import strip_aux_heads
from pipeline.models.units import randomize_like_trained
from pipeline.profiling.chain import export_for_timing, throughput, time_interleaved


def configs(presets: str, heads: str, extra: list[str]
            ) -> Iterator[tuple[str, str, BlazeStyleGANConfig]]:
    """(name, preset, config) of every model to time."""
    for preset in presets.split(","):
        if preset not in PRESETS:
            raise typer.BadParameter(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
        for head in heads.split(","):
            yield f"{preset} {head}", preset, BlazeStyleGANConfig.model_validate(
                {**PRESETS[preset].to_dict(), "head": head})
    for spec in extra:
        name, _, text = spec.partition("=")
        overrides = json.loads(text)
        preset = overrides.pop("preset")
        yield name, preset, BlazeStyleGANConfig.model_validate({**PRESETS[preset].to_dict(),
                                                                 **overrides})


def main(presets: str = typer.Option("blaze-256,blaze-512,blaze-1024",
                                     help=f"comma-separated, of {', '.join(PRESETS)}"),
         heads: str = typer.Option("bilinear,subpixel", help="comma-separated head variants"),
         extra: list[str] = typer.Option([], help="NAME=JSON: a preset with overrides"),
         threads: int = typer.Option(2), warmup: int = typer.Option(5),
         runs: int = typer.Option(20), rounds: int = typer.Option(5),
         json_out: Path = typer.Option(None, "--json", help="write every figure here")) -> None:
    generator = torch.Generator().manual_seed(0)
    rows, models = {}, {}
    with tempfile.TemporaryDirectory(prefix="benchmark_students-") as tmp:
        for i, (name, preset, config) in enumerate(configs(presets, heads, extra)):
            torch.manual_seed(0)
            student = randomize_like_trained(BlazeStyleGAN(config))
            latents = torch.randn(4, config.w_dim, generator=generator)
            exported = export_for_timing(strip_aux_heads(student, "w", "nhwc"), latents,
                                         Path(tmp) / f"model{i}", "nhwc")
            rows[name] = {"preset": preset, "config": config.to_dict(),
                          "params_M": blaze_row(name, config)["params_M"],
                          "float32_max_abs_error": exported.float32_max_abs_error,
                          "float16_psnr_db": exported.float16_psnr_db,
                          "float16_bytes": exported.tflite["float16"].stat().st_size,
                          "gflops": exported.gflops}
            models[name] = exported.tflite["float16"]
        peak = max(latency.sgemm_peak_gflops(threads) for _ in range(3))
        timings = time_interleaved(models, threads, warmup, runs, rounds)
    for name, row in rows.items():
        row.update(timings[name], **throughput(timings[name]["p50_ms"], row["gflops"], peak))
        base = rows.get(f"{row['preset']} bilinear")
        row["speedup_vs_bilinear"] = base["p50_ms"] / row["p50_ms"] if base else None
    print(f"LiteRT float16, XNNPACK, {threads} threads, sgemm peak {peak:.0f} GFLOP/s, "
          f"median of {rounds} interleaved rounds of {runs} runs")
    print(f"{'model':<22} {'params M':>8} {'GFLOPs':>7} {'ms':>8} {'spread':>7} {'GFLOP/s':>8} "
          f"{'% peak':>6} {'speed-up':>8} {'fp32 err':>9} {'fp16 dB':>7} {'fp16 MB':>7}")
    for name, r in rows.items():
        speedup = f"{r['speedup_vs_bilinear']:.2f}x" if r["speedup_vs_bilinear"] else ""
        print(f"{name:<22} {r['params_M']:>8.3f} {r['gflops']:>7.3f} {r['p50_ms']:>8.2f} "
              f"{r['spread_ms']:>7.2f} {r['gflops_per_s']:>8.1f} {r['peak_share']:>6.1%} "
              f"{speedup:>8} {r['float32_max_abs_error']:>9.2g} {r['float16_psnr_db']:>7.1f} "
              f"{r['float16_bytes'] / 1e6:>7.2f}")
    if json_out is not None:
        write_json(json_out, {"threads": threads, "sgemm_peak_gflops": peak, "warmup": warmup,
                              "runs": runs, "rounds": rounds, "models": rows})


if __name__ == "__main__":
    typer.run(main)
