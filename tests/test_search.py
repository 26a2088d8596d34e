"""The latency search on a tiny teacher: the penalty's gradient reaches the masks, a short
search lands near its budget and writes a regular student of the searched widths, it resumes
bit-equal, and bad budgets are refused by name."""

import json

import numpy as np
import pydantic
import pytest
import torch

from pipeline.errors import ConfigError, PipelineError
from pipeline.models.blazestylegan import load_student
from pipeline.models.masked import MaskedStudent
from pipeline.profiling.speed_model import (
    FitSpeedModelConfig,
    fit_speed_model,
    point_unit,
    save_speed_model,
    unit_elements,
    unit_macs,
)
from pipeline.search.architecture import (
    LatencyPenalty,
    SearchConfig,
    SearchSection,
    fit_to_budget,
    per_ms,
    search_architecture,
)
from pipeline.training.run import RunPaths
from pipeline.training.runtime import module_digest
from test_distill import TINY_DISTILL, dataset, distill_config, teacher  # noqa: F401

SEARCH = {"widen": 2.0, "steps": 8, "target_ms": None, "target_ratio": 0.6,
          "latency_resolution": 16, "gamma": 1.0, "ramp_steps": 4, "mask_lr": 0.5,
          "mask_step": "cost", "fit_budget": True, "seed": 0}


def _law(family, size, cin, cout, w_dim=16):
    return (0.01 + 4e-7 * unit_macs(family, size, cin, cout, w_dim)
            + 2e-7 * unit_elements(family, size, cin, cout))


def _fit_speed(path, short: bool):
    """A speed model fitted on a known latency law over the tiny student's units (and its
    blocks of one convolution with ``short``)."""
    rng = np.random.default_rng(0)
    kinds = ("block", "block-const", "head", *(("block-short", "block-const-short")
                                                if short else ()))
    points = []
    for i in range(40 * len(kinds)):
        kind = kinds[i % len(kinds)]
        size = 4 if kind == "head" else int(rng.choice([2, 4]))
        cin, cout = (int(c) for c in rng.choice(np.arange(8, 129, 8), 2))
        point = {"kind": "head" if kind == "head" else "block", "size": size,
                 "in_channels": cin, "out_channels": cout,
                 "upsample": not kind.startswith("block-const"), "head": "bilinear",
                 "convs": 1 if kind.endswith("-short") else 2, "key": f"p{i}"}
        points.append({**point, "latency_ms": _law(*point_unit(point))})
    data = {"points": points, "students": [], "overhead_ms": 0.02, "student": {"w_dim": 16},
            "machine": {"threads": 1}}
    config = FitSpeedModelConfig.model_validate({
        "hidden": [32], "ensemble": 1, "steps": 800, "lr": 0.01, "weight_decay": 0.0,
        "holdout": 0.1, "seed": 0, "floor_ms": 0.001, "min_ms": 0.0})
    save_speed_model(fit_speed_model(config, data)[0], path)
    return path


@pytest.fixture(scope="module")
def speed_model(tmp_path_factory):
    return _fit_speed(tmp_path_factory.mktemp("speed") / "speed_model.pt", short=False)


@pytest.fixture(scope="module")
def depth_speed_model(tmp_path_factory):
    return _fit_speed(tmp_path_factory.mktemp("speed") / "speed_model.pt", short=True)


def search_config(distill_overrides=None, **overrides) -> SearchConfig:
    return SearchConfig.build(distill_config(**(distill_overrides or {})),
                              SearchSection.model_validate({**SEARCH, **overrides}))


def run(tmp_path, teacher, dataset, speed_model, config, name="run"):  # noqa: F811
    out = tmp_path / name
    result = search_architecture(
        config, teacher_path=teacher, dataset_dir=dataset, speed_model_path=speed_model,
        device="cpu", paths=RunPaths(snapshot=out / "student.pt", state=out / "state.pt",
                                     live=out / "live", samples=out / "samples.png"))
    return out, result


