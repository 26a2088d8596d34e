"""Evaluation metrics: the Fréchet distance against an independent reference, the FID weights'
resolution and safety checks, SWD on Laplacian pyramids, latency statistics, the Android
benchmark's commands and output parsing, the report's tables, and the bundle's input checks."""

import pickle

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from pipeline.artifacts.evaluation import Evaluation
from pipeline.errors import PipelineError
from pipeline.export.bundle import BundleConfig, build_bundle
from pipeline.images import quantize
from pipeline.metrics import android, fid, latency, report, swd
from pipeline.metrics.swd import SWD, laplacian_pyramid, level_descriptors


class Features(nn.Module):
    """Feature extractor stand-in: the 'images' are the features themselves."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x.double()


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), with SciPy, from samples."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_frechet_distance_matches_an_independent_reference():
    rng = np.random.default_rng(0)
    dim = 6
    mix = rng.standard_normal((dim, dim))
    real = rng.standard_normal((4000, dim))
    fake = rng.standard_normal((3000, dim)) @ mix * 0.5 + 0.7
    metric = fid.fid_metric(feature=Features(dim))
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected = reference_frechet(real, fake)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-6)

    # Known Gaussians, closed form: N(0, I) vs N(m, 4 I) in d dims gives |m|^2 + d (1 + 4 - 2*2).
    assert reference_frechet(real, fake) > 1.0
    big = rng.standard_normal((200000, 2))
    closed = float(np.sum(np.array([1.0, -1.0]) ** 2) + 2 * (1 + 4 - 4))
    shifted = big * 2 + np.array([1.0, -1.0])
    assert reference_frechet(big, shifted) == pytest.approx(closed, rel=0.02)

    # Cached real statistics give the same distance in a fresh metric.
    restored = fid.fid_metric(feature=Features(dim))
    fid.restore_real_statistics(restored, fid.real_statistics(metric))
    restored.update(torch.from_numpy(fake), real=False)
    assert float(restored.compute()) == pytest.approx(expected, rel=1e-9)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def test_fid_is_unavailable_offline_without_weights(hub):
    with pytest.raises(fid.WeightsUnavailable, match="fid.allow_download is false"):
        fid.resolve_weights(None, allow_download=False)
    with pytest.raises(PipelineError, match="not found"):
        fid.resolve_weights(hub / "typo.pth", allow_download=False)


def test_weights_are_checked_by_digest_and_loaded_as_tensors_only(tmp_path, hub):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.ones(2)}, path)
    digest = fid.sha256_file(path)
    assert fid.resolve_weights(path, False, sha256=digest) == path
    with pytest.raises(PipelineError, match="does not match fid.weights_sha256"):
        fid.resolve_weights(path, False, sha256="0" * 64)
    with pytest.raises(PipelineError, match="does not start with 6726825d"):
        fid.resolve_weights(path, False)  # not the published file

    # A pickle that would run code when loaded is refused before anything loads it unsafely.
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": Exploit()}))
    with pytest.raises(PipelineError, match="not a plain state dict of tensors"):
        fid.resolve_weights(evil, False, sha256=fid.sha256_file(evil))
    # The hub cache is searched when no local file is named.
    hub.mkdir(parents=True)
    (hub / fid.INCEPTION_FILE).write_bytes(path.read_bytes())
    assert fid.resolve_weights(None, False, sha256=digest) == hub / fid.INCEPTION_FILE


@pytest.mark.slow  # InceptionV3 at 299x299 on the CPU
def test_fid_with_local_inception_weights(tmp_path, hub):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Untrained(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialization
            return None

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    network = Untrained("inception-v3-compat", ["2048"], str(empty))
    for module in network.modules():  # He initialization: features that are not all ~0
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight)
    weights = tmp_path / "inception.pth"
    torch.save(network.state_dict(), weights)
    path = fid.resolve_weights(weights, False, sha256=fid.sha256_file(weights))
    metric = fid.fid_metric(path)
    # The features are torch-fidelity's own: its TensorFlow-1.x resize, not an antialiased one.
    pixels = quantize(torch.rand(2, 3, 32, 32) * 2 - 1)
    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(path))
    assert torch.allclose(metric.inception(pixels).float(), reference(pixels)[0].float(), atol=1e-5)
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    metric.update(quantize(images), real=True)
    same = fid.frechet_distance_to_real(metric, [images[:3], images[3:]])
    other = fid.frechet_distance_to_real(metric, [-images])
    assert abs(same) < 1e-3 < other


def test_laplacian_pyramid_reconstructs_the_images():
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    levels = laplacian_pyramid(images)
    assert [level.shape[-1] for level in levels] == [64, 32, 16]
    image = levels[-1]
    for level in reversed(levels[:-1]):
        up = torch.zeros_like(level)
        up[..., ::2, ::2] = image
        image = level + 4 * swd._blur(up)
    assert torch.allclose(image, images, atol=1e-5)


def test_swd_is_zero_for_the_same_set_and_grows_with_the_difference():
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(64, 3, 8, 8, generator=generator) * 2 - 1,
                                             size=32, mode="bilinear")
    noisy = smooth + 0.3 * torch.randn(64, 3, 32, 32, generator=generator)
    distances = SWD(level_descriptors(smooth, seed=0), seed=0)
    assert distances.distance(level_descriptors(smooth, seed=0))["swd_mean"] == 0
    slightly = distances.distance(level_descriptors(smooth + 0.03 * (noisy - smooth), seed=0))
    very = distances.distance(level_descriptors(noisy, seed=0))
    assert set(very) == {"swd_32", "swd_16", "swd_mean"}
    assert 0 < slightly["swd_32"] < very["swd_32"]


def test_time_runs_statistics():
    calls = []
    timing = latency.time_runs(lambda: calls.append(1), warmup=3, runs=20)
    assert len(calls) == 23 and timing["runs"] == 20
    assert 0 <= timing["p50_ms"] <= timing["p90_ms"] and timing["std_ms"] >= 0
    assert latency.sgemm_peak_gflops(threads=1, size=128, runs=2) > 0


BENCHMARK_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [/data/local/tmp/student_float16.tflite]
INFO: Loaded model /data/local/tmp/student_float16.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 0.197168
INFO: Initialized session in 11.406ms.
INFO: Running benchmark for at least 10 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=10 first=1312 curr=402 min=391 max=1312 avg=497.5 std=272
INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=405 curr=398 min=384 max=611 avg=410.32 std=38
INFO: Inference timings in us: Init: 11406, First inference: 1312, Warmup (avg): 497.5, Inference (avg): 410.32
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=3.5 overall=5.1
"""  # noqa: E501 - benchmark_model's output, verbatim


