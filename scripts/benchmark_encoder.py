"""LiteRT latency of an encoder preset (random weights) through the export chain.

Builds the preset with random weights (BatchNorm statistics randomised too, so that folding them
is exercised), exports it with the pipeline's own chain (ONNX, onnxsim, onnx2tf float32 and
float16), checks the float32 model's W+ against PyTorch, and times both on LiteRT (XNNPACK,
batch 1, warm-up then timed runs, the evaluate stage's protocol), with GFLOPs (2 x MACs) and the
share of the sgemm peak measured in the same process. Prints JSON; asserts nothing.

    python scripts/benchmark_encoder.py --preset encoder-256 --threads 2
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
import typer

from pipeline.export.onnx_export import export_onnx
from pipeline.export.onnx_simplify import simplify_onnx
from pipeline.export.tflite import onnx_to_tflite
from pipeline.metrics import latency
from pipeline.models.complexity import count_flops
from pipeline.models.encoder import PRESETS, Encoder
from pipeline.runtimes import max_abs_error, run_tflite


def main(preset: str = typer.Option("encoder-256", help=f"one of {', '.join(PRESETS)}"),
         threads: int = typer.Option(2), warmup: int = typer.Option(10),
         runs: int = typer.Option(50), rounds: int = typer.Option(3,
                                                                  help="timed rounds, best kept")
         ) -> None:
    config = PRESETS[preset]
    torch.manual_seed(0)
    encoder = Encoder(config).eval()
    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    r = config.resolution
    images = torch.rand(2, 3, r, r) * 2 - 1
    flops = count_flops(lambda: encoder(images[:1]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(encoder, tmp / "e.onnx", 18, 1, images, 1e-3, input_name="image",
                    output_name="ws")
        simplify_onnx(tmp / "e.onnx", tmp / "s.onnx", images, 1e-4)
        (tmp / "tflite").mkdir()
        paths = onnx_to_tflite(tmp / "s.onnx", tmp / "tflite")
        with torch.no_grad():
            expected = encoder(images).numpy()
        result = {"preset": preset, "resolution": r, "gflops": flops / 1e9,
                  "params_M": sum(p.numel() for p in encoder.parameters()) / 1e6,
                  "threads": threads}
        peak = max(latency.sgemm_peak_gflops(threads) for _ in range(rounds))
        result["sgemm_peak_gflops"] = peak
        for precision, path in paths.items():
            ws = run_tflite(path, np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()),
                            threads)
            best = latency.litert_timing(path, threads, warmup, runs, flops, peak, rounds)
            result[precision] = {"p50_ms": best["p50_ms"], "mean_ms": best["mean_ms"],
                                 "peak_share": best["peak_share"],
                                 "max_abs_error_ws_vs_pytorch": max_abs_error(ws, expected),
                                 "bytes": path.stat().st_size}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    typer.run(main)