def test_the_penalty_gradient_reaches_every_mask(speed_model):
    from pipeline.models.blazestylegan import BlazeStyleGAN
    from pipeline.profiling.speed_model import load_speed_model
    config = search_config()
    penalty = LatencyPenalty(load_speed_model(speed_model), config)
    assert penalty.base_ms < penalty.supernet_ms and penalty.sizes == [2, 4]
    assert penalty.target_ms == pytest.approx(0.6 * penalty.base_ms)
    masked = MaskedStudent(BlazeStyleGAN(config.student))
    loss, values = penalty(masked.masks.widths(), step=config.steps)
    assert loss.item() > 0 and values["latency/target_ms"] == pytest.approx(penalty.target_ms)
    loss.backward()
    assert all(v.grad is not None and (v.grad > 0).all() for v in masked.masks.vectors())
    assert penalty.scheduled(-1) == pytest.approx(penalty.supernet_ms)  # the ramp starts there


def test_per_ms_steps_move_every_mask_alike_under_the_latency_term(speed_model):
    from pipeline.models.blazestylegan import BlazeStyleGAN
    from pipeline.profiling.speed_model import load_speed_model
    config = search_config()
    penalty = LatencyPenalty(load_speed_model(speed_model), config)
    masked = MaskedStudent(BlazeStyleGAN(config.student))
    widths = masked.masks.widths()
    penalty(widths, step=config.steps)[0].backward()
    plain = [float(v.grad[0]) for v in masked.masks.vectors()]
    assert max(plain) > 1.5 * min(plain)  # the units' channels cost unlike amounts
    channel_ms, _ = penalty.costs(widths)
    # the slope is the penalty's gradient per channel (the straight-through width is 8 x groups)
    scale = config.search.gamma / (penalty.supernet_ms - penalty.target_ms)
    assert [g / (8 * scale) for g in plain] == pytest.approx(channel_ms.tolist(), rel=1e-4)
    per_ms(masked.masks, channel_ms)
    for v in masked.masks.vectors():
        assert v.grad == pytest.approx(torch.full_like(v.grad, 8 * scale * channel_ms.mean()),
                                       rel=1e-4)


def test_fit_to_budget_fills_the_target_by_score(speed_model):
    from pipeline.models.blazestylegan import BlazeStyleGAN
    from pipeline.models.masked import ChannelMasks
    from pipeline.profiling.speed_model import load_speed_model
    config = search_config(target_ratio=1.0)
    penalty = LatencyPenalty(load_speed_model(speed_model), config)
    masks = MaskedStudent(BlazeStyleGAN(config.student)).masks

    def state():
        kept = [ChannelMasks.binary(v).detach() > 0.5 for v in masks.vectors()]
        return kept, penalty.predict([8 * int(k.sum()) for k in kept])

    # every group kept (the supernet): groups go, lowest score first, until within the target
    fitted = fit_to_budget(masks, penalty)
    kept, ms = state()
    assert fitted["dropped_groups"] > 0 and ms <= penalty.target_ms
    # then nothing dropped fits any more: each one alone would exceed the target
    with torch.no_grad():
        for v, k in zip(masks.vectors(), kept):
            for j in torch.nonzero(~k).flatten().tolist():
                score = float(v[j])
                v[j] = 0.9
                assert state()[1] > penalty.target_ms
                v[j] = score
    # from the floors up: the best-scored dropped groups come back, within the target
    with torch.no_grad():
        for v in masks.vectors():
            v.copy_(torch.linspace(0.4, 0.0, len(v)))
    fitted = fit_to_budget(masks, penalty)
    kept, ms = state()
    assert fitted == {"dropped_groups": 0, "added_groups": fitted["added_groups"]}
    assert fitted["added_groups"] > 0 and ms <= penalty.target_ms
    for k in kept:  # each mask keeps a prefix: its best-scored groups
        assert k.tolist() == sorted(k.tolist(), reverse=True)


def test_a_warm_up_trains_the_weights_before_the_masks_move(tmp_path, teacher, dataset,  # noqa: F811
                                                           speed_model):
    from pipeline.profiling.speed_model import load_speed_model
    config = search_config(steps=4, warmup_steps=4, ramp_steps=4, fit_budget=False)
    penalty = LatencyPenalty(load_speed_model(speed_model), config)
    assert penalty.frozen(3) and not penalty.frozen(4)
    assert penalty.scheduled(3) == pytest.approx(penalty.supernet_ms)  # the ramp starts after
    assert penalty.scheduled(7) == pytest.approx(penalty.target_ms)
    out, result = run(tmp_path, teacher, dataset, speed_model, config)
    assert result["searched"] == result["supernet"]  # 4 warm-up steps: no mask moved
    assert result["training"]["latency/penalty"] == 0.0
    widened = run(tmp_path, teacher, dataset, speed_model,
                  search_config(warmup_steps=4, fit_budget=False), "w")
    assert widened[1]["searched"] != widened[1]["supernet"]  # the masks moved after it