def test_android_benchmark_commands_and_parsing(tmp_path):
    commands = android.benchmark_commands("R58M123", tmp_path / "student_float16.tflite",
                                          tmp_path / "benchmark_model", threads=4, use_gpu=True,
                                          warmup=10, runs=50)
    assert commands[0] == ["adb", "-s", "R58M123", "push", str(tmp_path / "benchmark_model"),
                           "/data/local/tmp/benchmark_model"]
    assert commands[2][-1] == "/data/local/tmp/student_float16.tflite"
    run = commands[-1]
    assert run[:4] == ["adb", "-s", "R58M123", "shell"]
    assert {"--graph=/data/local/tmp/student_float16.tflite", "--num_threads=4", "--use_gpu=true",
            "--warmup_runs=10", "--num_runs=50", "--min_secs=0"} <= set(run)

    timings = android.parse_benchmark_output(BENCHMARK_OUTPUT)
    assert timings == pytest.approx({"init_ms": 11.406, "first_ms": 1.312, "warmup_mean_ms": 0.4975,
                                     "mean_ms": 0.41032, "runs": 50, "min_ms": 0.384,
                                     "max_ms": 0.611, "std_ms": 0.038})
    with pytest.raises(android.AndroidBenchmarkError, match="no 'Inference timings in us' line"):
        android.parse_benchmark_output("ERROR: Could not open '/data/local/tmp/x.tflite'.\n")
    with pytest.raises(android.AndroidBenchmarkError, match="binary not found"):
        android.run_benchmark("R58M123", tmp_path / "m.tflite", tmp_path / "missing", threads=4,
                              use_gpu=False, warmup=1, runs=1)


