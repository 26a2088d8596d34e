"""Inference latency on this machine: LiteRT (XNNPACK), ONNX Runtime and PyTorch eager, with the
same protocol for each (the paper's: warm-up runs, then timed runs one image at a time), and the
machine's practical peak measured in the same process, so that a model's achieved FLOP/s can be
compared across machines and noisy runs as a fraction of that peak.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.runtimes import onnx_session, tflite_interpreter


def time_runs(run: Callable[[], object], warmup: int, runs: int) -> dict[str, float]:
    """Call ``run`` ``warmup`` times untimed, then ``runs`` times timed; mean, p50, p90 and
    standard deviation of the timed calls in milliseconds."""
    for _ in range(warmup):
        run()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run()
        times[i] = time.perf_counter() - start
    times *= 1e3
    return {"mean_ms": float(times.mean()), "p50_ms": float(np.percentile(times, 50)),
            "p90_ms": float(np.percentile(times, 90)), "std_ms": float(times.std()),
            "runs": runs}


def litert_runner(path: str | Path, threads: int) -> Callable[[], None]:
    """One inference of a one-input TFLite model on LiteRT's CPU path (XNNPACK delegate, the
    default for float models), on a fixed standard normal input."""
    interpreter = tflite_interpreter(path, threads)
    (source,) = interpreter.get_input_details()
    interpreter.set_tensor(source["index"], _fixed_input(source["shape"], source["dtype"]))
    return interpreter.invoke


def litert_timing(path: str | Path, threads: int, warmup: int, runs: int, flops: float,
                  peak_gflops: float, rounds: int = 1) -> dict[str, float]:
    """:func:`time_runs` of a TFLite model on LiteRT, the round of lowest p50 of ``rounds``, with
    ``peak_share``: ``flops`` per run (2 x MACs) at that p50, as a fraction of the sgemm peak."""
    runner = litert_runner(path, threads)
    timing = min((time_runs(runner, warmup, runs) for _ in range(rounds)),
                 key=lambda t: t["p50_ms"])
    return {**timing, "peak_share": flops / (timing["p50_ms"] / 1e3) / 1e9 / peak_gflops}


def onnxruntime_runner(path: str | Path, threads: int) -> Callable[[], None]:
    """One inference of a one-input ONNX model on ONNX Runtime's CPU provider."""
    session = onnx_session(path, threads)
    (source,) = session.get_inputs()
    feed = {source.name: _fixed_input(source.shape, np.float32)}
    return lambda: session.run(None, feed)


def pytorch_runner(model: nn.Module, latent_dim: int, threads: int) -> Callable[[], None]:
    """One eager inference of ``model`` (latent -> image) on the CPU with ``threads`` threads."""
    torch.set_num_threads(threads)
    latent = torch.from_numpy(_fixed_input((1, latent_dim), np.float32))
    model = model.eval()

    def run():
        with torch.inference_mode():
            model(latent)

    return run


def sgemm_peak_gflops(threads: int, size: int = 1024, runs: int = 10) -> float:
    """The machine's practical float32 peak: GFLOP/s of a large matrix product (PyTorch's
    BLAS), best of ``runs``, with ``threads`` threads."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    best = float("inf")
    for _ in range(runs + 2):  # two warm-up products
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


def _fixed_input(shape, dtype) -> np.ndarray:
    return np.random.default_rng(0).standard_normal([int(d) for d in shape]).astype(dtype)