def test_fit_to_budget_keeps_the_head_floor(speed_model):
    from pipeline.models.masked import ChannelMasks
    from pipeline.profiling.speed_model import load_speed_model
    speed = load_speed_model(speed_model)
    probe = LatencyPenalty(speed, search_config())  # the supernet: [64, 32], head 16
    target = (probe.predict([8, 8, 16]) + probe.supernet_ms) / 2  # the head's floor fits
    widths = {}
    for floor in (8, 16):
        config = search_config(head_floor=floor, target_ms=target, target_ratio=None)
        penalty = LatencyPenalty(speed, config)
        masks = ChannelMasks(config.student, config.seed, config.search.head_floor)
        with torch.no_grad():
            masks.head.fill_(0.6)  # the lowest scores: the first groups to go
        fit_to_budget(masks, penalty)
        widths[floor] = [int(w) for w in masks.widths()]
        assert penalty.predict(widths[floor]) <= penalty.target_ms
    assert widths[8][-1] == 8 and widths[16][-1] == 16
    assert sum(widths[16][:-1]) < sum(widths[8][:-1])  # the levels paid for the head
    with pytest.raises(ConfigError, match="search_architecture.head_floor 24"):
        search_config(head_floor=24)
    with pytest.raises(ConfigError, match="search_architecture.head_floor 12"):
        search_config(head_floor=12)


def test_a_short_search_narrows_the_student_towards_its_budget(tmp_path, teacher, dataset,  # noqa: F811
                                                               speed_model):
    config = search_config(steps=24, target_ratio=1.0, ramp_steps=12)
    out, result = run(tmp_path, teacher, dataset, speed_model, config)
    assert result["supernet"]["channels"] == [64, 32]
    assert result["target_ms"] == pytest.approx(result["base_ms"])  # distill.student's budget
    # within the budget and near it: neither the supernet nor a collapse to the floor
    assert 0.8 * result["target_ms"] < result["predicted_ms"] <= 1.05 * result["target_ms"]
    searched = result["searched"]
    assert all(c % 8 == 0 for c in searched["channels"])
    assert sum(searched["channels"]) < sum(result["supernet"]["channels"])
    assert searched["channels"] != [8, 8]
    channels = ",".join(map(str, searched["channels"]))
    assert result["distill_overrides"][0] == f"distill.student.channels=[{channels}]"
    student = load_student(out / "student.pt")
    assert student.config.channels == searched["channels"]
    assert student.config.head_channels == searched["head_channels"]
    image, pyramid = student(torch.randn(2, 16))
    assert image.shape == (2, 3, 16, 16) and len(pyramid) == 2
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert {"latency", "width", "loss"} <= set(summary)
    assert summary["width"]["head"] % 8 == 0 and (out / "samples.png").is_file()


def test_an_interrupted_search_resumes_bit_equal(tmp_path, teacher, dataset,  # noqa: F811
                                                 speed_model):
    full, whole = run(tmp_path, teacher, dataset, speed_model, search_config(), "full")
    run(tmp_path, teacher, dataset, speed_model, search_config(steps=4), "part")
    part, resumed = run(tmp_path, teacher, dataset, speed_model, search_config(), "part")
    assert module_digest(load_student(full / "student.pt")) == module_digest(
        load_student(part / "student.pt"))
    assert resumed["searched"] == whole["searched"] and resumed["resumed"]
    # fit_budget acts on the result only: the finished state is reused, not trained again
    unfitted = run(tmp_path, teacher, dataset, speed_model, search_config(fit_budget=False),
                   "part")[1]
    assert unfitted["resumed"] and unfitted["fit_budget"] is None
    assert unfitted["steps"] == whole["steps"]


