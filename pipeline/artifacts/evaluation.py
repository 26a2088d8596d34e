"""The ``evaluate`` stage's results (``metrics/evaluate.json``), read by the report and the
``bundle`` stage and compared across experiments with ``dvc metrics diff``."""

from __future__ import annotations

from typing import Annotated

import pydantic

from pipeline.artifacts.base import Artifact, omitted

SwdLevel = Annotated[str, pydantic.StringConstraints(pattern=r"^swd_\d+$")]  # swd_<resolution>


class ModelSize(Artifact):
    """Parameters and GFLOPs (2 x MACs) of one image, mapping network included."""

    params: int
    gflops: float


class Complexity(Artifact):
    """Size of each generator's inference graph."""

    student: ModelSize
    teacher: ModelSize


class RuntimeTiming(Artifact):
    """One model on one runtime (``pipeline.metrics.latency.time_runs``), batch 1, with its
    achieved GFLOP/s as a fraction of the sgemm peak measured in the same run."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    achieved_gflops: float
    fraction_of_peak: float


class RuntimeLatencies(Artifact):
    """One model on every runtime (the names of ``pipeline.metrics.report.RUNTIMES``)."""

    litert_float16: RuntimeTiming
    litert_float32: RuntimeTiming
    onnxruntime: RuntimeTiming
    pytorch: RuntimeTiming


class Latency(Artifact):
    """Latency on this machine: the sgemm peak and threads of the run, each model's timings."""

    peak_sgemm_gflops: float
    threads: int
    student: RuntimeLatencies
    teacher: RuntimeLatencies


class DeviceTiming(Artifact):
    """benchmark_model on a phone (``pipeline.metrics.android.parse_benchmark_output``); the
    per-run statistics are absent when its version does not print them."""

    init_ms: float
    first_ms: float
    warmup_mean_ms: float
    mean_ms: float
    runs: int | None = pydantic.Field(default=None, exclude_if=omitted)
    min_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)
    max_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)
    std_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)
    p5_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)
    median_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)
    p95_ms: float | None = pydantic.Field(default=None, exclude_if=omitted)


class Similarity(Artifact):
    """Mean PSNR and SSIM of one image set against another, on the same latents."""

    psnr_db: float
    ssim: float


class Similarities(Artifact):
    """The students against the teacher, and the deployed student against its PyTorch model."""

    student_vs_teacher: Similarity
    student_float16_vs_teacher: Similarity
    student_float16_vs_student: Similarity


class ModelQuality(Artifact):
    """SWD x 1e3 per pyramid level (``swd_32``, ``swd_16``, ...: keys of their own, as
    ``pipeline.metrics.swd.SWD.distance`` returns them), their mean, and FID (absent when it
    was not measured)."""

    model_config = pydantic.ConfigDict(extra="allow")
    __pydantic_extra__: dict[SwdLevel, float] = pydantic.Field(init=False)

    swd_mean: float
    fid: float | None = pydantic.Field(default=None, exclude_if=omitted)

    @property
    def swd_levels(self) -> dict[int, float]:
        """SWD per level, keyed by the level's resolution, finest first."""
        levels = {int(key.removeprefix("swd_")): value
                  for key, value in (self.model_extra or {}).items()}
        return dict(sorted(levels.items(), reverse=True))


class Quality(Artifact):
    """Each image set against the reference set of real images."""

    teacher: ModelQuality
    student: ModelQuality
    student_float16: ModelQuality   # the deployed float16 TFLite model on LiteRT


class Evaluation(Artifact):
    """``metrics/evaluate.json``: built by ``pipeline.metrics.evaluate.evaluate``."""

    complexity: Complexity
    latency: Latency
    # benchmark_model per TFLite file ("student_float16", ...); absent without a phone
    android: dict[str, DeviceTiming] | None = pydantic.Field(default=None, exclude_if=omitted)
    similarity: Similarities
    quality: Quality
    samples: int                         # generated images per model
    fid_unavailable_reason: str | None   # None: FID was measured
