"""Distillation and head stripping on tiny models: losses, style mixing, a short run whose PSNR
improves, bit-exact resume, the VGG19 path, and the stripping gate."""

import json
import logging

import pydantic
import pytest
import torch

from conftest import prepared_16
from pipeline.errors import ConfigError
from pipeline.export.strip_heads import StripHeadsConfig, StrippingMismatch, strip_heads
from pipeline.models.blazestylegan import BlazeStyleGANConfig, load_student
from pipeline.models.inference import load_inference_generator
from pipeline.models.stylegan2 import TEACHER_KIND, Generator, StyleGAN2Config, load_teacher
from pipeline.models.styles import mix_styles
from pipeline.snapshot import load_checkpoint, save_snapshot
from pipeline.training import losses
from pipeline.training.distill import DistillConfig, distill
from pipeline.training.run import RunPaths
from pipeline.training.runtime import module_digest

TEACHER = StyleGAN2Config(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_lr_mul=0.01,
                          channel_base=256, channel_max=32, conv_clamp=None, noise=True)
TINY_DISTILL = {
    "student": {"resolution": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2,
                "mapping_lr_mul": 0.01, "channels": [32, 16], "head_channels": [8, 8],
                "noise": True, "head": "bilinear", "convs": None},
    "mapping": "teacher", "discriminator": {"channel_base": 128, "channel_max": 16},
    "perceptual": "multiscale-l1-ssim", "allow_download": False,
    "seed": 0, "batch_size": 8, "steps": 6, "g_lr": 0.005, "d_lr": 0.002,
    "lambda_perceptual": 1.0, "lambda_l1": 1.0, "lambda_adv": 0.01, "lambda_mapping": 1.0,
    "g_betas": [0.0, 0.99], "final_level_weight": 1.0,
    "r1_gamma": 0.01, "r1_interval": 2, "style_mixing": 0.5, "ema_kimg": 0.01, "xflip": True,
    "mixed_precision": False, "data_workers": 0, "checkpoint_every": 3, "log_every": 2,
    "eval_every": 3,
    "eval_latents": 8, "sample_every": 3, "sample_grid": 4,
}


