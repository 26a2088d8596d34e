"""The face stylizer on tiny models: procedural style exemplars, the stylization latents and
losses, the fine-tune (it moves towards the style, resumes bit-exactly, refuses bad params),
the one-graph stylizer against its parts, export through the chain with its gates and the
MediaPipe bundle, and the evaluation."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, write_params
from pipeline.artifacts.base import read_artifact
from pipeline.artifacts.stylizer import (
    MEDIAPIPE_MODEL,
    TASK_BUNDLE,
    StylizerCard,
    stylizer_card_file,
    stylizer_model_file,
)
from pipeline.config import load_config
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.data.styles import PROCEDURAL_STYLES, procedural_style
from pipeline.errors import ConfigError, DataError
from pipeline.export.mediapipe import FaceModels, check_task_bundle, face_models, wheel_modules
from pipeline.export.stylizer import ExportStylizerConfig, build_stylizer, export_stylizer
from pipeline.metrics.stylizer import EvaluateStylizersConfig, evaluate_stylizers
from pipeline.models.blazestylegan import load_student
from pipeline.models.encoder import load_encoder_and_generator
from pipeline.models.stylegan2 import DISCRIMINATOR_KIND, Discriminator, StyleGAN2Config
from pipeline.models.stylizer import load_stylized
from pipeline.runtimes import ConversionMismatch, run_tflite
from pipeline.snapshot import load_checkpoint, save_checkpoint, save_snapshot
from pipeline.stylization import (
    content_loss,
    feature_matching_loss,
    gram_distance,
    gram_loss,
    gram_matrix,
    stylization_latents,
)
from pipeline.training.run import RunPaths
from pipeline.training.runtime import module_digest
from pipeline.training.stylize import StylizeConfig, style_indices, stylize
from test_encoder import dataset, student, trained  # noqa: F401 - module fixtures, see ruff

D_CONFIG = StyleGAN2Config(resolution=16, z_dim=16, w_dim=16, mapping_layers=2,
                           mapping_lr_mul=0.01, channel_base=256, channel_max=32,
                           conv_clamp=None, noise=False)
TINY_STYLIZE = {
    "seed": 0, "batch_size": 4, "steps": 6, "lr": 0.002, "betas": [0.0, 0.99],
    "swap_layers": [2, 3, 4], "alpha": 0.1, "feature_network": "discriminator",
    "allow_download": False, "lambda_pixel": 0.5, "lambda_content": 4.0, "lambda_style": 1.0,
    "lambda_feature_matching": 0.2, "probe_faces": 3, "mixed_precision": False,
    "checkpoint_every": 3, "log_every": 2, "sample_every": 3,
}
TINY_EXPORT = {"opset": 18, "check_images": 3, "seed": 0, "onnx_max_abs_error": 1e-4,
               "simplified_max_abs_error": 1e-5, "max_abs_error": 1e-3, "min_psnr_db": 35.0,
               "threads": 1, "version": "test"}


def stand_in_face_models() -> FaceModels:
    """The test stand-in face models from the mediapipe virtualenv (skip when it is absent)."""
    venv = Path(os.environ.get("MEDIAPIPE_VENV", ROOT / ".venv-mediapipe"))
    if not venv.is_dir():
        pytest.skip(f"no mediapipe virtualenv at {venv} (scripts/mediapipe_venv.sh builds it)")
    return face_models(None, wheel_modules(venv))


def stylize_config(**overrides) -> StylizeConfig:
    return StylizeConfig.model_validate({**TINY_STYLIZE, **overrides})


@pytest.fixture(scope="module")
def discriminator(tmp_path_factory):
    torch.manual_seed(3)
    D = Discriminator(D_CONFIG)
    path = tmp_path_factory.mktemp("discriminator") / "discriminator.pt"
    save_snapshot(path, DISCRIMINATOR_KIND, D, D_CONFIG.to_dict())
    return path


@pytest.fixture(scope="module")
def styles(tmp_path_factory):
    out = tmp_path_factory.mktemp("styles") / "ink"
    prepare_dataset("procedural:ink", out, PrepareConfig(
        resolution=16, synthetic_images=3, seed=1, min_images=1, preview_images=3), workers=1)
    return out


def run_stylize(tmp_path, config, *, styles, trained, student, discriminator,
                dataset, name="run"):
    out = tmp_path / name
    result = stylize(config, style="ink", styles_dir=styles, encoder_path=trained,
                     student_path=student, discriminator_path=discriminator,
                     dataset_dir=dataset, device="cpu",
                     paths=RunPaths(snapshot=out / "stylized.pt", state=out / "state.pt",
                                    live=out / "live", samples=out / "samples.png"))
    return out, result


@pytest.fixture(scope="module")
def stylized(tmp_path_factory, styles, trained, student, discriminator, dataset):
    out, result = run_stylize(tmp_path_factory.mktemp("stylize"), stylize_config(steps=12),
                              styles=styles, trained=trained, student=student,
                              discriminator=discriminator, dataset=dataset)
    return out / "stylized.pt", result


# --- style data ---------------------------------------------------------------------------------

@pytest.mark.parametrize("style", PROCEDURAL_STYLES)
def test_procedural_styles_are_deterministic_and_unlike_the_faces(style):
    from pipeline.data.synthetic import synthetic_face

    image = procedural_style(style, 1, 0, 32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert np.array_equal(image, procedural_style(style, 1, 0, 32))
    assert not np.array_equal(image, procedural_style(style, 1, 1, 32))
    faces = np.stack([synthetic_face(0, i, 32) for i in range(8)]).astype(np.float32)
    assert np.abs(image.astype(np.float32) - faces.mean(0)).mean() > 20


def test_prepare_styles_refuses_an_unknown_procedural_style(tmp_path):
    with pytest.raises(DataError, match="procedural:ink"):
        prepare_dataset("procedural:oil", tmp_path / "x", PrepareConfig(
            resolution=16, synthetic_images=2, seed=0, min_images=1, preview_images=2))
    assert not (tmp_path / "x").exists()


def test_a_dotted_section_names_a_style_and_a_missing_one_is_named(tmp_path):
    from pipeline.data.styles import StyleConfig

    params = write_params(tmp_path / "params.yaml",
                          styles={"ink": {"source": "procedural:ink", "images": 2, "seed": 0}})
    assert load_config(params, "styles.ink", StyleConfig).images == 2
    with pytest.raises(ConfigError, match="styles.oil"):
        load_config(params, "styles.oil", StyleConfig)


# --- latents and losses -------------------------------------------------------------------------

def test_latents_mix_only_the_swap_layers():
    w_style, w_random = torch.randn(2, 5, 4), torch.randn(2, 4)
    mixed = stylization_latents(w_style, w_random, [1, 3], 0.25)
    assert torch.equal(mixed[:, [0, 2, 4]], w_style[:, [0, 2, 4]])
    expected = 0.25 * w_style[:, [1, 3]] + 0.75 * w_random[:, None]
    assert torch.allclose(mixed[:, [1, 3]], expected, atol=1e-6)


def test_gram_terms_sum_over_every_layer_and_vanish_on_equal_features():
    a = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    b = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    g = gram_matrix(a[0])
    assert g.shape == (2, 3, 3) and torch.allclose(g, g.transpose(1, 2))
    per_layer = [gram_loss([x], [y]) for x, y in zip(a, b)]
    assert torch.allclose(gram_loss(a, b), per_layer[0] + per_layer[1])
    assert gram_loss(a, a) == 0 and content_loss(a, a) == 0 and feature_matching_loss(a, a) == 0
    assert torch.allclose(content_loss(a, b), ((a[1] - b[1]) ** 2).mean())
    distance = gram_distance(a, b)
    assert distance.shape == (2,) and (distance > 0).all()


def test_style_batches_cycle_through_every_style_image():
    batches = [style_indices(step, 4, 3, 0, 4) for step in range(3)]
    assert batches == [[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2]]
    assert style_indices(0, 4, 3, 1, 2) == [2, 0]  # rank 1's half of step 0


# --- fine-tuning --------------------------------------------------------------------------------

def test_fine_tune_moves_towards_the_style_and_keeps_the_mapping(stylized, student):
    path, result = stylized
    assert result["final"]["total"] < result["initial"]["total"]
    assert result["final"]["style"] < result["initial"]["style"]
    tuned, base = load_stylized(path), load_student(student)
    assert module_digest(tuned.mapping) == module_digest(base.mapping)
    assert module_digest(tuned.synthesis) != module_digest(base.synthesis)
    assert (path.parent / "samples.png").is_file()


def test_interrupted_and_resumed_fine_tune_is_bit_equal(tmp_path, styles, trained,
                                                        student, discriminator, dataset):
    kwargs = dict(styles=styles, trained=trained, student=student, discriminator=discriminator,
                  dataset=dataset)
    whole, _ = run_stylize(tmp_path, stylize_config(), name="whole", **kwargs)
    part, _ = run_stylize(tmp_path, stylize_config(steps=3), name="part", **kwargs)
    assert load_checkpoint(part / "state.pt")["step"] == 3
    part, _ = run_stylize(tmp_path, stylize_config(), name="part", **kwargs)
    assert module_digest(load_stylized(whole / "stylized.pt")) == \
        module_digest(load_stylized(part / "stylized.pt"))


def test_swap_layers_outside_the_generator_are_refused(tmp_path, styles, trained,
                                                       student, discriminator, dataset):
    with pytest.raises(ConfigError, match="stylize.swap_layers"):
        run_stylize(tmp_path, stylize_config(swap_layers=[2, 9]), styles=styles, trained=trained,
                    student=student, discriminator=discriminator, dataset=dataset)
    assert not (tmp_path / "run" / "stylized.pt").exists()


# --- the stylizer graph, export and bundle ------------------------------------------------------

def test_stylizer_equals_encoder_then_generator(stylized, trained, student):
    stylizer, meta = build_stylizer(trained, student, stylized[0])
    encoder, _, _ = load_encoder_and_generator(trained, student)
    generator = load_stylized(stylized[0])
    images = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = ((generator.synthesis.final_image(encoder(images * 2 - 1)) + 1) / 2).clamp(0, 1)
        assert torch.allclose(stylizer(images), expected, atol=1e-6)
    assert meta["style"] == "ink" and meta["swap_layers"] == [2, 3, 4]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, stylized, trained, student):
    out = tmp_path_factory.mktemp("export") / "ink"
    metrics = export_stylizer(ExportStylizerConfig(**TINY_EXPORT), style="ink",
                              encoder_path=trained, student_path=student,
                              stylized_path=stylized[0], faces=stand_in_face_models(),
                              out_dir=out, provenance={"git_commit": None, "code_dirty": None,
                                                       "params_sha256": "0" * 64,
                                                       "params_sections": ["stylize"]})
    return out, metrics


@pytest.mark.slow
def test_export_passes_every_gate_and_bundles_for_mediapipe(exported, stylized, trained,
                                                            student):
    out, metrics = exported
    assert metrics.float32.max_abs_error_vs_pytorch <= 1e-3
    assert metrics.float16.psnr_db_vs_pytorch_min >= 35.0
    card = read_artifact(stylizer_card_file(out, "float16"), StylizerCard, "export_stylizer")
    assert card.input.shape == card.output.shape == (1, 16, 16, 3)
    assert card.input.range == card.output.range == (0.0, 1.0) and card.style == "ink"
    contents = check_task_bundle(out / TASK_BUNDLE)
    assert sorted(contents["entries"]) == sorted(metrics.bundle.entries)
    assert metrics.bundle.max_abs_error_vs_float32 == 0
    # The float32 TFLite stylizer equals the PyTorch composition on a new image.
    stylizer, _ = build_stylizer(trained, student, stylized[0])
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = stylizer(image).permute(0, 2, 3, 1).numpy()
    for model in (stylizer_model_file(out, "float32"), out / MEDIAPIPE_MODEL):
        actual = run_tflite(model, image.permute(0, 2, 3, 1).contiguous().numpy())
        assert np.abs(actual - expected).max() < 1e-3


@pytest.mark.slow
def test_export_refuses_below_the_float16_gate_and_writes_nothing(tmp_path, stylized,
                                                                  trained, student):
    with pytest.raises(ConversionMismatch, match="float16"):
        export_stylizer(ExportStylizerConfig(**{**TINY_EXPORT, "min_psnr_db": 100.0}),
                        style="ink", encoder_path=trained, student_path=student,
                        stylized_path=stylized[0], faces=stand_in_face_models(),
                        out_dir=tmp_path / "ink", provenance={})
    assert not (tmp_path / "ink").exists()


def test_a_stylizer_of_another_encoder_is_refused(tmp_path, stylized, trained,
                                                  student):
    other = tmp_path / "encoder.pt"  # the same encoder, saved again with other meta
    payload = load_checkpoint(trained)
    save_checkpoint(other, {**payload, "meta": {**payload["meta"], "retrained": True}})
    with pytest.raises(ConversionMismatch, match="re-run stylize"):
        build_stylizer(other, student, stylized[0])


@pytest.mark.slow
def test_evaluation_scores_stylized_below_unstylized_on_style(tmp_path, exported, stylized,
                                                             styles, trained, student,
                                                             discriminator, dataset):
    for name, source in (("stylized", stylized[0].parent / "stylized.pt"),):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ink.pt").write_bytes(source.read_bytes())
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "ink").symlink_to(styles, target_is_directory=True)
    (tmp_path / "stylizers").mkdir()
    (tmp_path / "stylizers" / "ink").symlink_to(exported[0], target_is_directory=True)
    config = EvaluateStylizersConfig(faces=4, feature_network="discriminator", seed=0, threads=1,
                                     warmup=1, runs=2, grid_faces=2)
    metrics, picture = evaluate_stylizers(
        config, styles=["ink"], encoder_path=trained, student_path=student,
        discriminator_path=discriminator, dataset_dir=dataset, stylized_dir=tmp_path / "stylized",
        styles_dir=tmp_path / "styles", stylizers_dir=tmp_path / "stylizers")
    ink = metrics.styles["ink"]
    assert ink.stylized.gram_distance < ink.unstylized.gram_distance
    assert ink.gram_distance_vs_unstylized < 1 and ink.swap_layers == [2, 3, 4]
    swd = ink.stylized.swd
    assert abs(ink.stylized_float16.swd - swd) < 0.1 * swd
    assert ink.latency_float16.runs == 2
    assert picture.shape[0] > picture.shape[1] / 2  # 3 rows (styles, 2 faces) x 2 columns


@pytest.mark.slow
def test_mediapipes_face_stylizer_runs_the_exported_bundle(exported, tmp_path):
    """The real client: MediaPipe 0.10.21's FaceStylizer (its own venv) runs the bundle of a
    real (tiny) stylizer on a real photo; the result equals our float32 TFLite stylizer on
    MediaPipe's own aligned crop. Tolerance: MediaPipe hands out 8-bit images (the crop and the
    result are rounded to 1/255, and the crop we feed is the rounded one), so 3/255 at most
    and 1/255 on average."""
    from test_mediapipe_bundle import client, face_photo, mediapipe_python

    mediapipe_python()
    photo = face_photo()
    result = client(exported[0] / TASK_BUNDLE, photo, tmp_path, "--repeats", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    stylized, aligned = np.load(tmp_path / "stylized.npy"), np.load(tmp_path / "aligned.npy")
    assert stylized.shape == aligned.shape == (16, 16, 3)
    ours = run_tflite(stylizer_model_file(exported[0], "float32"), aligned[None])[0]
    error = np.abs(ours - stylized)
    assert error.max() <= 3 / 255 and error.mean() <= 1 / 255
