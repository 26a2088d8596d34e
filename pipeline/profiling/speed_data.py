"""The latency search's speed-model data (the ``measure_latency`` stage): micro-models of the
student's units over sampled configurations, each exported by the pipeline's own chain and timed
on LiteRT with the evaluate stage's protocol (warm-up runs, then timed runs one input at a time),
in shuffled passes.

* **Units** (:mod:`pipeline.models.units`): a level's block (2x bilinear upsampling and two
  modulated separable convolutions; the first level's, from the learned 2x2 constant, has no
  upsampling; a short block, the first convolution only, as the search's block-length
  variables leave) of feature size s and widths in -> out, and the last head (feature size R / 4,
  input width, hidden width, head variant). The mapping network and the per-invoke overhead are
  measured once, as constants.
* **Configurations**: feature sizes from the preset's geometry (``measure_latency.preset``: the
  256 px preset's by default, where latency means something), widths multiples of 8 up to
  ``widen`` times the preset's widest, drawn with a seeded generator; with ``preset_units``, the
  preset's own units too; with ``short_blocks`` / ``log_short_blocks``, blocks of one
  convolution; with ``student_short_share``, whole students with some levels of one.
* **Timing**: every micro-model in one process, ``passes`` passes each in its own shuffled order
  (warm-up, ``runs`` timed runs, p50), a point's latency the median of its passes' p50s less the
  overhead's; points whose passes vary by more than ``max_cv`` are timed ``remeasure_passes``
  more times.
* **Operators**: all micro-models of one kind have the same TFLite operators, and those are
  operators the preset's whole inference graph uses (the micro-model's input scaffolding apart).
  The graph they are checked against is the preset's at 8 channels everywhere: the same levels,
  head and operators (a width changes no operator), converted in seconds rather than half a
  minute.
* **Resumable**: each exported micro-model is kept in the state directory as soon as it is
  checked, with a fingerprint of what it is (its unit, the student's w_dim, the seed, the source
  of the code that builds and converts it, the converters' versions), so a killed run exports
  only what it had not, and a changed param or code re-exports what it changed; timing is redone
  whole (seconds).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import platform
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch
from torch import nn

from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, write_json
from pipeline.models.blazestylegan import (
    PRESETS,
    BlazeStyleGAN,
    BlazeStyleGANConfig,
    UpToRGB,
    level_block,
)
from pipeline.models.inference import strip_aux_heads
from pipeline.models.units import BlockUnit, HeadUnit, Overhead, randomize_like_trained
from pipeline.profiling.chain import export_for_timing, summarize_rounds, time_interleaved
from pipeline.profiling.families import block_family

log = logging.getLogger(__name__)
SCAFFOLDING = {"STRIDED_SLICE"}  # a unit's own input plumbing (units.BlockUnit), not the graph's


class MeasureLatencyConfig(StageConfig):
    """The ``measure_latency`` section of params.yaml."""

    preset: str                      # the student preset whose geometry is sampled
    head: Literal["bilinear", "subpixel"]
    w_dim: PositiveInt | None        # the searched student's (style affines); None: the preset's
    widen: Annotated[float, pydantic.Field(ge=1)]  # widths up to widen x the preset's widest
    blocks: Annotated[int, pydantic.Field(ge=0)]   # sampled block configurations (beyond the
    heads: Annotated[int, pydantic.Field(ge=0)]    # preset's own) and sampled head ones
    log_blocks: Annotated[int, pydantic.Field(ge=0)] = 0  # more of each, their widths drawn
    log_heads: Annotated[int, pydantic.Field(ge=0)] = 0   #   log-uniformly (the narrow corner)
    # blocks of one convolution (the search's block-length choice), drawn as the blocks are
    short_blocks: Annotated[int, pydantic.Field(ge=0)] = 0
    log_short_blocks: Annotated[int, pydantic.Field(ge=0)] = 0
    const_share: Annotated[float, pydantic.Field(ge=0, le=1)]  # of the blocks: first-level ones
    sizes: list[PositiveInt] | None  # a searched geometry's level sizes; None: the preset's
    preset_units: bool                             # measure the preset's own units too
    students: Annotated[int, pydantic.Field(ge=0)]  # whole random students (additivity check)
    # the chance that a random student's level has one convolution (0: two everywhere)
    student_short_share: Annotated[float, pydantic.Field(ge=0, le=1)] = 0.0
    seed: int
    threads: PositiveInt
    warmup: PositiveInt
    runs: PositiveInt
    passes: Annotated[int, pydantic.Field(ge=2)]
    max_cv: Annotated[float, pydantic.Field(gt=0)]
    remeasure_passes: Annotated[int, pydantic.Field(ge=0)]

    @pydantic.field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown student preset {value!r}; one of {', '.join(PRESETS)}")
        return value

    @pydantic.model_validator(mode="after")
    def _something_to_measure(self):
        drawn = (self.blocks, self.heads, self.log_blocks, self.log_heads, self.short_blocks,
                 self.log_short_blocks)
        if not any(drawn) and not self.preset_units:
            raise ValueError("no blocks or heads are drawn and preset_units is false: nothing "
                             "to measure")
        return self

    @pydantic.model_validator(mode="after")
    def _preset_sizes(self):
        preset = [r // 4 for r in PRESETS[self.preset].levels]
        if self.sizes is not None:
            if len(set(self.sizes)) < 2 or any(s not in preset for s in self.sizes):
                raise ValueError(f"sizes {self.sizes}: two or more feature sizes of preset "
                                 f"{self.preset} ({', '.join(map(str, preset))}), or null")
            if max(self.sizes) != preset[-1]:  # where the heads are measured
                raise ValueError(f"sizes {self.sizes}: must end at preset {self.preset}'s last "
                                 f"feature size {preset[-1]}, where its head's input is")
        return self

    def student(self) -> BlazeStyleGANConfig:
        """The preset with the head variant (and w_dim) measured."""
        preset = PRESETS[self.preset].to_dict()
        return BlazeStyleGANConfig.model_validate({
            **preset, "head": self.head,
            "w_dim": preset["w_dim"] if self.w_dim is None else self.w_dim})


class UnitSpec(pydantic.BaseModel):
    """One micro-model: a block (feature size, widths in -> out, upsampling or not, one or two
    convolutions) or a head (input feature size, input width, hidden width ``out_channels``,
    variant)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    kind: Literal["block", "head"]
    size: PositiveInt
    in_channels: PositiveInt
    out_channels: PositiveInt
    upsample: bool = True
    head: Literal["bilinear", "subpixel"] = "bilinear"
    convs: Literal[1, 2] = 2  # a block's convolutions

    @property
    def family(self) -> str:
        """Micro-models of one family have the same operators: ``block``, ``block-const`` (the
        first level's), either with ``-short`` (one convolution), or ``head-<variant>``."""
        if self.kind == "block":
            return block_family(self.upsample, self.convs)
        return f"head-{self.head}"

    @property
    def key(self) -> str:
        if self.kind == "block":
            return (f"block-s{self.size}-i{self.in_channels}-o{self.out_channels}"
                    f"{'' if self.upsample else '-const'}{'-short' if self.convs == 1 else ''}")
        return f"head-{self.head}-s{self.size}-i{self.in_channels}-h{self.out_channels}"


