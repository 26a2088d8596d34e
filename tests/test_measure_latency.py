"""The speed-model data (measure_latency): sampled micro-models, their operator check, and a
resumable measurement through the real chain."""

import json

import pydantic
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.profiling import speed_data
from pipeline.profiling.speed_data import (
    MeasureLatencyConfig,
    UnitSpec,
    check_operators,
    preset_units,
    sample_students,
    sample_units,
    student_key,
    unit_model,
)

CONFIG = {"preset": "blaze-256", "head": "bilinear", "w_dim": None, "widen": 2.0, "blocks": 6,
          "heads": 2,
          "seed": 0, "threads": 1, "warmup": 1, "runs": 2, "passes": 2, "max_cv": 0.1,
          "remeasure_passes": 1, "preset_units": True,
          "const_share": 0.0, "sizes": None, "students": 0}


def test_samples_hold_the_preset_units_and_valid_widths():
    config = MeasureLatencyConfig.model_validate(CONFIG)
    specs = sample_units(config)
    own = preset_units(config.student())
    assert specs[:len(own)] == own and len(specs) == len(own) + 8
    assert len({s.key for s in specs}) == len(specs)
    sampled = specs[len(own):]
    assert all(s.in_channels % 8 == 0 and s.out_channels % 8 == 0 for s in sampled)
    assert all(s.out_channels <= 2 * 256 for s in sampled if s.kind == "block")
    assert {s.size for s in sampled if s.kind == "block"} <= {4, 8, 16, 32, 64}
    assert all(s.size == 64 for s in specs if s.kind == "head")
    assert sample_units(config) == specs  # seeded
    alone = sample_units(MeasureLatencyConfig.model_validate({**CONFIG, "preset_units": False}))
    assert len(alone) == 8 and not set(alone) & set(own)


def test_first_level_blocks_are_sampled_at_every_size_and_streams_are_stable():
    config = MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 40, "const_share": 0.5,
                                                  "preset_units": False})
    specs = sample_units(config)
    const = [s for s in specs if s.kind == "block" and not s.upsample]
    assert 10 < len(const) < 30 and {s.size for s in const} > {2}
    # Asking for more blocks keeps the first ones and every head.
    more = sample_units(MeasureLatencyConfig.model_validate({**config.to_dict(), "blocks": 50}))
    assert [s for s in more if s.kind == "block"][:40] == [s for s in specs if s.kind == "block"]
    assert [s for s in more if s.kind == "head"] == [s for s in specs if s.kind == "head"]


def test_log_uniform_draws_add_narrow_units_and_keep_the_uniform_ones():
    config = MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 40, "heads": 20,
                                                  "preset_units": False})
    specs = sample_units(config)
    more = sample_units(MeasureLatencyConfig.model_validate({**config.to_dict(),
                                                             "log_blocks": 40, "log_heads": 20}))
    assert more[:len(specs)] == specs and len(more) == len(specs) + 60  # cached exports kept
    extra = more[len(specs):]

    def narrow(units):  # the share of widths at 32 or below
        widths = [w for s in units for w in (s.in_channels, s.out_channels)]
        return sum(w <= 32 for w in widths) / len(widths)

    for kind in ("block", "head"):
        assert narrow([s for s in extra if s.kind == kind]) > 2 * narrow(
            [s for s in specs if s.kind == kind])


def test_sizes_sample_the_geometry_a_search_budgets():
    config = MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 30, "const_share": 0.3,
                                                  "preset_units": False, "sizes": [32, 16, 64]})
    blocks = [s for s in sample_units(config) if s.kind == "block"]
    assert {s.size for s in blocks if not s.upsample} == {16}  # the searched first level's
    assert {s.size for s in blocks if s.upsample} == {32, 64}
    for sizes in ([16], [16, 24], []):
        with pytest.raises(pydantic.ValidationError, match="two or more feature sizes of preset "
                                                           "blaze-256"):
            MeasureLatencyConfig.model_validate({**CONFIG, "sizes": sizes})
    with pytest.raises(pydantic.ValidationError, match="last feature size 64"):
        MeasureLatencyConfig.model_validate({**CONFIG, "sizes": [8, 16, 32]})


def test_whole_students_are_what_a_widened_search_returns():
    config = MeasureLatencyConfig.model_validate({**CONFIG, "students": 5})
    students = sample_students(config)
    preset = config.student()
    assert len(students) == 5 and len({student_key(s) for s in students}) == 5
    for student in students:
        assert student.levels == preset.levels and student.head == preset.head
        assert all(c % 8 == 0 and 8 <= c <= 2 * p
                   for c, p in zip(student.channels, preset.channels))
        assert student.head_channels[:-1] == preset.head_channels[:-1]
        assert student.head_channels[-1] <= 2 * preset.head_channels[-1]


