"""I/O failures are user errors: a stage given a missing or corrupt input, a full disk, or an output
path that cannot be created ends with one line naming the path and the cause, exit status 1, no
traceback, and no partial artifact (nor a temporary) left behind."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import typer
from onnx import TensorProto, helper

from conftest import ROOT, TINY_PREPARE, write_params
from pipeline.artifacts.base import write_artifact
from pipeline.data.dataset import FaceDataset
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.errors import DataError, FileError
from pipeline.io import write_bytes
from pipeline.metrics import latency
from pipeline.metrics.reference import Reference, ReferenceSummary
from pipeline.models.blazestylegan import STUDENT_KIND, BlazeStyleGAN
from pipeline.runtimes import ModelFileError, run_onnx, run_tflite
from pipeline.snapshot import save_snapshot
from pipeline.stage import stage_run
from test_onnx_export import STUDENT
from test_train_teacher import TINY_TEACHER, TRAIN

STRIP_HEADS = {"input": "z", "layout": "nhwc", "check_latents": 2, "seed": 0}


def run_stage(*args: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``python -m stages.<args>``; with ``limit_file_bytes``, every file the process writes is
    capped at that size (RLIMIT_FSIZE): a write past it fails as on a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          preexec_fn=limit if limit_file_bytes is not None else None)


def assert_one_error_line(result: subprocess.CompletedProcess, stage: str, *fragments: str) -> str:
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {stage}: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line, line
    return line


@contextlib.contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[bool]:
    """A tmpfs mounted at ``path`` (True), or False where this machine does not allow mounting."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


@pytest.fixture(scope="module")
def student_snapshot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("student") / "student.pt"
    torch.manual_seed(0)
    save_snapshot(path, STUDENT_KIND, BlazeStyleGAN(STUDENT), STUDENT.to_dict())
    return path


def strip_heads_args(params: Path, student: Path, snapshot: Path, metrics: Path) -> list[str]:
    return ["stages.strip_heads", "--params", str(params), "--student", str(student),
            "--snapshot", str(snapshot), "--metrics", str(metrics)]


@pytest.fixture
def params(tmp_path) -> Path:
    return write_params(tmp_path / "params.yaml", strip_heads=STRIP_HEADS)


def test_missing_and_truncated_snapshots_are_one_line(tmp_path, params, student_snapshot):
    out = tmp_path / "out"
    missing = run_stage(*strip_heads_args(params, tmp_path / "none.pt", out / "s.pt",
                                          out / "m.json"))
    assert_one_error_line(missing, "strip_heads", "none.pt", "checkpoint not found")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(student_snapshot.read_bytes()[:1000])
    result = run_stage(*strip_heads_args(params, truncated, out / "s.pt", out / "m.json"))
    assert_one_error_line(result, "strip_heads", "truncated.pt", "not a readable checkpoint")
    assert not out.exists()


