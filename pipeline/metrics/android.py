"""On-device latency on an Android phone with TFLite's ``benchmark_model`` over adb.

The model and the benchmark binary (built for the phone's ABI, e.g. TensorFlow's
``android_aarch64_benchmark_model``) are pushed to ``/data/local/tmp``, the binary runs there with
the requested threads (and the GPU delegate if asked), and its summary line
``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ...,
Inference (avg): ...``
is parsed, with the per-run statistics line (``count=... min=... max=... avg=... std=...``)
that follows the timed runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pipeline.errors import PipelineError

REMOTE_DIR = "/data/local/tmp"

_SUMMARY = re.compile(r"Inference timings in us: Init: (?P<init>[\d.]+), First inference: "
                      r"(?P<first>[\d.]+), Warmup \(avg\): (?P<warmup>[\d.e+]+), "
                      r"Inference \(avg\): (?P<avg>[\d.e+]+)")
_STATS = re.compile(r"count=\d+ first=.*")   # count=50 first=.. curr=.. min=.. max=.. avg=.. std=..
_FIELD = re.compile(r"(\w+)=([\d.e+]+)")


class AndroidBenchmarkError(PipelineError):
    """adb or benchmark_model failed, or printed no timings."""


def benchmark_commands(serial: str, model: str | Path, binary: str | Path, threads: int,
                       use_gpu: bool, warmup: int, runs: int, adb: str = "adb") -> list[list[str]]:
    """The adb commands that push ``model`` and ``binary`` to the device ``serial`` and run
    exactly ``warmup`` + ``runs`` inferences (no time-based extra runs)."""
    model, binary = Path(model), Path(binary)
    remote_model, remote_binary = f"{REMOTE_DIR}/{model.name}", f"{REMOTE_DIR}/{binary.name}"
    device = [adb, "-s", serial]
    return [
        [*device, "push", str(binary), remote_binary],
        [*device, "shell", "chmod", "755", remote_binary],
        [*device, "push", str(model), remote_model],
        [*device, "shell", remote_binary, f"--graph={remote_model}", f"--num_threads={threads}",
         f"--use_gpu={str(use_gpu).lower()}", f"--warmup_runs={warmup}", "--warmup_min_secs=0",
         f"--num_runs={runs}", "--min_secs=0"],
    ]


def parse_benchmark_output(text: str) -> dict[str, float]:
    """Timings in milliseconds from benchmark_model's output: init, first inference, warm-up
    mean, inference mean, and (when printed) min, max, std and the count of timed runs."""
    summaries = list(_SUMMARY.finditer(text))
    if not summaries:
        raise AndroidBenchmarkError("benchmark_model printed no 'Inference timings in us' line; "
                                    f"the end of its output:\n{text[-1500:]}")
    summary = summaries[-1]
    result = {"init_ms": float(summary["init"]) / 1e3, "first_ms": float(summary["first"]) / 1e3,
              "warmup_mean_ms": float(summary["warmup"]) / 1e3,
              "mean_ms": float(summary["avg"]) / 1e3}
    stats = _STATS.findall(text[:summary.start()])
    if stats:  # the last statistics line before the summary is that of the timed runs
        fields = dict(_FIELD.findall(stats[-1]))
        result["runs"] = int(fields["count"])
        for key in ("min", "max", "std", "p5", "median", "p95"):  # percentiles: newer versions
            if key in fields:
                result[f"{key}_ms"] = float(fields[key]) / 1e3
    return result


def run_benchmark(serial: str, model: str | Path, binary: str | Path, threads: int,
                  use_gpu: bool, warmup: int, runs: int, adb: str = "adb",
                  timeout_s: float = 600) -> dict[str, float]:
    """Run :func:`benchmark_commands` and parse the timings."""
    if not Path(binary).is_file():
        raise AndroidBenchmarkError(f"{binary}: benchmark_model binary not found")
    output = ""
    for command in benchmark_commands(serial, model, binary, threads, use_gpu, warmup, runs, adb):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AndroidBenchmarkError(f"`{' '.join(command)}` failed: {e}") from None
        if result.returncode != 0:
            raise AndroidBenchmarkError(f"`{' '.join(command)}` exited with {result.returncode}:\n"
                                        f"{(result.stdout + result.stderr)[-1500:]}")
        output = result.stdout + result.stderr
    return parse_benchmark_output(output)
