"""The inversion encoder on tiny models: the model and its presets, the losses and the optimiser
baseline, the held-out split, training (a short run that improves, bit-exact resume, torchrun),
export through the chain with its gates, and the evaluation."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from conftest import ROOT, prepared_16, write_params
from pipeline.artifacts.base import read_artifact
from pipeline.artifacts.encoder import EncoderCard, encoder_card_file
from pipeline.data.dataset import FaceDataset, holdout_split
from pipeline.errors import ConfigError, DataError, PipelineError
from pipeline.export.encoder import ExportEncoderConfig, export_encoder
from pipeline.inversion import (
    InversionWeights,
    delta_regularizer,
    latent_loss,
    optimize_ws,
    pixel_loss,
)
from pipeline.metrics.inversion import EvaluateEncoderConfig, evaluate_encoder
from pipeline.models.blazestylegan import STUDENT_KIND, BlazeStyleGAN, BlazeStyleGANConfig
from pipeline.models.encoder import (
    PRESETS,
    Encoder,
    EncoderConfig,
    EncoderInputError,
    encoder_row,
    load_encoder,
    load_encoder_and_generator,
    load_imagenet_backbone,
    resolve_imagenet_weights,
)
from pipeline.perceptual import MultiScaleL1SSIM
from pipeline.pretrained import WeightsUnavailable
from pipeline.runtimes import ConversionMismatch
from pipeline.snapshot import load_checkpoint, save_snapshot
from pipeline.training.encoder import TrainEncoderConfig, learning_rate, train_encoder
from pipeline.training.run import RunPaths, TrainingRun
from pipeline.training.runtime import module_digest

STUDENT = BlazeStyleGANConfig(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                              mapping_lr_mul=1.0, channels=[32, 16], head_channels=[8, 8],
                              noise=True)
TINY_ENCODER = {"resolution": 16, "num_ws": 5, "w_dim": 16, "width_mult": 0.25,
                "blocks": [1, 1, 1], "downsamplings": 2, "head_channels": 16, "groups": [2, 3],
                "fpn": True}
TINY_TRAIN = {
    "encoder": TINY_ENCODER, "backbone_weights": "none", "allow_download": False, "seed": 0,
    "batch_size": 8, "steps": 6, "lr": 0.005, "lr_schedule": "constant", "synthetic_fraction": 0.5,
    "truncation_min": 0.5, "style_mixing": 0.5, "holdout_images": 4, "xflip": True,
    "perceptual": "multiscale-l1-ssim", "pixel_loss": "l2", "lambda_pixel": 1.0,
    "lambda_perceptual": 0.8, "lambda_latent": 1.0,
    "lambda_delta": 0.0002, "mixed_precision": False, "data_workers": 0, "checkpoint_every": 3,
    "log_every": 2,
    "eval_every": 3, "sample_every": 3, "sample_grid": 4,
}
TINY_EXPORT = {"opset": 18, "check_images": 4, "seed": 0, "onnx_max_abs_error": 1e-4,
               "simplified_max_abs_error": 1e-5, "max_abs_error": 1e-3, "min_psnr_db": 35.0,
               "threads": 1}
TINY_EVALUATE = {"synthetic_images": 4, "seed": 0, "optimizer_steps": 20, "optimizer_lr": 0.05,
                 "threads": 1, "warmup": 1, "runs": 2, "grid_images": 2}


def train_config(**overrides) -> TrainEncoderConfig:
    return TrainEncoderConfig.model_validate({**TINY_TRAIN, **overrides})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return prepared_16(tmp_path_factory)


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """A randomly initialized student with the average w of its mapping network. Its heads'
    convolutions are scaled up: at PyTorch's initialization they are so small that the image
    hardly depends on w (0.002 std across latents, 0.16 after the scaling), and nothing could
    be inverted."""
    torch.manual_seed(2)
    model = BlazeStyleGAN(STUDENT)
    with torch.no_grad():
        for module in model.synthesis.heads.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.mul_(2)
        model.mapping.w_avg.copy_(model.mapping(torch.randn(256, 16)).mean(0))
    path = tmp_path_factory.mktemp("student") / "student.pt"
    save_snapshot(path, STUDENT_KIND, model, STUDENT.to_dict())
    return path


def run(tmp_path, student, dataset, config, name="run", **kwargs):
    out = tmp_path / name
    result = train_encoder(config, student_path=student, dataset_dir=dataset, device="cpu",
                           paths=RunPaths(snapshot=out / "encoder.pt", state=out / "state.pt",
                                          live=out / "live", samples=out / "samples.png"),
                           **kwargs)
    return out, result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, student, dataset):
    out, _ = run(tmp_path_factory.mktemp("encoder"), student, dataset, train_config())
    return out / "encoder.pt"


# --- the model --------------------------------------------------------------------------------

def test_encoder_256_matches_the_papers_size_and_flops():
    row = encoder_row("encoder-256", PRESETS["encoder-256"])
    assert row["params_M"] == pytest.approx(1.44, rel=0.10)
    assert row["gflops"] == pytest.approx(0.60, rel=0.10)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_give_w_plus_around_w_avg_from_the_coarsest_features_first(name):
    config = PRESETS[name]
    encoder = Encoder(config).eval()
    encoder.w_avg.fill_(3.0)
    images = torch.rand(2, 3, config.resolution, config.resolution) * 2 - 1
    with torch.no_grad():
        ws, offsets = encoder(images), encoder.offsets(images)
    assert ws.shape == (2, config.num_ws, config.w_dim)
    torch.testing.assert_close(ws, offsets + 3.0)
    size_after, x = {}, images
    for i, block in enumerate(encoder.backbone):
        x = block(x)
        size_after[i] = x.shape[-1]
    sizes = [size_after[i] for i in encoder.taps]  # the heads' inputs, coarse styles first
    assert sizes == sorted(sizes) and len(sizes) == len(config.groups) == len(set(sizes))
    assert sizes[0] == config.resolution >> config.downsamplings


@pytest.mark.parametrize("fpn", [True, False])
def test_the_pyramid_lets_fine_styles_see_the_deepest_features(fpn):
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig.model_validate({**TINY_ENCODER, "fpn": fpn})).eval()
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["deepest"] = output

    encoder.backbone[encoder.taps[0]].register_forward_hook(keep)  # the coarsest tap's block
    offsets = encoder.offsets(torch.rand(1, 3, 16, 16) * 2 - 1)
    offsets[:, TINY_ENCODER["groups"][0]:].square().sum().backward()  # the finest tap's styles
    gradient = captured["deepest"].grad
    reaches = gradient is not None and bool(gradient.abs().sum() > 0)
    assert reaches == fpn  # without the pyramid a fine head sees only the blocks before its tap


def test_config_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="must sum to num_ws"):
        EncoderConfig.model_validate({**TINY_ENCODER, "groups": [2, 2]})
    with pytest.raises(ValueError, match="allow at most 3"):
        EncoderConfig.model_validate({**TINY_ENCODER, "downsamplings": 4})
    with pytest.raises(ValueError, match="feature scales"):
        EncoderConfig.model_validate({**TINY_ENCODER, "groups": [1, 1, 3]})


def test_images_of_another_size_are_resized_and_bad_ones_refused():
    encoder = Encoder(EncoderConfig(**TINY_ENCODER)).eval()
    with torch.no_grad():
        assert encoder.encode(torch.zeros(1, 3, 64, 64)).shape == (1, 5, 16)
    with pytest.raises(EncoderInputError, match="face.png: expected RGB"):
        encoder.encode(torch.zeros(1, 1, 16, 16), "face.png")
    with pytest.raises(EncoderInputError, match="face.png: expected square"):
        encoder.encode(torch.zeros(1, 3, 16, 20), "face.png")


def test_imagenet_weights_load_into_a_shallower_backbone(tmp_path, monkeypatch):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2()
    weights = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), weights)
    encoder = Encoder(EncoderConfig.model_validate(
        {**TINY_ENCODER, "width_mult": 1.0, "blocks": [1, 1, 2]}))
    load_imagenet_backbone(encoder, weights)
    # Stage 2 keeps its first block (torchvision's 2), stage 3 its first two (torchvision's 4, 5).
    for ours, theirs in ((0, 0), (1, 1), (2, 2), (3, 4), (4, 5)):
        assert module_digest(encoder.backbone[ours]) == module_digest(reference.features[theirs])
    narrow = Encoder(EncoderConfig(**TINY_ENCODER))
    with pytest.raises(PipelineError, match="width_mult 1.0"):
        load_imagenet_backbone(narrow, weights)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailable, match="mobilenet_v2-b0353104.pth"):
        resolve_imagenet_weights(None, allow_download=False)
    with pytest.raises(WeightsUnavailable, match="not found"):
        resolve_imagenet_weights(tmp_path / "absent.pth", allow_download=False)


# --- losses, the optimiser, the split ---------------------------------------------------------

def test_inversion_losses_on_known_inputs():
    ws = torch.zeros(2, 3, 4)
    assert float(delta_regularizer(ws)) == 0.0
    ws[:, 1:] = torch.tensor([3.0, 4.0, 0.0, 0.0])  # |w_i - w_0| = 5 for i = 1, 2
    assert float(delta_regularizer(ws)) == pytest.approx(10.0)
    a, b = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    assert float(pixel_loss(a, b, "l1")) == 0.5 and float(pixel_loss(a, b, "l2")) == 0.25
    assert float(latent_loss(torch.ones(2, 3), torch.zeros(2, 3))) == 1.0


def test_optimizer_inverts_a_known_generator():
    torch.manual_seed(0)
    model = BlazeStyleGAN(STUDENT).eval().requires_grad_(False)
    w_true = model.mapping(torch.randn(2, 16))[:, None].expand(-1, 5, -1)
    with torch.no_grad():
        targets = model.synthesis.final_image(w_true)
    weights = InversionWeights(pixel=1.0, perceptual=0.0, delta=0.0, pixel_loss="l2")
    start = model.mapping.w_avg.clone()
    before = pixel_loss(model.synthesis.final_image(start.expand(2, 5, -1)), targets, "l2")
    ws, seconds = optimize_ws(model.synthesis.final_image, targets, start, 5, MultiScaleL1SSIM(),
                              weights, steps=60, lr=0.05)
    after = pixel_loss(model.synthesis.final_image(ws), targets, "l2")
    assert float(after) < 0.2 * float(before) and seconds > 0


def test_holdout_split_is_seeded_disjoint_and_keeps_flips_apart(dataset):
    data = FaceDataset(dataset, xflip=True)
    train, heldout = holdout_split(data, 4, seed=0, key="k")
    assert (train, heldout) == holdout_split(data, 4, seed=0, key="k")
    assert holdout_split(data, 4, seed=1, key="k")[1] != heldout
    n = len(data.files)
    assert len(heldout) == 4 and not set(heldout) & {i % n for i in train}
    assert sorted(train) == sorted({i for i in range(2 * n) if i % n not in heldout})
    with pytest.raises(DataError, match="train_encoder.holdout_images is 12"):
        holdout_split(data, 12, seed=0, key="train_encoder.holdout_images")


# --- training ---------------------------------------------------------------------------------

def test_short_training_improves_reconstruction_and_latents(tmp_path, student, dataset):
    out, result = run(tmp_path, student, dataset,
                      train_config(steps=40, eval_every=20, lambda_latent=10.0))
    # A random generator draws no faces: only its own images can be inverted well. Many W+ make
    # the same image: the latent term, weighted up here, is what pulls W+ to the true one.
    assert result["final"]["psnr_synthetic"] > result["initial"]["psnr_synthetic"] + 1
    assert result["final"]["ws_mse_synthetic"] < result["initial"]["ws_mse_synthetic"]
    assert (result["holdout_images"], result["train_images"]) == (4, 8)
    encoder, _, meta = load_encoder_and_generator(out / "encoder.pt", student)
    assert len(meta["heldout_files"]) == 4 and meta["generator"]["num_ws"] == 5
    torch.testing.assert_close(encoder.w_avg, torch.load(student)["state_dict"]["mapping.w_avg"])
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert {"pixel", "perceptual", "latent", "delta", "total"} <= set(summary["loss"])
    assert (out / "samples.png").is_file()


def test_cosine_learning_rate_follows_the_step():
    config = train_config(lr_schedule="cosine", steps=10, lr=0.01)
    assert learning_rate(config, 0) == 0.01 and learning_rate(config, 5) == pytest.approx(0.005)
    assert learning_rate(config.model_copy(update={"lr_schedule": "constant"}), 9) == 0.01


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_interrupted_and_resumed_training_is_bit_equal(tmp_path, student, dataset, schedule,
                                                       monkeypatch):
    config = train_config(lr_schedule=schedule)
    full, _ = run(tmp_path, student, dataset, config, "full")
    # The same run stopped after the state of step 3 is saved (as kill -9 would leave it): with
    # the same params, so the cosine schedule is the full run's too.
    steps = TrainingRun.steps
    monkeypatch.setattr(TrainingRun, "steps", lambda self: range(steps(self).start, 3))
    run(tmp_path, student, dataset, config, "part")
    assert load_checkpoint(tmp_path / "part" / "state.pt")["step"] == 3
    monkeypatch.setattr(TrainingRun, "steps", steps)
    run(tmp_path, student, dataset, config, "part")
    assert load_checkpoint(tmp_path / "part" / "state.pt")["step"] == 6
    assert module_digest(load_encoder(full / "encoder.pt")) == module_digest(
        load_encoder(tmp_path / "part" / "encoder.pt"))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_one_source_alone_trains(tmp_path, student, dataset, fraction):
    _, result = run(tmp_path, student, dataset, train_config(synthetic_fraction=fraction,
                                                             steps=2))
    assert np.isfinite(result["final"]["psnr_heldout"])


def test_a_mismatched_generator_is_refused_naming_both(tmp_path, student, dataset, trained):
    with pytest.raises(ConfigError, match=r"encoder.num_ws is 7 but the generator .*has 5"):
        run(tmp_path, student, dataset,
            train_config(encoder={**TINY_ENCODER, "num_ws": 7, "groups": [2, 5]}))
    other = BlazeStyleGAN(STUDENT.model_copy(update={"channels": [16, 16]}))
    other_path = tmp_path / "other.pt"
    save_snapshot(other_path, STUDENT_KIND, other, other.config.to_dict())
    with pytest.raises(PipelineError, match=r"trained on the generator student.pt .* but "
                                            r".*other.pt is"):
        load_encoder_and_generator(trained, other_path)
    wide = BlazeStyleGAN(STUDENT.model_copy(update={"w_dim": 8}))
    save_snapshot(other_path, STUDENT_KIND, wide, wide.config.to_dict())
    with pytest.raises(PipelineError, match=r"5 ws of 16, but .*other.pt has 5 ws of 8"):
        load_encoder_and_generator(trained, other_path)


def test_train_encoder_stage_under_torchrun_keeps_replicas_in_sync(tmp_path, student, dataset):
    params = write_params(tmp_path / "params.yaml", train_encoder={**TINY_TRAIN, "steps": 3})
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "stages.train_encoder", "--params", str(params), "--student", str(student),
         "--dataset", str(dataset), "--snapshot", str(out / "encoder.pt"),
         "--state", str(out / "state.pt"), "--live", str(out / "live"),
         "--samples", str(out / "samples.png"), "--metrics", str(out / "metrics.json"),
         "--device", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3


# --- export and evaluation --------------------------------------------------------------------

def test_export_passes_every_gate_and_describes_the_encoder(tmp_path, student, trained):
    out = tmp_path / "encoder"
    metrics = export_encoder(ExportEncoderConfig(**TINY_EXPORT), encoder_path=trained,
                             student_path=student, out_dir=out,
                             provenance={"git_commit": None, "code_dirty": None,
                                         "params_sha256": "0" * 64, "params_sections": ["x"]})
    assert metrics.float32.max_abs_error_ws_vs_pytorch < 1e-3
    assert metrics.float16.psnr_db_image_vs_pytorch_min >= 35.0
    assert metrics.simplified["max_abs_error_vs_original"] <= 1e-5
    card = read_artifact(encoder_card_file(out, "float16"), EncoderCard, "export_encoder")
    assert card.input.shape == (1, 16, 16, 3) and card.output.shape == (1, 5, 16)
    assert card.generator.num_ws == 5 and card.verified.tolerance_min_psnr_db == 35.0
    assert {p.name for p in out.iterdir()} == {
        "encoder.onnx", "encoder_simplified.onnx", "encoder_float32.tflite",
        "encoder_float32.json", "encoder_float16.tflite", "encoder_float16.json"}


def test_export_refuses_below_the_float16_gate_and_writes_nothing(tmp_path, student, trained):
    out = tmp_path / "encoder"
    with pytest.raises(ConversionMismatch, match="float16 TFLite: reconstruction PSNR"):
        export_encoder(ExportEncoderConfig(**{**TINY_EXPORT, "min_psnr_db": 100.0}),
                       encoder_path=trained, student_path=student, out_dir=out,
                       provenance={"git_commit": None, "code_dirty": None,
                                   "params_sha256": "0" * 64, "params_sections": ["x"]})
    assert not out.exists()


def test_evaluation_scores_every_inversion_on_both_sets(tmp_path, student, dataset, trained):
    tflite = tmp_path / "encoder"
    export_encoder(ExportEncoderConfig(**TINY_EXPORT), encoder_path=trained,
                   student_path=student, out_dir=tflite,
                   provenance={"git_commit": None, "code_dirty": None,
                               "params_sha256": "0" * 64, "params_sections": ["x"]})
    metrics, picture = evaluate_encoder(EvaluateEncoderConfig(**TINY_EVALUATE),
                                        encoder_path=trained, student_path=student,
                                        dataset_dir=dataset, tflite_dir=tflite)
    for name in ("heldout_real", "synthetic"):
        assert set(metrics[name]) == {"images", "encoder", "encoder_float16", "mean_face",
                                      "optimizer"}
    assert metrics["heldout_real"]["images"] == 4 and "ws_mse" in metrics["synthetic"]["encoder"]
    # float16 costs little against what the encoder gets wrong
    real = metrics["heldout_real"]
    assert abs(real["encoder"]["psnr_db"] - real["encoder_float16"]["psnr_db"]) < 0.5
    assert metrics["summary"]["speedup_vs_optimizer"] > 1
    assert 0 < metrics["latency"]["litert_float16"]["peak_share"] < 1
    assert picture.shape[1] == 3 * 16 + 4 * 2 and picture.shape[0] == 2 * 16 + 3 * 2
    json.dumps(metrics)  # writable as the stage's metrics