def test_bad_budgets_are_refused_by_name(speed_model):
    from pipeline.profiling.speed_model import load_speed_model
    speed = load_speed_model(speed_model)
    with pytest.raises(pydantic.ValidationError, match="exactly one of target_ms"):
        SearchSection.model_validate({**SEARCH, "target_ms": 1.0})
    with pytest.raises(ConfigError, match="not below the supernet's predicted"):
        LatencyPenalty(speed, search_config(target_ratio=10.0))
    with pytest.raises(ConfigError, match="latency_resolution 24"):
        LatencyPenalty(speed, search_config(latency_resolution=24))
    with pytest.raises(PipelineError, match="outside what was measured"):
        LatencyPenalty(speed, search_config(latency_resolution=64))
    with pytest.raises(PipelineError, match="outside what was measured"):
        LatencyPenalty(speed, search_config(widen=5.0))
    other = {**TINY_DISTILL["student"], "w_dim": 8}
    with pytest.raises(ConfigError, match="w_dim 16"):
        LatencyPenalty(speed, search_config({"student": other}))


def test_the_search_may_weigh_the_shipped_level_on_its_own():
    assert search_config().final_level_weight == 1.0  # None: distill's
    searched = search_config(final_level_weight=4.0)
    assert searched.final_level_weight == 4.0
    assert searched.training_identity() != search_config().training_identity()
    with pytest.raises(pydantic.ValidationError, match="final_level_weight"):
        SearchSection.model_validate({**SEARCH, "final_level_weight": 0.0})


@pytest.mark.parametrize("convs", [None, [2, 1, 1]])
def test_the_latency_geometry_graph_is_the_inference_graph_at_scale_1(convs):
    from pipeline.models.blazestylegan import PRESETS, BlazeStyleGAN
    from pipeline.models.inference import strip_aux_heads
    from pipeline.models.units import randomize_like_trained
    from pipeline.search.geometry import ScaledGraph, latency_sizes, scaled_graph
    config = PRESETS["blaze-tiny-32"].model_copy(update={"convs": convs})
    torch.manual_seed(0)
    inference = strip_aux_heads(randomize_like_trained(BlazeStyleGAN(config), 0), "w", "nhwc")
    graph = ScaledGraph(config, latency_sizes(config, 32))
    graph.load_state_dict(inference.state_dict())
    w = torch.randn(2, config.w_dim)
    with torch.no_grad():
        assert torch.equal(graph(w), inference(w))
        assert scaled_graph(config, 256)(w).shape == (2, 256, 256, 3)
    assert latency_sizes(config, 256) == [16, 32, 64]
    with pytest.raises(ValueError, match="doubling"):
        ScaledGraph(config, [16, 16, 64])


def test_block_length_gates_get_the_latency_gradient(depth_speed_model):
    from pipeline.models.blazestylegan import BlazeStyleGAN
    from pipeline.models.masked import ChannelMasks
    from pipeline.profiling.speed_model import load_speed_model
    speed = load_speed_model(depth_speed_model)
    config = search_config(depth=True)
    penalty = LatencyPenalty(speed, config)
    masked = MaskedStudent(BlazeStyleGAN(config.student), ChannelMasks(config.student,
                                                                       depth=True))
    widths = masked.masks.widths()
    assert float(penalty.latency(widths, masked.masks.gates()).detach()) == pytest.approx(
        penalty.predict([int(w) for w in widths]), rel=1e-6)  # every gate on: the supernet
    with torch.no_grad():
        masked.masks.second[1] = 0.2
    gates = masked.masks.gates()
    assert gates.tolist() == [1.0, 0.0] and masked.masks.convs() == [2, 1]
    ms = penalty.latency(widths, gates)
    assert float(ms.detach()) == pytest.approx(penalty.predict([int(w) for w in widths], [2, 1]),
                                      rel=1e-6)
    ms.backward()
    # d ms / d g = T(block) - T(short block) of each level, at the current widths
    units = penalty.units([int(w) for w in widths])
    short = penalty.units([int(w) for w in widths], [1, 1])
    saved = [float(speed.unit_ms(*u) - speed.unit_ms(*v)) for u, v in zip(units[:-1], short)]
    assert masked.masks.second.grad.tolist() == pytest.approx(saved, rel=1e-4)
    assert all(ms > 0 for ms in saved)
    channel_ms, gate_ms = penalty.costs(widths, gates)
    assert gate_ms.tolist() == pytest.approx(saved, rel=1e-4)
    per_ms(masked.masks, channel_ms, gate_ms)
    reference = float(8 * channel_ms.mean())
    assert masked.masks.second.grad.tolist() == pytest.approx([reference] * 2, rel=1e-4)