def distill_config(**overrides) -> DistillConfig:
    return DistillConfig.model_validate({**TINY_DISTILL, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepared_16(tmp_path_factory)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A randomly initialized teacher: its images are structured enough to be distilled."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_snapshot(path, TEACHER_KIND, Generator(TEACHER), TEACHER.to_dict())
    return path


def run(tmp_path, teacher, dataset, config, name="run", **kwargs):
    out = tmp_path / name
    result = distill(config, teacher_path=teacher, dataset_dir=dataset, device="cpu",
                     paths=RunPaths(snapshot=out / "student.pt", state=out / "state.pt",
                                    live=out / "live", samples=out / "samples.png"), **kwargs)
    return out, result


def test_pyramid_losses_on_known_inputs():
    target = torch.zeros(2, 3, 16, 16)
    target[:, :, :8] = 1.0  # top half white: its 8x8 box-filtered version is exact
    pyramid = [losses.resize_to(target, 8), target.clone()]
    perceptual, l1 = losses.pyramid_losses(pyramid, target, lambda x, y: (x - y).pow(2).mean())
    assert [float(v) for v in perceptual + l1] == [0.0] * 4
    shifted = [p + 0.5 for p in pyramid]
    _, l1 = losses.pyramid_losses(shifted, target, lambda x, y: (x - y).abs().mean())
    assert [float(v) for v in l1] == pytest.approx([0.5, 0.5])
    assert float(losses.mapping_regression_loss(torch.ones(2, 4), torch.zeros(2, 4))) == 1.0


def test_style_mixing_switches_teacher_and_student_at_the_same_resolution():
    student = BlazeStyleGANConfig.model_validate(TINY_DISTILL["student"])
    teacher = TEACHER.model_copy(update={"resolution": 64})
    student = student.model_copy(update={"resolution": 64, "channels": [8] * 4,
                                         "head_channels": [8] * 4})
    # Teacher ws: 4x4 conv, then two convs per block from 8x8; the ToRGB of a block shares the
    # next block's first w. Student ws: two per level from 8x8, the head shares the next one.
    assert [teacher.ws_index(r) for r in (8, 16, 32, 64)] == [1, 3, 5, 7]
    assert [student.ws_index(r) for r in (8, 16, 32, 64)] == [0, 2, 4, 6]
    w, w2 = torch.zeros(1, 2), torch.ones(1, 2)
    ws = mix_styles(w, w2, teacher.num_ws, teacher.ws_index(32))
    assert ws[0, :, 0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert mix_styles(w, w2, 3, None).sum() == 0


def test_short_distillation_improves_student_vs_teacher_psnr(tmp_path, teacher, dataset):
    out, result = run(tmp_path, teacher, dataset,
                      distill_config(steps=30, eval_every=15, g_lr=0.01))
    assert result["final"]["psnr"] > result["initial"]["psnr"] + 2
    assert result["final"]["ssim"] > result["initial"]["ssim"]
    assert {"psnr_8", "psnr_16", "ssim_8", "ssim_16"} <= set(result["final"])
    assert result["perceptual_backbone"] == "multiscale-l1-ssim"

    student = load_student(out / "student.pt")
    assert module_digest(student.mapping) == module_digest(load_teacher(teacher).mapping)
    image, pyramid = student(torch.randn(2, 16))
    assert [p.shape[-1] for p in pyramid] == [8, 16] and image.shape == (2, 3, 16, 16)
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["eval"]["psnr"] == pytest.approx(result["final"]["psnr"])
    assert {"loss", "reg", "logits"} <= set(summary)
    assert (out / "samples.png").is_file()


def test_interrupted_and_resumed_distillation_is_bit_equal(tmp_path, teacher, dataset):
    full, _ = run(tmp_path, teacher, dataset, distill_config(), "full")
    run(tmp_path, teacher, dataset, distill_config(steps=3), "part")
    _, result = run(tmp_path, teacher, dataset, distill_config(), "part")
    assert load_checkpoint(tmp_path / "part" / "state.pt")["step"] == 6
    assert module_digest(load_student(full / "student.pt")) == module_digest(
        load_student(tmp_path / "part" / "student.pt"))
    uninterrupted = run(tmp_path, teacher, dataset, distill_config(), "full")[1]
    assert result["initial"] == uninterrupted["initial"]


def test_a_resaved_teacher_keeps_the_training_state_resumable(tmp_path, teacher, dataset, caplog):
    """The teacher is identified by its config and weights, not by its file's bytes."""
    resaved = tmp_path / "teacher.pt"
    G = load_teacher(teacher)
    save_snapshot(resaved, TEACHER_KIND, G, G.config.to_dict(), meta={"note": "re-saved"})
    assert resaved.read_bytes() != teacher.read_bytes()
    run(tmp_path, teacher, dataset, distill_config(steps=3), "part")
    caplog.set_level(logging.INFO)
    run(tmp_path, resaved, dataset, distill_config(steps=4), "part")
    assert "resuming from" in caplog.text and "starting from scratch" not in caplog.text


def test_distilled_mapping_network_is_trained_towards_the_teachers(tmp_path, teacher, dataset):
    student = {**TINY_DISTILL["student"], "mapping_layers": 1, "mapping_lr_mul": 1.0}
    out, _ = run(tmp_path, teacher, dataset, distill_config(mapping="distilled", student=student))
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["loss"]["mapping"] > 0
    assert len(load_student(out / "student.pt").mapping.layers) == 1


def test_incompatible_teacher_or_dataset_is_a_clear_error(tmp_path, teacher, dataset):
    with pytest.raises(ConfigError, match=r"distill.student.w_dim is 8 but the teacher's is 16"):
        run(tmp_path, teacher, dataset,
            distill_config(student={**TINY_DISTILL["student"], "w_dim": 8}))
    with pytest.raises(ConfigError,
                       match="distill.student.mapping_layers is 3.*shares its mapping"):
        run(tmp_path, teacher, dataset,
            distill_config(student={**TINY_DISTILL["student"], "mapping_layers": 3}))


def test_vgg19_backbone_from_a_local_file_runs_and_is_recorded(tmp_path, teacher, dataset):
    torchvision = pytest.importorskip("torchvision")
    weights = tmp_path / "vgg19.pth"
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), weights)
    _, result = run(tmp_path, teacher, dataset,
                    distill_config(perceptual="vgg19-imagenet", steps=1, batch_size=2),
                    vgg19_weights=weights)
    assert result["perceptual_backbone"] == "vgg19-imagenet"


@pytest.fixture(scope="module")
def student(tmp_path_factory, teacher, dataset):
    out = tmp_path_factory.mktemp("student")
    distill(distill_config(steps=2), teacher_path=teacher, dataset_dir=dataset, device="cpu",
            paths=RunPaths(snapshot=out / "student.pt", state=out / "state.pt"))
    return out / "student.pt"


@pytest.mark.parametrize("input_kind,layout", [("z", "nhwc"), ("w", "nchw")])
def test_strip_heads_writes_a_verified_smaller_generator(tmp_path, student, input_kind, layout):
    config = StripHeadsConfig(input=input_kind, layout=layout, check_latents=4, seed=0)
    metrics = strip_heads(config, student_path=student, snapshot_path=tmp_path / "inference.pt")
    assert metrics["max_abs_diff"] == 0.0
    assert metrics["params_inference"] < metrics["params_full"]
    assert metrics["gflops_inference"] < metrics["gflops_full"]
    model = load_inference_generator(tmp_path / "inference.pt")
    assert (model.input, model.layout) == (input_kind, layout)
    full = load_student(student)
    z = torch.randn(2, 16)
    with torch.no_grad():
        expected = full(z)[0]
        out = model(z if input_kind == "z" else full.mapping(z))
    assert torch.equal(out.permute(0, 3, 1, 2) if layout == "nhwc" else out, expected)


def test_strip_heads_refuses_a_mismatch_and_writes_nothing(tmp_path, student, monkeypatch):
    from pipeline.export import strip_heads as module

    real = module.strip_aux_heads

    def off_by_a_little(*args):
        model = real(*args)
        with torch.no_grad():
            model.head.to_rgb.bias.add_(1e-6)
        return model

    monkeypatch.setattr(module, "strip_aux_heads", off_by_a_little)
    config = StripHeadsConfig(input="z", layout="nhwc", check_latents=2, seed=0)
    with pytest.raises(StrippingMismatch, match="differs from the full student"):
        strip_heads(config, student_path=student, snapshot_path=tmp_path / "inference.pt")
    assert not (tmp_path / "inference.pt").exists()


@pytest.mark.slow
def test_distill_stage_under_torchrun_keeps_replicas_in_sync(tmp_path, teacher, dataset):
    import os
    import subprocess
    import sys

    from conftest import ROOT, write_params

    params = write_params(tmp_path / "params.yaml", distill={**TINY_DISTILL, "steps": 4})
    out = tmp_path / "ddp"
    command = ["-m", "stages.distill", "--params", str(params), "--teacher", str(teacher),
               "--dataset", str(dataset), "--snapshot", str(out / "student.pt"),
               "--state", str(out / "state.pt"), "--live", str(out / "live"),
               "--samples", str(out / "samples.png"), "--metrics", str(out / "metrics.json"),
               "--device", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29519", *command],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas in sync across 2 processes" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4
    assert load_student(out / "student.pt")(torch.randn(1, 16))[0].shape == (1, 3, 16, 16)


def test_shared_mapping_must_have_the_teachers_learning_rate_multiplier(tmp_path, teacher, dataset):
    # Equalized-lr layers store weights divided by lr_mul: the teacher's weights in a mapping with
    # another lr_mul would compute another w.
    student = {**TINY_DISTILL["student"], "mapping_lr_mul": 1.0}
    with pytest.raises(ConfigError, match="mapping_lr_mul is 1.0 but the teacher's is 0.01"):
        run(tmp_path, teacher, dataset, distill_config(student=student))


def test_distilled_mapping_is_also_scored_through_its_own_w(tmp_path, teacher, dataset):
    student = {**TINY_DISTILL["student"], "mapping_layers": 1, "mapping_lr_mul": 1.0}
    _, result = run(tmp_path, teacher, dataset,
                    distill_config(mapping="distilled", student=student))
    assert result["final"]["w_mse"] > 0 and "psnr_own_mapping" in result["final"]


def test_the_students_adam_betas_and_final_level_weight_reach_the_step(tmp_path, teacher,
                                                                      dataset):
    from pipeline.snapshot import load_checkpoint

    config = distill_config(steps=1, checkpoint_every=1, g_betas=[0.5, 0.9])
    out, result = run(tmp_path, teacher, dataset, config)
    groups = load_checkpoint(out / "state.pt")["opt_G"]["param_groups"]
    assert all(tuple(group["betas"]) == (0.5, 0.9) for group in groups)
    assert "images_per_second" in result["training"] and "loss/g" in result["training"]
    # A heavier final level moves the loss the step optimizes (same draws, same initial weights).
    _, heavier = run(tmp_path, teacher, dataset, distill_config(
        steps=1, checkpoint_every=1, g_betas=[0.5, 0.9], final_level_weight=5.0), name="heavy")
    assert heavier["training"]["loss/g"] != result["training"]["loss/g"]


def test_a_student_key_left_out_of_params_is_refused_by_name():
    # BlazeStyleGANConfig defaults `head` for old snapshots only; params must set it.
    student = {k: v for k, v in TINY_DISTILL["student"].items() if k != "head"}
    with pytest.raises(pydantic.ValidationError, match="head: missing"):
        DistillConfig.model_validate({**TINY_DISTILL, "student": student})
