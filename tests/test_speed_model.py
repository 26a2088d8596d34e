"""The speed model (fit_speed_model): exact MAC counts, differentiable features, a fit that
learns a latency law from noisy points, its held-out and additivity metrics, its snapshot, and
clear errors for bad data and units it never measured."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.complexity import count_flops
from pipeline.profiling.speed_data import UnitSpec, preset_units, unit_model
from pipeline.profiling.speed_model import (
    FEATURES,
    FitSpeedModelConfig,
    fit_speed_model,
    load_speed_data,
    load_speed_model,
    point_unit,
    save_speed_model,
    split,
    student_units,
    unit_elements,
    unit_features,
    unit_macs,
)
from pipeline.snapshot import CheckpointError

CONFIG = {"hidden": [32, 32], "ensemble": 2, "steps": 1500, "lr": 0.01, "weight_decay": 1e-4,
          "holdout": 0.25, "seed": 0, "floor_ms": 0.005, "min_ms": 0.2}
W_DIM = 32


@pytest.mark.parametrize("spec", [
    UnitSpec(kind="block", size=8, in_channels=16, out_channels=24),
    UnitSpec(kind="block", size=4, in_channels=16, out_channels=8, upsample=False),
    UnitSpec(kind="block", size=8, in_channels=16, out_channels=24, convs=1),
    UnitSpec(kind="block", size=4, in_channels=16, out_channels=8, upsample=False, convs=1),
    UnitSpec(kind="head", size=4, in_channels=8, out_channels=16, head="subpixel"),
    UnitSpec(kind="head", size=8, in_channels=24, out_channels=40),
])
def test_mac_count_is_the_flop_counters(spec):
    model = unit_model(spec, W_DIM, seed=0)
    flops = count_flops(lambda: model(torch.randn(1, W_DIM)))
    assert unit_macs(*point_unit(spec.model_dump()), W_DIM) * 2 == flops


def _law(family, size, cin, cout):
    """A latency law with a per-invoke floor, a MAC term, a memory term and 16-wide tiles."""
    pad = lambda c: np.ceil(c / 16) * 16  # noqa: E731
    return (0.02 + 2e-8 * unit_macs(family, size, pad(cin), pad(cout), W_DIM)
            + 1.5e-7 * unit_elements(family, size, cin, cout))


def _dataset(count=160, students=12, seed=0):
    rng = np.random.default_rng(seed)
    points = []
    for i in range(count):
        head = i % 5 == 0
        size = 16 if head else int(rng.choice([4, 8, 16]))
        cin, cout = (int(c) for c in rng.choice(np.arange(8, 257, 8), 2))
        point = {"kind": "head" if head else "block", "size": size, "in_channels": cin,
                 "out_channels": min(cout, 64) if head else cout, "upsample": True,
                 "head": "bilinear", "key": f"p{i}"}
        truth = _law(*point_unit(point))
        points.append({**point, "latency_ms": truth * (1 + rng.normal(0, 0.02))})
    wholes = []
    for i in range(students):
        channels = [int(c) for c in rng.choice(np.arange(8, 257, 8), 3)]
        units = [{"kind": "block", "size": s, "in_channels": cin, "out_channels": cout,
                  "upsample": True, "head": "bilinear"}
                 for s, cin, cout in zip([4, 8, 16], [channels[0], *channels[:-1]], channels)]
        units.append({"kind": "head", "size": 16, "in_channels": channels[-1],
                      "out_channels": 32, "upsample": True, "head": "bilinear"})
        wholes.append({"key": f"s{i}", "units": units,
                       "latency_ms": 0.05 + sum(_law(*point_unit(u)) for u in units)})
    return {"points": points, "students": wholes, "overhead_ms": 0.05,
            "student": {"w_dim": W_DIM}, "machine": {"threads": 1}}


@pytest.fixture(scope="module")
def fitted():
    config = FitSpeedModelConfig.model_validate(CONFIG)
    return fit_speed_model(config, _dataset())


def test_the_fit_learns_a_tiled_latency_law_and_scores_both_predictors(fitted):
    model, metrics, rows = fitted
    assert metrics["heldout_units"] == 40 and metrics["train_units"] == 120
    mlp, baseline = metrics["mlp"], metrics["baseline"]
    assert mlp["heldout"]["mape_pct"] < 5 and mlp["heldout"]["spearman"] > 0.98
    assert mlp["students"]["mape_pct"] < 10 and mlp["students"]["count"] == 12
    assert baseline["heldout"]["count"] == mlp["heldout"]["count"] > 0  # the same units
    assert {r["set"] for r in rows} == {"unit", "student"}
    assert all(r["mlp_ms"] > 0 for r in rows)


def test_the_split_holds_out_each_family_and_keeps_one_of_each():
    points = _dataset(count=40, students=0)["points"]
    points.append({**points[1], "kind": "block", "upsample": False, "key": "only const"})
    train, test = split(points, 0.25, seed=0)
    assert len(train) + len(test) == len(points) and not {p["key"] for p in train} & {
        p["key"] for p in test}
    assert "only const" in {p["key"] for p in train}  # a family's only unit trains
    assert {point_unit(p)[0] for p in test} == {"block", "head-bilinear"}
    assert split(points, 0.25, seed=0) == (train, test)


def test_the_round_up_to_16_feature_is_exact_on_straight_through_widths():
    from pipeline.models.masked import ChannelMasks
    scores = torch.tensor([0.93, 0.71, 0.52, 0.2], requires_grad=True)
    width = 8 * ChannelMasks.binary(scores).sum()  # 24, through (keep + scores - scores)
    features = unit_features("block", 8, width, torch.tensor(16.0), W_DIM)
    assert features[FEATURES.index("in rounded to 16 / 256")].item() * 256 == 32
    assert features[FEATURES.index("out rounded to 16 / 256")].item() * 256 == 16
    features[FEATURES.index("in rounded to 16 / 256")].backward()
    assert (scores.grad == 8 / 256).all()


def test_predictions_are_differentiable_in_the_widths(fitted):
    model = fitted[0]
    cin = torch.tensor(64.0, requires_grad=True)
    cout = torch.tensor(96.0, requires_grad=True)
    model.unit_ms("block", 8, cin, cout).backward()
    assert cin.grad > 0 and cout.grad > 0  # wider is slower
    channels = [torch.tensor(float(c), requires_grad=True) for c in (64, 64, 32)]
    total = model.student_ms(student_units(channels, 32.0, [4, 8, 16], "bilinear")[1:])
    total.backward()
    assert all(c.grad is not None and c.grad > 0 for c in channels)


def test_student_units_follow_the_preset_units():
    from pipeline.models.blazestylegan import PRESETS
    config = PRESETS["blaze-256"]
    ours = student_units(config.channels, config.head_channels[-1],
                         [r // 4 for r in config.levels], config.head)
    assert ours == [point_unit(s.model_dump()) for s in preset_units(config)]
    short = config.model_copy(update={"convs": [1, 2, 2, 1, 2, 2]})
    ours = student_units(short.channels, short.head_channels[-1],
                         [r // 4 for r in short.levels], short.head, short.convs)
    assert ours == [point_unit(s.model_dump()) for s in preset_units(short)]
    assert [u[0] for u in ours[:4]] == ["block-const-short", "block", "block", "block-short"]


def test_the_snapshot_rebuilds_the_same_model(fitted, tmp_path):
    model = fitted[0]
    save_speed_model(model, tmp_path / "speed.pt")
    again = load_speed_model(tmp_path / "speed.pt")
    assert float(again.unit_ms("block", 8, 64.0, 96.0)) == float(model.unit_ms("block", 8, 64.0,
                                                                             96.0))
    assert again.config == model.config
    torch.save({"format": 1, "kind": "encoder"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="expected a 'speed-model'"):
        load_speed_model(tmp_path / "other.pt")


def test_units_never_measured_are_refused(fitted):
    model = fitted[0]
    with pytest.raises(PipelineError, match="no block-const units were measured"):
        model.check_domain([("block-const", 4, 8, 8)])
    with pytest.raises(PipelineError, match=r"block unit \(size 32.*outside what was measured"):
        model.check_domain([("block", 32, 8, 8)])
    model.check_domain([("block", 12, 8, 8)])  # between sizes measured
    with pytest.raises(PipelineError, match="widths up to"):
        model.check_domain([("block", 8, 512, 8)])
    model.check_domain([("block", 8, 64, 64)])


def test_bad_data_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match="points.json: cannot read"):
        load_speed_data(tmp_path)
    (tmp_path / "points.json").write_text("{")
    with pytest.raises(PipelineError, match="points.json: not JSON"):
        load_speed_data(tmp_path)
    (tmp_path / "points.json").write_text(json.dumps({"points": []}))
    with pytest.raises(PipelineError, match="no overhead_ms, student"):
        load_speed_data(tmp_path)
    (tmp_path / "points.json").write_text("[1, 2]")
    with pytest.raises(PipelineError, match="a JSON object"):
        load_speed_data(tmp_path)
    broken = {"points": [{"kind": "block", "size": 4}], "overhead_ms": 0.1,
              "student": {"w_dim": 8}}
    (tmp_path / "points.json").write_text(json.dumps(broken))
    with pytest.raises(PipelineError, match="entry 0 lacks one of kind, size"):
        load_speed_data(tmp_path)


def test_the_stage_fails_in_one_line_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("fit_speed_model:\n" + "".join(f"  {k}: {json.dumps(v)}\n"
                                                     for k, v in CONFIG.items()))
    result = subprocess.run(
        [sys.executable, "-m", "stages.fit_speed_model", "--params", str(params),
         "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "speed.pt"),
         "--predictions", str(tmp_path / "p.csv"), "--metrics", str(tmp_path / "m.json")],
        capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "missing/points.json: cannot read the speed-model data" in result.stderr
    assert not (tmp_path / "speed.pt").exists() and not (tmp_path / "m.json").exists()


def test_short_blocks_get_families_of_their_own_and_plain_data_fits_as_before(fitted, tmp_path):
    from pipeline.profiling.families import PLAIN_FAMILIES
    from pipeline.snapshot import load_snapshot, save_snapshot
    plain = fitted[0]
    assert plain.config.families == PLAIN_FAMILIES  # no short blocks: the features of old
    assert plain.mean.shape == (len(FEATURES),)
    data = _dataset(count=60, students=0)
    for i, point in enumerate(data["points"][:30]):
        if point["kind"] == "block":
            data["points"][i] = {**point, "convs": 1, "upsample": i % 2 == 0,
                                 "latency_ms": _law(*point_unit({**point, "convs": 1,
                                                                 "upsample": i % 2 == 0}))}
    short = fit_speed_model(FitSpeedModelConfig.model_validate({**CONFIG, "steps": 50}),
                            data)[0]
    assert short.config.families == (*PLAIN_FAMILIES, "block-short", "block-const-short")
    assert float(short.unit_ms("block-short", 8, 64.0, 64.0)) > 0
    with pytest.raises(ValueError, match="unit family 'block-short'"):
        plain.unit_ms("block-short", 8, 64.0, 64.0)
    # a snapshot from before the families field loads as a model of the plain four
    save_speed_model(plain, tmp_path / "speed.pt")
    payload = load_snapshot(tmp_path / "speed.pt", "speed-model")
    del payload["config"]["families"]
    save_snapshot(tmp_path / "old.pt", "speed-model", plain, payload["config"])
    old = load_speed_model(tmp_path / "old.pt")
    assert float(old.unit_ms("block", 8, 64.0, 96.0)) == float(plain.unit_ms("block", 8, 64.0,
                                                                               96.0))