def test_a_depth_search_needs_short_blocks_measured(speed_model):
    from pipeline.profiling.speed_model import load_speed_model
    with pytest.raises(ConfigError, match="search_architecture.depth: the speed model has no "
                                          "block-short or block-const-short units"):
        LatencyPenalty(load_speed_model(speed_model), search_config(depth=True))


def test_fit_to_budget_keeps_the_searched_lengths(depth_speed_model):
    from pipeline.models.masked import ChannelMasks
    from pipeline.profiling.speed_model import load_speed_model
    config = search_config(depth=True, target_ratio=0.9)
    penalty = LatencyPenalty(load_speed_model(depth_speed_model), config)
    masks = ChannelMasks(config.student, depth=True)
    with torch.no_grad():
        masks.second[0] = 0.1
    fit_to_budget(masks, penalty)
    widths = [int(w) for w in masks.widths()]
    assert masks.convs() == [1, 2]  # as searched
    assert penalty.predict(widths, [1, 2]) <= penalty.target_ms
    # fitted with the lengths: with two convolutions on level 8 those widths would not fit
    assert penalty.predict(widths, [2, 2]) > penalty.predict(widths, [1, 2])


def test_a_depth_search_names_the_lengths_even_where_it_keeps_them(  # noqa: F811
        tmp_path, teacher, dataset, depth_speed_model):  # noqa: F811
    short = {"student": {**TINY_DISTILL["student"], "convs": [2, 1]}}
    # every step a warm-up: no gate moves, so the search keeps two convolutions everywhere,
    # which distill.student ([2, 1]) does not have
    config = search_config(short, depth=True, steps=2, warmup_steps=2, fit_budget=False)
    result = run(tmp_path, teacher, dataset, depth_speed_model, config)[1]
    assert result["searched"]["convs"] is None
    assert result["distill_overrides"][-1] == "distill.student.convs=null"
    plain = search_config(steps=2, warmup_steps=2, fit_budget=False)
    assert "convs" not in run(tmp_path, teacher, dataset, depth_speed_model, plain,
                              "plain")[1]["searched"]


def test_a_depth_search_returns_a_student_of_its_lengths(tmp_path, teacher, dataset,  # noqa: F811
                                                         depth_speed_model):
    config = search_config(depth=True, steps=16, target_ratio=0.85, ramp_steps=8)
    out, result = run(tmp_path, teacher, dataset, depth_speed_model, config)
    assert result["predicted_ms"] <= 1.05 * result["target_ms"]
    searched = result["searched"]
    student = load_student(out / "student.pt")
    assert student.config.convs == searched.get("convs")
    assert [len(b) for b in student.synthesis.blocks] == student.config.level_convs
    assert 1 in student.config.level_convs  # the budget took a convolution
    assert result["distill_overrides"][-1] == (
        f"distill.student.convs=[{','.join(map(str, searched['convs']))}]")
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert set(summary["depth"]) == {"level_8", "level_16"}


def test_a_short_student_keeps_its_lengths_unless_the_search_decides_them(depth_speed_model):
    from pipeline.models.blazestylegan import BlazeStyleGAN
    from pipeline.models.masked import extract
    from pipeline.profiling.speed_model import load_speed_model
    short = {"student": {**TINY_DISTILL["student"], "convs": [2, 1]}}
    config = search_config(short)
    assert config.student.convs == [2, 1]
    assert search_config(short, depth=True).student.convs is None
    speed = load_speed_model(depth_speed_model)
    penalty = LatencyPenalty(speed, config)
    assert penalty.base_ms < LatencyPenalty(speed, search_config()).base_ms
    assert penalty.supernet_ms == pytest.approx(penalty.predict(
        [*config.student.channels, config.student.head_channels[-1]], [2, 1]))
    torch.manual_seed(0)
    masked = MaskedStudent(BlazeStyleGAN(config.student))
    with torch.no_grad():
        masked.masks.levels[0][:2] = 0.1
    student = extract(masked)
    assert student.config.convs == [2, 1] and student.config.channels == [48, 32]
    ws = torch.randn(2, masked.num_ws, 16)
    with torch.no_grad():
        assert (masked.synthesis(ws)[0] - student.synthesis(ws)[0]).abs().max() < 1e-5