def onnx_bytes() -> bytes:
    graph = helper.make_graph([helper.make_node("Identity", ["z"], ["image"])], "g",
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def test_truncated_onnx_is_not_an_onnx_model(tmp_path):
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    good.write_bytes(onnx_bytes())
    bad.write_bytes(onnx_bytes()[:25])
    params = write_params(tmp_path / "params.yaml",
                          simplify_onnx={"check_latents": 1, "seed": 0, "max_abs_error": 0.0})
    out = tmp_path / "out"
    result = run_stage("stages.simplify_onnx", "--params", str(params), "--student", str(bad),
                       "--teacher", str(good), "--student-out", str(out / "s.onnx"),
                       "--teacher-out", str(out / "t.onnx"), "--metrics", str(out / "m.json"))
    assert_one_error_line(result, "simplify_onnx", "bad.onnx", "not an ONNX model")
    assert not out.exists()
    with pytest.raises(ModelFileError, match="bad.onnx: ONNX Runtime cannot load it"):
        run_onnx(bad, np.zeros((1, 4), np.float32))
    assert run_onnx(good, np.ones((1, 4), np.float32)).tolist() == [[1.0] * 4]
    assert onnx.load(str(good)).graph.node[0].op_type == "Identity"


def test_a_tflite_folder_without_its_model_names_the_file(tmp_path):
    folder = tmp_path / "tflite"
    folder.mkdir()
    with pytest.raises(ModelFileError, match=r"student_float16.tflite: TFLite model not found"):
        latency.litert_runner(folder / "student_float16.tflite", 1)
    (folder / "student_float32.tflite").write_bytes(b"TFL3" + bytes(100))
    with pytest.raises(ModelFileError, match=r"student_float32.tflite: not a TFLite model"):
        run_tflite(folder / "student_float32.tflite", np.zeros((1, 4), np.float32))
    with pytest.raises(ModelFileError, match=r"teacher.onnx: ONNX model not found"):
        latency.onnxruntime_runner(folder / "teacher.onnx", 1)


def test_a_corrupt_dataset_or_reference_set_is_a_data_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{ not json")
    params = write_params(tmp_path / "params.yaml", teacher=TRAIN, train_teacher=TINY_TEACHER)
    result = run_stage("stages.teacher", "--params", str(params), "--dataset", str(data),
                       "--pretrained", str(tmp_path / "pretrained"), "--snapshot",
                       str(tmp_path / "t.pt"), "--state", str(tmp_path / "s.pt"),
                       "--live", str(tmp_path / "live"), "--samples", str(tmp_path / "s.png"),
                       "--metrics", str(tmp_path / "t.json"), "--device", "cpu")
    assert_one_error_line(result, "teacher", f"{data / 'dataset.json'}: not valid JSON")
    assert not (tmp_path / "t.pt").exists() and not (tmp_path / "s.pt").exists()
    prepare_dataset("synthetic", data, PrepareConfig(**TINY_PREPARE), workers=1)
    image = sorted((data / "images").iterdir())[0]
    image.write_bytes(image.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{image}: unreadable image .image file is truncated"):
        FaceDataset(data, in_memory=True)
    (data / "manifest.csv").unlink()
    with pytest.raises(DataError, match=r"manifest.csv: unreadable .No such file or directory"):
        FaceDataset(data)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "reference.json").write_text('{"fid_available": false}')
    with pytest.raises(DataError, match=r"reference.json: images: missing.*re-run it"):
        Reference(reference)
    write_artifact(reference / "reference.json", ReferenceSummary(
        images=2, dataset_sha256="0" * 64, seed=0, resolution=32, fid_available=False,
        fid_unavailable_reason="no weights", fid_weights_sha256=None))
    (reference / "images.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"images.npz: unreadable"):
        Reference(reference)


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, params, student_snapshot):
    disk = tmp_path / "disk"
    with mounted_tmpfs(disk, "size=4k") as mounted:
        if mounted:
            result = run_stage(*strip_heads_args(params, student_snapshot, disk / "s.pt",
                                                 tmp_path / "m.json"))
            reason = "No space left on device"
        else:  # no mount here: cap the size of every file written (the same failed write)
            disk.mkdir(exist_ok=True)
            result = run_stage(*strip_heads_args(params, student_snapshot, disk / "s.pt",
                                                 tmp_path / "m.json"), limit_file_bytes=4096)
            reason = "File too large"
        assert_one_error_line(result, "strip_heads", f"{disk / 's.pt'}: {reason}")
        assert list(disk.iterdir()) == []  # no snapshot, no temporary
    assert not (tmp_path / "m.json").exists()


def test_an_output_path_that_cannot_be_created_is_one_line(tmp_path, params, student_snapshot):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = run_stage(*strip_heads_args(params, student_snapshot, blocker / "sub" / "s.pt",
                                         tmp_path / "m.json"))
    assert_one_error_line(result, "strip_heads", "cannot create", "a_file/sub", "Not a directory")
    assert blocker.read_text() == "not a directory" and not (tmp_path / "m.json").exists()


def test_a_directory_that_refuses_writes_is_one_line(tmp_path):
    target = tmp_path / "locked"
    with contextlib.ExitStack() as stack:
        if os.geteuid() != 0:
            target.mkdir()
            target.chmod(0o500)
            stack.callback(target.chmod, 0o700)
            reason = "Permission denied"
        elif stack.enter_context(mounted_tmpfs(target, "size=64k,ro")):
            reason = "Read-only file system"  # root ignores permission bits, not a read-only mount
        else:
            pytest.skip("running as root where tmpfs cannot be mounted: no write is refused")
        with pytest.raises(FileError, match=f"cannot create {target / 'x.json'}: {reason}"):
            write_bytes(target / "x.json", b"{}")
        assert list(target.iterdir()) == []


def test_an_os_error_in_a_stage_body_is_one_line(capsys):
    """Any OSError a library raises (e.g. dvclive writing its logs) ends the stage the same way."""
    with pytest.raises(typer.Exit) as exit_info:
        with stage_run("demo"):
            raise FileNotFoundError(2, "No such file or directory", "dvclive/metrics.json")
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: demo: dvclive/metrics.json: No such file or directory"
    assert not any("Traceback" in line for line in err)