def preset_units(student: BlazeStyleGANConfig) -> list[UnitSpec]:
    """The units of the student's own inference graph."""
    specs, in_ch = [], student.channels[0]
    for level, (resolution, out_ch, convs) in enumerate(zip(student.levels, student.channels,
                                                            student.level_convs)):
        specs.append(UnitSpec(kind="block", size=resolution // 4, in_channels=in_ch,
                              out_channels=out_ch, upsample=level > 0, convs=convs))
        in_ch = out_ch
    specs.append(UnitSpec(kind="head", size=student.resolution // 4,
                          in_channels=student.channels[-1],
                          out_channels=student.head_channels[-1], head=student.head))
    return specs


def sample_units(config: MeasureLatencyConfig) -> list[UnitSpec]:
    """``blocks`` + ``heads`` sampled units (no duplicates), after the preset's own ones when
    ``config.preset_units``. A share ``const_share`` of the blocks are first-level ones (from a
    constant, no upsampling). By default blocks are drawn at the preset's feature sizes, the
    first-level ones at any of them: a search that budgets a student's latency at a larger
    feature size than it trains at (``search.latency_resolution``) meets them there. With
    ``config.sizes``, the level sizes of the geometry a search budgets, first-level blocks are
    drawn at the smallest and the others at the rest. Then ``log_blocks`` + ``log_heads`` more,
    drawn alike but with each width log-uniform (probability ~ 1 / width): the narrow widths
    a tight budget searches, where a uniform draw leaves the speed model extrapolating (a head
    8 wide predicted 28-31% fast: README). Then ``short_blocks`` + ``log_short_blocks``
    blocks of one convolution, drawn as the blocks are. Each draw has its own random stream,
    so asking for more of one keeps the others' units and their cached exports."""
    student = config.student()
    widths = _widths(student, config.widen)
    specs = dict.fromkeys(preset_units(student) if config.preset_units else [])
    sizes = [r // 4 for r in student.levels]
    # first-level blocks at any of the preset's sizes, or at the first of a searched geometry's
    geometry = sizes if config.sizes is None else sorted(set(config.sizes))
    first, upsampled = (sizes if config.sizes is None else geometry[:1]), geometry[1:]
    draws = ((0, "block", config.blocks, False, 2), (1, "head", config.heads, False, 2),
             (3, "block", config.log_blocks, True, 2), (4, "head", config.log_heads, True, 2),
             (5, "block", config.short_blocks, False, 1),
             (6, "block", config.log_short_blocks, True, 1))
    for stream, kind, count, log_uniform, convs in draws:  # stream 2: sample_students'
        rng = np.random.default_rng([config.seed, stream])
        p = {k: _draw_weights(w, log_uniform) for k, w in widths.items()}
        wanted, tries = len(specs) + count, 0
        while len(specs) < wanted and tries < 100 * (count + 1):
            tries += 1
            cin, cout = (int(c) for c in rng.choice(widths[kind], 2, p=p[kind]))
            if kind == "block":
                const = bool(rng.random() < config.const_share)
                size = int(rng.choice(first if const else upsampled))
                spec = UnitSpec(kind="block", size=size, in_channels=cin, out_channels=cout,
                                upsample=not const, convs=convs)
            else:
                cin = int(rng.choice(widths["block"], p=p["block"]))
                spec = UnitSpec(kind="head", size=student.resolution // 4, in_channels=cin,
                                out_channels=cout, head=student.head)
            specs.setdefault(spec)
        if len(specs) < wanted:
            log.warning("only %d distinct %s configurations of the %d asked for exist at widen "
                        "%g", count - (wanted - len(specs)), kind, count, config.widen)
    return list(specs)


def _draw_weights(widths: np.ndarray, log_uniform: bool) -> np.ndarray | None:
    """Probabilities of drawing each width: uniform (None), or ~ 1 / width (log-uniform)."""
    if not log_uniform:
        return None
    weights = 1.0 / widths
    return weights / weights.sum()


def _widths(student: BlazeStyleGANConfig, widen: float) -> dict[str, np.ndarray]:
    """The widths sampled: multiples of 8 up to ``widen`` x the student's widest block and
    last head."""
    widest = {"block": max(student.channels), "head": student.head_channels[-1]}
    return {kind: np.arange(8, max(int(w * widen), 8) + 1, 8) for kind, w in widest.items()}


def sample_students(config: MeasureLatencyConfig) -> list[BlazeStyleGANConfig]:
    """``students`` whole students at the preset's geometry, each level's width (and the last
    head's) a multiple of 8 up to ``widen`` x the preset's: the students a width search of the
    preset widened by ``widen`` can return. Their measured latency against the sum of their
    units' predicted ones is the speed model's additivity check (``fit_speed_model``). With
    ``student_short_share``, each level has one convolution with that chance (drawn from a
    stream of its own: the widths are those drawn without it)."""
    student = config.student()
    rng = np.random.default_rng([config.seed, 2])
    lengths = np.random.default_rng([config.seed, 7])
    students = []
    for _ in range(config.students):
        channels = [int(rng.choice(np.arange(8, max(int(c * config.widen), 8) + 1, 8)))
                    for c in student.channels]
        widest_head = max(int(student.head_channels[-1] * config.widen), 8)
        head = int(rng.choice(np.arange(8, widest_head + 1, 8)))
        convs = None
        if config.student_short_share > 0:
            convs = [1 if lengths.random() < config.student_short_share else 2
                     for _ in channels]
        students.append(BlazeStyleGANConfig.model_validate({
            **student.to_dict(), "channels": channels,
            "head_channels": [*student.head_channels[:-1], head],
            "convs": convs if convs is not None and min(convs) < 2 else None}))
    return students


def student_key(student: BlazeStyleGANConfig) -> str:
    lengths = "" if student.convs is None else f"-d{''.join(map(str, student.convs))}"
    return (f"student-c{'-'.join(map(str, student.channels))}-h{student.head_channels[-1]}"
            f"{lengths}-{student.head}")


def unit_model(spec: UnitSpec, w_dim: int, seed: int) -> nn.Module:
    """The micro-model of ``spec``, the student's own modules with random weights (non-zero
    biases and noise, as trained) and a standard normal constant feature input."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if spec.kind == "block":
        size_in = spec.size // 2 if spec.upsample else spec.size
        convs = level_block(spec.in_channels, spec.out_channels, w_dim, spec.size, noise=True,
                            convs=spec.convs)
        features = torch.randn(1, spec.in_channels, size_in, size_in, generator=generator)
        model = BlockUnit(features, convs, upsample=spec.upsample)
    else:
        features = torch.randn(1, spec.in_channels, spec.size, spec.size, generator=generator)
        model = HeadUnit(features, UpToRGB(spec.in_channels, spec.out_channels, w_dim, spec.head))
    return randomize_like_trained(model, seed).eval()


def tool_versions() -> dict[str, str | None]:
    """Versions of the packages that convert and run the micro-models."""
    def version(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {name: version(package) for name, package in (
        ("litert", "ai-edge-litert"), ("onnx2tf", "onnx2tf"), ("tensorflow", "tensorflow"),
        ("torch", "torch"))}


# CPU features XNNPACK chooses its kernels by, as /proc/cpuinfo names them (x86, then Arm): on
# machines that differ in them other kernels run, at other relative speeds.
ISA_FEATURES = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "asimd", "asimdhp",
                "asimddp", "fphp", "sve", "sve2", "i8mm", "bf16")
# What a machine record must match for latencies measured on two machines to compare: the CPU,
# the threads, and the runtime and converters (they make the graph that runs).
MACHINE_IDENTITY = ("cpu", "cpu_id", "isa", "caches", "threads", "litert", "onnx2tf",
                    "tensorflow")
CPUINFO = Path("/proc/cpuinfo")
CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def _cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; {} where there is none."""
    try:
        lines = CPUINFO.read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _caches() -> str | None:
    """The first CPU's caches from sysfs, e.g. ``"L1d 48K, L1i 32K, L2 1024K, L3 32768K"``."""
    sizes = []
    for index in sorted(CACHES.glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip()
                                 for name in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        sizes.append(f"L{level}{suffix} {size}")
    return ", ".join(sizes) or None


def machine_record(threads: int) -> dict[str, Any]:
    """What the latencies were measured on: the CPU (its name, which a VM may reduce to a family
    name; its family / model / stepping or Arm part; the ISA features of :data:`ISA_FEATURES` it
    has; its caches), CPU count, threads, runtime versions. The CPU is the first one's: on a CPU
    of two core types (big.LITTLE, hybrid) that may be the small kind."""
    info = _cpu_info()
    ids = [f"{key} {info[key]}" for key in ("cpu family", "model", "stepping", "CPU implementer",
                                            "CPU part", "CPU variant") if key in info]
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_id": ", ".join(ids) or None,
            "isa": " ".join(f for f in ISA_FEATURES if f in flags) or None,
            "caches": _caches(), "cpu_count": os.cpu_count(), "threads": threads,
            "machine": platform.machine(), **tool_versions()}


def machine_differences(recorded: dict[str, Any], current: dict[str, Any]
                        ) -> tuple[list[str], list[str]]:
    """How a machine record (a dataset's, a speed model's) compares with ``current`` in
    :data:`MACHINE_IDENTITY`: the keys whose values differ, one ``"key: recorded -> current"``
    each, and the keys the record lacks (one made before they were recorded: no telling)."""
    unrecorded = [key for key in MACHINE_IDENTITY if key not in recorded]
    differ = [f"{key}: {recorded[key]} -> {current.get(key)}" for key in MACHINE_IDENTITY
              if key in recorded and recorded[key] != current.get(key)]
    return differ, unrecorded


def machine_note(name: str, recorded: dict[str, Any], current: dict[str, Any]) -> str:
    """One line on whether ``name`` (a speed model) was measured on this kind of machine."""
    differ, unrecorded = machine_differences(recorded, current)
    if differ:
        return f"{name} was measured on another machine: {'; '.join(differ)}"
    if unrecorded:
        return (f"{name}: no telling whether it was measured on this kind of machine (its "
                f"record lacks {', '.join(unrecorded)})")
    return f"{name} was measured on this kind of machine"


def code_digest() -> str:
    """A hash of what an exported micro-model depends on: the source of the modules that build,
    export and convert it, of this module's builders (not of the whole module: editing how the
    points are timed or stored re-exports nothing), and the converters' and runtimes' versions."""
    import pipeline.export.onnx_export as onnx_export
    import pipeline.export.onnx_simplify as onnx_simplify
    import pipeline.export.tflite as tflite
    import pipeline.models.blazestylegan as blazestylegan
    import pipeline.models.inference as inference
    import pipeline.models.layers as layers
    import pipeline.models.stylegan2 as stylegan2
    import pipeline.models.units as units
    import pipeline.profiling.chain as chain

    digest = hashlib.sha256()
    for module in (onnx_export, onnx_simplify, tflite, blazestylegan, inference, layers,
                   stylegan2, units, chain):
        digest.update(Path(module.__file__).read_bytes())
    for builder in (unit_model, student_model, operator_reference, graph_mapping, _exported):
        digest.update(inspect.getsource(builder).encode())
    digest.update(json.dumps(tool_versions(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _exported(name: str, what: dict, model: nn.Module | Callable[[], nn.Module],
              input_dim: int, layout: str | None, state: Path, seed: int, code: str) -> dict:
    """Export ``model`` (or the model a factory builds) into ``state/name`` unless a checked
    export of the same fingerprint (``what`` it is, its input, seed, ``code``:
    :func:`code_digest`) is there already; its record (FLOPs, checks, operators, the float16
    file). An unreadable record (a run killed while writing it, in spite of the atomic write)
    counts as none."""
    directory = state / name
    record_path = directory / "export.json"
    fingerprint = _digest_of({"what": what, "input_dim": input_dim, "seed": seed, "code": code})
    try:
        record = json.loads(record_path.read_text())
        if record.get("fingerprint") == fingerprint:
            return record
    except (OSError, ValueError):
        pass
    inputs = torch.randn(2, input_dim, generator=torch.Generator().manual_seed(seed))
    if not isinstance(model, nn.Module):
        model = model()
    exported = export_for_timing(model, inputs, directory, layout)
    for leftover in ("model.onnx", "simplified.onnx", "model_float32.tflite"):
        (directory / leftover).unlink(missing_ok=True)
    record = {"fingerprint": fingerprint, "gflops": exported.gflops,
              "float32_max_abs_error": exported.float32_max_abs_error,
              "float16_psnr_db": exported.float16_psnr_db, "operators": exported.operators,
              "tflite": str(exported.tflite["float16"].relative_to(state))}
    write_json(record_path, record)  # last: its presence marks a finished export
    return record


def check_operators(records: dict[str, dict], specs: dict[str, UnitSpec],
                    graph_ops: set[str]) -> dict[str, dict[str, int]]:
    """Every micro-model of one kind (block with or without upsampling, head variant) has the
    same operators, and they are operators of the whole graph; returns them per kind."""
    per_kind: dict[str, dict[str, int]] = {}
    for key, spec in specs.items():
        kind = spec.family
        ops = records[key]["operators"]
        if kind in per_kind and per_kind[kind] != ops:
            raise PipelineError(f"micro-model {key}: TFLite operators {ops} differ from the "
                                f"other {kind} micro-models' {per_kind[kind]}")
        foreign = set(ops) - graph_ops - SCAFFOLDING
        if foreign:
            raise PipelineError(f"micro-model {key}: operators {sorted(foreign)} are not in the "
                                f"whole graph's; it does not measure what the model runs")
        per_kind[kind] = ops
    return per_kind


def measure_latency(config: MeasureLatencyConfig, *, state: Path, out: Path) -> dict:
    """Export (resumably, into ``state``) and time the micro-models and whole students; write the
    dataset to the directory ``out`` (``points.json``); return the stage's metrics."""
    student = config.student()
    specs = {spec.key: spec for spec in sample_units(config)}
    students = {student_key(s): s for s in sample_students(config)}
    state.mkdir(parents=True, exist_ok=True)
    code = code_digest()
    models = {  # name: (what it depends on, model, input size, output layout)
        "overhead": ({"w_dim": student.w_dim}, Overhead(), student.w_dim, None),
        "graph_operators": (student.to_dict(), operator_reference(student, config.seed),
                            student.w_dim, "nhwc"),
        "mapping": (student.mapping_config().to_dict(), graph_mapping(student, config.seed),
                    student.z_dim, None)}
    for key, spec in specs.items():
        models[key] = ({**spec.model_dump(), "w_dim": student.w_dim},
                       lambda spec=spec: unit_model(spec, student.w_dim,
                                                    _seed_of(spec.key, config.seed)),
                       student.w_dim, "nchw")
    for key, whole in students.items():
        models[key] = (whole.to_dict(), lambda whole=whole: student_model(whole, config.seed),
                       student.w_dim, "nhwc")
    records = {}
    for i, (name, (what, model, dim, layout)) in enumerate(models.items()):
        log.info("model %d/%d: %s", i + 1, len(models), name)
        records[name] = _exported(name, what, model, dim, layout, state,
                                  _seed_of(name, config.seed), code)
    operators = check_operators(records, specs, set(records["graph_operators"]["operators"]))
    del records["graph_operators"]  # not timed: it stands for the graph's operators only
    timings = _timed(records, state, config)
    overhead = timings["overhead"]["p50_ms"]
    points = [{**spec.model_dump(), "key": key, "gflops": records[key]["gflops"],
               "latency_ms": timings[key]["p50_ms"] - overhead, **timings[key],
               "operators": records[key]["operators"]} for key, spec in specs.items()]
    wholes = [{"key": key, "student": whole.to_dict(), "gflops": records[key]["gflops"],
               "units": [spec.model_dump() for spec in preset_units(whole)],
               "latency_ms": timings[key]["p50_ms"], **timings[key]}
              for key, whole in students.items()]
    dataset = {"machine": machine_record(config.threads), "config": config.to_dict(),
               "student": student.to_dict(), "overhead_ms": overhead,
               "mapping_ms": timings["mapping"]["p50_ms"] - overhead, "operators": operators,
               "points": points, "students": wholes}
    with atomic_path(out, directory=True) as tmp:
        write_json(tmp / "points.json", dataset)
    cvs = [p["cv"] for p in points + wholes]
    return {"points": len(points), "blocks": sum(p["kind"] == "block" for p in points),
            "short_blocks": sum(p["kind"] == "block" and p["convs"] == 1 for p in points),
            "heads": sum(p["kind"] == "head" for p in points), "students": len(wholes),
            "overhead_ms": overhead, "mapping_ms": dataset["mapping_ms"], "max_cv": max(cvs),
            "median_cv": float(np.median(cvs)),
            "remeasured": sum(len(p["rounds_ms"]) > config.passes for p in points + wholes),
            "machine": dataset["machine"],
            "digest": _digest_of(sorted(p["key"] for p in points + wholes))}  # what was measured


def student_model(student: BlazeStyleGANConfig, seed: int) -> nn.Module:
    """A whole student's inference graph (w in, NHWC image out), random weights as trained."""
    torch.manual_seed(seed)
    return strip_aux_heads(randomize_like_trained(BlazeStyleGAN(student), seed), "w", "nhwc")


def operator_reference(student: BlazeStyleGANConfig, seed: int) -> nn.Module:
    """The student's inference graph (w in, NHWC out) at 8 channels everywhere: its operators."""
    narrow = BlazeStyleGANConfig.model_validate({
        **student.to_dict(), "channels": [8] * len(student.levels),
        "head_channels": [8] * len(student.levels)})
    torch.manual_seed(seed)
    return strip_aux_heads(randomize_like_trained(BlazeStyleGAN(narrow), seed), "w", "nhwc")


def graph_mapping(student: BlazeStyleGANConfig, seed: int) -> nn.Module:
    """The preset's mapping network (z -> w), random weights."""
    torch.manual_seed(seed)
    return BlazeStyleGAN(student).mapping.eval()


def _timed(records: dict[str, dict], state: Path, config: MeasureLatencyConfig) -> dict:
    """Time every exported model in shuffled passes; time again those that varied too much."""
    paths = {name: state / record["tflite"] for name, record in records.items()}
    timings = time_interleaved(paths, config.threads, config.warmup, config.runs, config.passes,
                               shuffle_seed=config.seed)
    noisy = [name for name, t in timings.items() if t["cv"] > config.max_cv]
    if noisy and config.remeasure_passes:
        log.info("timing %d points again (coefficient of variation above %g)", len(noisy),
                 config.max_cv)
        again = time_interleaved({name: paths[name] for name in noisy}, config.threads,
                                 config.warmup, config.runs, config.remeasure_passes,
                                 shuffle_seed=config.seed + 1)
        for name in noisy:
            timings[name] = summarize_rounds(timings[name]["rounds_ms"]
                                             + again[name]["rounds_ms"])
    return timings


def _seed_of(name: str, seed: int) -> int:
    """A model's own seed: the same whatever else is measured with it (so it resumes)."""
    return int(_digest_of([name, seed])[:8], 16)


def _digest_of(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
