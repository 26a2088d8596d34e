"""Teacher training on a tiny model: outputs, bit-exact resume, NaN guard, torchrun replicas."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY_PREPARE, write_params
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.models.stylegan2 import load_teacher
from pipeline.snapshot import load_checkpoint
from pipeline.training import losses
from pipeline.training.monitor import TrainingDiverged
from pipeline.training.run import RunPaths
from pipeline.training.runtime import module_digest
from pipeline.training.teacher import TrainTeacherConfig, train_teacher

TINY_TEACHER = {
    "model": {"resolution": 16, "z_dim": 16, "w_dim": 16, "mapping_layers": 2,
              "mapping_lr_mul": 0.01, "channel_base": 128, "channel_max": 16,
              "conv_clamp": None, "noise": True},
    "seed": 0, "batch_size": 4, "steps": 6, "g_lr": 0.002, "d_lr": 0.002,
    "r1_gamma": 0.1, "r1_interval": 2, "pl_weight": 2.0, "pl_interval": 2,
    "style_mixing": 0.9, "ema_kimg": 0.01, "xflip": True, "mixed_precision": False,
    "data_workers": 0, "checkpoint_every": 3, "log_every": 2, "sample_every": 3, "sample_grid": 4,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "prepared"
    prepare = PrepareConfig(**{**TINY_PREPARE, "resolution": 16})
    prepare_dataset("synthetic", out, prepare, workers=1)
    return out


def teacher_config(**overrides) -> TrainTeacherConfig:
    return TrainTeacherConfig.model_validate({**TINY_TEACHER, **overrides})


def run(tmp_path, dataset, config, name="run"):
    out = tmp_path / name
    metrics = train_teacher(config, dataset_dir=dataset, device="cpu", paths=RunPaths(
        snapshot=out / "teacher.pt", state=out / "state.pt", live=out / "live",
        samples=out / "samples.png"))
    return out, metrics


def test_training_writes_snapshot_state_logs_and_samples(tmp_path, dataset):
    out, metrics = run(tmp_path, dataset, teacher_config())
    G = load_teacher(out / "teacher.pt")
    assert G(torch.randn(2, 16), noise_mode="const").shape == (2, 3, 16, 16)
    state = load_checkpoint(out / "state.pt")
    assert state["step"] == 6 and {"G", "D", "G_ema", "opt_G", "opt_D"} <= set(state)
    assert {"loss/d", "loss/g", "reg/r1", "reg/path_length", "images_per_second"} <= set(metrics)
    summary = json.loads((out / "live" / "metrics.json").read_text())
    assert summary["step"] == 6 and "loss" in summary
    assert (out / "live" / "plots" / "images" / "samples.png").is_file()
    assert (out / "samples.png").is_file()
    assert 0 <= metrics["data_wait_share"] < 1
    _, again = run(tmp_path, dataset, teacher_config())  # nothing left to train
    assert again == metrics  # the last logged values, kept in the training state


def test_interrupted_and_resumed_run_is_bit_equal(tmp_path, dataset):
    full, _ = run(tmp_path, dataset, teacher_config(), "full")
    part = tmp_path / "part"
    # Stop after 3 steps (a checkpoint), then resume to 6 with the same params otherwise.
    paths = RunPaths(snapshot=part / "teacher.pt", state=part / "state.pt", live=part / "live")
    train_teacher(teacher_config(steps=3), dataset_dir=dataset, device="cpu", paths=paths)
    train_teacher(teacher_config(), dataset_dir=dataset, device="cpu", paths=paths)
    a, b = load_checkpoint(full / "state.pt"), load_checkpoint(part / "state.pt")
    for key in ("G", "D", "G_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert (module_digest(load_teacher(full / "teacher.pt"))
            == module_digest(load_teacher(part / "teacher.pt")))


def test_data_loader_workers_and_a_streamed_dataset_change_nothing(tmp_path, dataset,
                                                                    monkeypatch):
    """Images decoded in two worker processes, from disk (not the in-memory copy), and a run
    resumed with another number of workers: bit-equal to the in-process run."""
    from pipeline.data.dataset import FaceDataset

    full, _ = run(tmp_path, dataset, teacher_config(), "full")
    monkeypatch.setattr(FaceDataset, "AUTO_MEMORY_BYTES", 0)  # "auto" now streams from disk
    part = tmp_path / "part"
    paths = RunPaths(snapshot=part / "teacher.pt", state=part / "state.pt")
    train_teacher(teacher_config(steps=3, data_workers=2), dataset_dir=dataset, device="cpu",
                  paths=paths)
    train_teacher(teacher_config(data_workers=1), dataset_dir=dataset, device="cpu",
                  paths=paths)
    assert (module_digest(load_teacher(full / "teacher.pt"))
            == module_digest(load_teacher(part / "teacher.pt")))


def test_state_from_other_params_is_not_resumed(tmp_path, dataset, caplog):
    out, _ = run(tmp_path, dataset, teacher_config(steps=3))
    run(tmp_path, dataset, teacher_config(steps=3, g_lr=0.001))
    assert "made with other params" in caplog.text
    assert load_checkpoint(out / "state.pt")["identity"]["config"]["g_lr"] == 0.001


def test_nan_loss_stops_and_keeps_last_good_state(tmp_path, dataset, monkeypatch):
    real_loss, calls = losses.g_nonsaturating_loss, []

    def loss_going_nan(logits):
        calls.append(1)
        value = real_loss(logits)
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setattr(losses, "g_nonsaturating_loss", loss_going_nan)
    out = tmp_path / "nan"
    # Checked when a log or a save is due (steps 1, 2, 3, 5 here), not at every step: the NaN of
    # step 4 is found at step 5, before anything is written.
    with pytest.raises(TrainingDiverged,
                       match=r"steps 4-5: loss/[dg] is nan.*state\.pt \(step 3\)"):
        train_teacher(teacher_config(), dataset_dir=dataset, device="cpu",
                      paths=RunPaths(snapshot=out / "teacher.pt", state=out / "state.pt"))
    assert load_checkpoint(out / "state.pt")["step"] == 3
    assert not (out / "teacher.pt").exists()


def test_resolution_mismatch_is_a_config_error(tmp_path, dataset):
    from pipeline.errors import ConfigError
    model = {**TINY_TEACHER["model"], "resolution": 32}
    with pytest.raises(ConfigError, match="train_teacher.model.resolution is 32"):
        run(tmp_path, dataset, teacher_config(model=model))


TRAIN = {"source": "train", "mapping_lr_mul": None}  # the teacher section: train it


def stage_command(params, dataset, out):
    return ["-m", "stages.teacher", "--params", str(params), "--dataset", str(dataset),
            "--pretrained", str(out / "pretrained"), "--snapshot", str(out / "teacher.pt"),
            "--state", str(out / "state.pt"), "--live", str(out / "live"),
            "--samples", str(out / "samples.png"), "--metrics", str(out / "teacher.json"),
            "--device", "cpu"]


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_bit_exact(tmp_path, dataset):
    params = write_params(tmp_path / "params.yaml", teacher=TRAIN,
                          train_teacher={**TINY_TEACHER, "steps": 40, "checkpoint_every": 5})
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, *stage_command(params, dataset, reference)], cwd=ROOT,
                   check=True, capture_output=True)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *stage_command(params, dataset, killed)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "state.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step = load_checkpoint(killed / "state.pt")["step"]
    assert step < 40 and not (killed / "teacher.pt").exists()
    result = subprocess.run([sys.executable, *stage_command(params, dataset, killed)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"resuming from {killed / 'state.pt'} at step" in result.stderr
    assert (module_digest(load_teacher(reference / "teacher.pt"))
            == module_digest(load_teacher(killed / "teacher.pt")))


@pytest.mark.slow
def test_torchrun_two_processes_stay_in_sync(tmp_path, dataset):
    params = write_params(tmp_path / "params.yaml", teacher=TRAIN,
                          train_teacher={**TINY_TEACHER, "steps": 4})
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29517", *stage_command(params, dataset, out)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas in sync" in result.stderr
    assert load_teacher(out / "teacher.pt")(torch.randn(1, 16)).shape == (1, 3, 16, 16)


def test_fewer_steps_than_the_saved_state_is_an_error(tmp_path, dataset):
    from pipeline.errors import ConfigError
    out, _ = run(tmp_path, dataset, teacher_config(steps=3))
    assert (out / "config.json").is_file()  # the resolved config, beside the training state
    with pytest.raises(ConfigError, match="at step 3, past train_teacher.steps \\(2\\)"):
        run(tmp_path, dataset, teacher_config(steps=2))


def test_batch_must_fit_minibatch_stddev_groups(tmp_path, dataset):
    from pipeline.errors import ConfigError
    with pytest.raises(ConfigError, match="multiple of 4"):
        run(tmp_path, dataset, teacher_config(batch_size=6))


def test_mapping_under_bfloat16_autocast_keeps_w_avg_in_float32():
    from pipeline.models.stylegan2 import Generator, StyleGAN2Config
    G = Generator(StyleGAN2Config.model_validate(TINY_TEACHER["model"]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        G.mapping(torch.randn(4, 16), update_w_avg=True)
        w = G.mapping(torch.randn(4, 16), psi=0.7)
    assert G.mapping.w_avg.dtype == torch.float32 and torch.isfinite(w).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error():
    from pipeline.errors import PipelineError
    from pipeline.training.runtime import resolve_device_type
    with pytest.raises(PipelineError, match="sees no CUDA device"):
        resolve_device_type("cuda")
    with pytest.raises(PipelineError, match="auto, cpu or cuda"):
        resolve_device_type("tpu")


def test_a_torn_dvclive_summary_left_by_kill_9_does_not_stop_the_resumption(tmp_path, dataset):
    out = tmp_path / "run"
    paths = RunPaths(snapshot=out / "teacher.pt", state=out / "state.pt", live=out / "live")
    train_teacher(teacher_config(steps=2, checkpoint_every=1), dataset_dir=dataset,
                  device="cpu", paths=paths)
    (out / "live" / "metrics.json").write_text('{"step": ')  # cut short by the kill
    train_teacher(teacher_config(steps=3, checkpoint_every=1), dataset_dir=dataset,
                  device="cpu", paths=paths)
    assert json.loads((out / "live" / "metrics.json").read_text())["step"] == 3


def test_step_values_stay_tensors_until_a_log_reads_them_all_at_once():
    from pipeline.training.monitor import Monitor

    monitor = Monitor(None, total_steps=4, start_step=0, images_per_step=2, enabled=False)
    for step in range(3):
        monitor.accumulate({"loss/g": torch.tensor(float(step)), "lr": 0.5})
    assert torch.is_tensor(monitor._sums["loss/g"])  # summed where it is: no host round trip
    monitor.check_finite(2, "hint")
    logged = monitor.log(3)
    assert (logged["loss/g"], logged["lr"]) == (1.0, 0.5)
    monitor.accumulate({"loss/g": torch.tensor(float("inf"))})
    monitor.accumulate({"loss/g": torch.tensor(1.0)})
    with pytest.raises(TrainingDiverged, match=r"steps 3-4: loss/g is inf; stopped without saving"):
        monitor.check_finite(4, "hint")


def test_a_bad_image_read_by_a_loader_worker_is_still_one_line(tmp_path, monkeypatch):
    from pipeline.data.dataset import FaceDataset
    from pipeline.errors import DataError

    data = tmp_path / "data"
    prepare_dataset("synthetic", data, PrepareConfig(**{**TINY_PREPARE, "resolution": 16}),
                    workers=1)
    image = sorted((data / "images").iterdir())[3]
    image.write_bytes(image.read_bytes()[:60])  # truncated after prepare checked it
    monkeypatch.setattr(FaceDataset, "AUTO_MEMORY_BYTES", 0)  # read in the worker, per step
    with pytest.raises(DataError) as error:
        train_teacher(teacher_config(data_workers=1, steps=30), dataset_dir=data, device="cpu",
                      paths=RunPaths(snapshot=tmp_path / "t.pt", state=tmp_path / "s.pt"))
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{image}: unreadable image"), message