def test_preset_units_follow_the_student():
    config = MeasureLatencyConfig.model_validate(CONFIG).student()
    specs = preset_units(config)
    assert [s.size for s in specs] == [2, 4, 8, 16, 32, 64, 64]
    assert [s.upsample for s in specs[:6]] == [False] + [True] * 5
    assert specs[-1] == UnitSpec(kind="head", size=64, in_channels=128, out_channels=48)


@pytest.mark.parametrize("spec, shape", [
    (UnitSpec(kind="block", size=8, in_channels=16, out_channels=24), (1, 24, 8, 8)),
    (UnitSpec(kind="block", size=2, in_channels=16, out_channels=8, upsample=False),
     (1, 8, 2, 2)),
    (UnitSpec(kind="block", size=8, in_channels=16, out_channels=24, convs=1), (1, 24, 8, 8)),
    (UnitSpec(kind="head", size=4, in_channels=8, out_channels=16, head="subpixel"),
     (1, 3, 16, 16)),
])
def test_unit_models_have_the_unit_shapes(spec, shape):
    assert unit_model(spec, 32, seed=0)(torch.randn(1, 32)).shape == shape


def test_bad_params_name_the_key():
    with pytest.raises(ValueError, match="unknown student preset 'blaze-9'"):
        MeasureLatencyConfig.model_validate({**CONFIG, "preset": "blaze-9"})
    with pytest.raises(ValueError, match="passes"):
        MeasureLatencyConfig.model_validate({**CONFIG, "passes": 1})
    with pytest.raises(ValueError, match="nothing to measure"):
        MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 0, "heads": 0,
                                             "preset_units": False})


def test_families_name_the_head_variant():
    assert UnitSpec(kind="head", size=4, in_channels=8, out_channels=8,
                    head="subpixel").family == "head-subpixel"
    assert UnitSpec(kind="block", size=2, in_channels=8, out_channels=8,
                    upsample=False).family == "block-const"


def test_the_operator_check_refuses_what_the_graph_does_not_run():
    specs = {s.key: s for s in (UnitSpec(kind="block", size=8, in_channels=8, out_channels=8),
                                UnitSpec(kind="block", size=4, in_channels=8, out_channels=16))}
    ops = {"CONV_2D": 2, "MUL": 3}
    records = {key: {"operators": ops} for key in specs}
    assert check_operators(records, specs, {"CONV_2D", "MUL"}) == {"block": ops}
    with pytest.raises(PipelineError, match=r"\['MUL'\] are not in the whole graph"):
        check_operators(records, specs, {"CONV_2D"})
    first = next(iter(specs))
    records[first] = {"operators": {"CONV_2D": 2}}
    with pytest.raises(PipelineError, match="differ from the other block"):
        check_operators(records, specs, {"CONV_2D", "MUL"})


@pytest.mark.slow
def test_measurement_resumes_and_records_the_machine(tmp_path, monkeypatch):
    config = MeasureLatencyConfig.model_validate({**CONFIG, "preset": "blaze-tiny-32",
                                                  "blocks": 1, "heads": 0, "students": 1})
    calls = []
    export = speed_data.export_for_timing

    def counted(model, inputs, directory, *args, **kwargs):
        calls.append(directory.name)
        return export(model, inputs, directory, *args, **kwargs)

    monkeypatch.setattr(speed_data, "export_for_timing", counted)
    state, out = tmp_path / "state", tmp_path / "latency"
    metrics = speed_data.measure_latency(config, state=state, out=out)
    dataset = json.loads((out / "points.json").read_text())
    assert metrics["points"] == len(dataset["points"]) == 5  # 3 blocks, the head, 1 sampled
    assert len(calls) == 9  # the overhead, the graph's operators, the mapping, one student
    (student,) = dataset["students"]
    assert student["latency_ms"] > 0 and len(student["units"]) == 4  # 3 blocks and the head
    assert student["student"]["resolution"] == 32 and metrics["students"] == 1
    assert dataset["machine"]["threads"] == 1 and dataset["machine"]["litert"]
    assert all(p["p50_ms"] > 0 and len(p["rounds_ms"]) >= 2 for p in dataset["points"])
    assert set(dataset["operators"]) == {"block", "block-const", "head-bilinear"}
    # A run killed after some exports: only the missing ones are exported again.
    victim = dataset["points"][-1]["key"]
    (state / victim / "export.json").unlink()
    calls.clear()
    speed_data.measure_latency(config, state=state, out=out)
    assert calls == [victim]
    # Another head variant: the head, the student and the graph's operator reference are
    # exported again (their fingerprints changed); the blocks, the overhead and the mapping
    # network are not.
    calls.clear()
    subpixel = MeasureLatencyConfig.model_validate({**config.to_dict(), "head": "subpixel"})
    speed_data.measure_latency(subpixel, state=state, out=out)
    assert sorted(calls)[:2] == ["graph_operators", "head-subpixel-s8-i32-h32"]
    assert len(calls) == 3 and calls[-1].endswith("-subpixel")
    assert set(json.loads((out / "points.json").read_text())["operators"]) == {
        "block", "block-const", "head-subpixel"}