def test_a_failed_download_is_unavailable_and_leaves_nothing(hub, monkeypatch):
    def corrupt(url, dst, hash_prefix=None, progress=True):
        with open(dst, "wb") as f:
            f.write(b"truncated")
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0badc0de")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", corrupt)
    with pytest.raises(fid.WeightsUnavailable, match="could not be downloaded.*invalid hash"):
        fid.resolve_weights(None, allow_download=True)
    assert not hub.exists() or list(hub.iterdir()) == []


def results(fid_value=None, phone=False):
    """An evaluate result of the right shape, with made-up figures (report layout only)."""
    timing = {"mean_ms": 1.0, "p50_ms": 0.9, "p90_ms": 1.2, "std_ms": 0.1, "runs": 50,
              "achieved_gflops": 2.0, "fraction_of_peak": 0.02}
    quality = {"swd_32": 10.0, "swd_16": 5.0, "swd_mean": 7.5,
               **({"fid": fid_value} if fid_value is not None else {})}
    out = {"complexity": {n: {"params": 1000, "gflops": 0.002} for n in ("teacher", "student")},
           "latency": {"peak_sgemm_gflops": 100.0, "threads": 2,
                       **{n: {r: timing for r in report.RUNTIMES} for n in ("teacher", "student")}},
           "quality": {n: quality for n in ("teacher", "student", "student_float16")},
           "similarity": {pair: {"psnr_db": 20.0, "ssim": 0.6} for pair in (
               "student_vs_teacher", "student_float16_vs_teacher", "student_float16_vs_student")},
           "samples": 8,
           "fid_unavailable_reason": None if fid_value is not None else "no weights offline"}
    if phone:
        out["android"] = {"student_float16": {"init_ms": 11.4, "first_ms": 1.3,
                                              "warmup_mean_ms": 0.5, "mean_ms": 0.41,
                                              "std_ms": 0.04}}
    return Evaluation.model_validate(out)


def test_report_tables_with_and_without_fid_and_a_phone(tmp_path):
    offline = report.markdown(results(), "chart.png", "grid.png", android=False)
    assert "FID unavailable: no weights offline." in offline
    assert "| student (PyTorch) | 10.00 | 5.00 | 7.50 | n/a |" in offline
    assert "On device" not in offline
    full = report.markdown(results(12.5, phone=True), "chart.png", "grid.png", android=True)
    assert "| 12.50 |" in full and "| student_float16 | 0.410 | 0.040 |" in full
    report.write_report(results(), tmp_path / "r" / "report.md", tmp_path / "p" / "chart.png",
                        tmp_path / "p" / "grid.png")
    assert "![latency](../p/chart.png)" in (tmp_path / "r" / "report.md").read_text()
    assert (tmp_path / "p" / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_bundle_with_a_missing_model_writes_nothing(tmp_path):
    (tmp_path / "tflite").mkdir()
    config = BundleConfig(name="b", license="test")
    with pytest.raises(PipelineError, match="student_float16.tflite: missing; run convert_tflite"):
        build_bundle(config, params_path=tmp_path / "params.yaml", tflite_dir=tmp_path / "tflite",
                     evaluation_path=tmp_path / "e.json", conversion_path=tmp_path / "c.json",
                     dataset_dir=tmp_path / "data", out_dir=tmp_path / "release" / "b",
                     zip_path=tmp_path / "release" / "b.zip")
    assert not (tmp_path / "release").exists()