def test_the_machine_record_names_what_decides_latency(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 26\nmodel\t\t: 2\n"
                       "stepping\t: 1\nflags\t\t: fpu avx avx2 fma avx512f\n\nprocessor\t: 1\n"
                       "model name\t: other\n")
    caches = tmp_path / "cache"
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (2, "Unified", "1024K")]):
        (caches / f"index{i}").mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (caches / f"index{i}" / name).write_text(f"{value}\n")
    monkeypatch.setattr(speed_data, "CPUINFO", cpuinfo)
    monkeypatch.setattr(speed_data, "CACHES", caches)
    record = speed_data.machine_record(2)
    assert record["cpu"] == "AMD EPYC"  # the first processor's, which a VM may reduce to this
    assert record["cpu_id"] == "cpu family 26, model 2, stepping 1"
    assert record["isa"] == "avx avx2 fma avx512f" and record["threads"] == 2
    assert record["caches"] == "L1d 48K, L2 1024K"
    assert speed_data.machine_differences(record, record) == ([], [])
    older = {key: record[key] for key in ("cpu", "threads", "litert")}  # before cpu_id existed
    assert speed_data.machine_differences(older, record) == (
        [], ["cpu_id", "isa", "caches", "onnx2tf", "tensorflow"])
    assert "no telling" in speed_data.machine_note("m", older, record)
    other = {**record, "isa": "avx avx2 fma", "threads": 4}
    assert speed_data.machine_differences(record, other)[0] == [
        "isa: avx avx2 fma avx512f -> avx avx2 fma", "threads: 2 -> 4"]
    assert "another machine" in speed_data.machine_note("m", record, other)


def test_an_arm_record_names_its_part_and_features(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimdhp "
                       "asimddp i8mm bf16\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")
    monkeypatch.setattr(speed_data, "CPUINFO", cpuinfo)
    monkeypatch.setattr(speed_data, "CACHES", tmp_path / "none")
    record = speed_data.machine_record(1)
    assert record["cpu_id"] == "CPU implementer 0x41, CPU part 0xd0c"
    assert record["isa"] == "asimd asimdhp asimddp i8mm bf16" and record["caches"] is None


def test_short_blocks_are_drawn_apart_and_keep_the_other_units():
    config = MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 20, "preset_units": False,
                                                  "const_share": 0.3})
    specs = sample_units(config)
    more = sample_units(MeasureLatencyConfig.model_validate({
        **config.to_dict(), "short_blocks": 10, "log_short_blocks": 5}))
    assert more[:len(specs)] == specs and len(more) == len(specs) + 15  # cached exports kept
    short = more[len(specs):]
    assert all(s.kind == "block" and s.convs == 1 and s.key.endswith("-short") for s in short)
    assert {s.family for s in short} == {"block-short", "block-const-short"}
    assert len({s.key for s in more}) == len(more)
    assert all(s.convs == 2 for s in specs)
    alone = MeasureLatencyConfig.model_validate({**CONFIG, "blocks": 0, "heads": 0,
                                                 "preset_units": False, "short_blocks": 2})
    assert len(sample_units(alone)) == 2  # something to measure


def test_whole_students_may_have_short_levels():
    plain = MeasureLatencyConfig.model_validate({**CONFIG, "students": 6})
    mixed = MeasureLatencyConfig.model_validate({**plain.to_dict(), "student_short_share": 0.5})
    before, after = sample_students(plain), sample_students(mixed)
    assert [s.channels for s in before] == [s.channels for s in after]  # the same widths
    assert all(s.convs is None for s in before)
    lengths = [n for s in after for n in s.level_convs]
    assert 1 in lengths and 2 in lengths
    assert len({student_key(s) for s in before + after}) == len({
        (tuple(s.channels), s.head_channels[-1], tuple(s.level_convs)) for s in before + after})
    shorts = [s for s in after if s.convs is not None]
    units = preset_units(shorts[0])
    assert [u.convs for u in units[:-1]] == shorts[0].convs
    assert "-d" in student_key(shorts[0])
