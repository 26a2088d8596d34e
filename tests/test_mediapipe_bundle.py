"""The MediaPipe face_stylizer.task bundle: metadata, the landmark stand-in, the zip, the errors;
and (slow) MediaPipe's own Tasks FaceStylizer running our bundle in the mediapipe virtualenv.

Fast tests build tiny TFLite models by hand (a MUL by a constant) and need no mediapipe. The
slow ones need the virtualenv of scripts/mediapipe_venv.sh (``MEDIAPIPE_VENV``, default
``<project>/.venv-mediapipe``) and the real faces of ``../shared/data/faces``; they skip, saying
which is missing, when either is absent (a ``MEDIAPIPE_VENV`` set explicitly but missing fails).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from conftest import ROOT, SHARED_FACES
from pipeline.errors import DataError, FileError
from pipeline.export import mediapipe as mpb

# Set explicitly (as CI should), a missing virtualenv fails the slow tests instead of skipping them.
MEDIAPIPE_VENV_REQUIRED = "MEDIAPIPE_VENV" in os.environ
MEDIAPIPE_VENV = Path(os.environ.get("MEDIAPIPE_VENV", ROOT / ".venv-mediapipe"))
CLIENT = ROOT / "scripts" / "mediapipe_client.py"

# What MediaPipe's MetadataDisplayer shows for the metadata its face stylizer writer writes
# (checked against mediapipe itself in test_metadata_equals_mediapipes_own_writer).
EXPECTED_METADATA = {
    "name": "FaceStylizer",
    "description": "Performs face stylization on images.",
    "subgraph_metadata": [{
        "input_tensor_metadata": [{
            "name": "image",
            "description": "Input image to be processed.",
            "content": {"content_properties_type": "ImageProperties",
                        "content_properties": {"color_space": "RGB"}},
            "process_units": [{"options_type": "NormalizationOptions",
                               "options": {"mean": [0.0], "std": [255.0]}}],
            "stats": {"max": [1.0], "min": [0.0]},
        }],
        "output_tensor_metadata": [{"name": "out0"}],
    }],
    "min_parser_version": "1.0.0",
}


# --- tiny hand-built TFLite models ------------------------------------------------------------

def tflite_model(inputs: list[list[int]], outputs: list[tuple[int, list[int], float]],
                 dtype: int = 0, extra_metadata: bool = True) -> bytes:
    """A model whose output k is ``inputs[outputs[k][0]] * outputs[k][2]`` (a MUL by a (1,)
    constant); shapes ``outputs[k][1]`` (equal to the input's). ``extra_metadata`` adds a
    ``min_runtime_version`` entry, as converters write."""
    model = schema.ModelT()
    model.version, model.description = 3, "tiny"
    model.buffers = [schema.BufferT()]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.MUL
    code.version = 1
    model.operatorCodes = [code]
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []

    def tensor(name: str, shape: list[int], buffer: int = 0) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, dtype, buffer
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    graph.inputs = [tensor(f"in{i}", shape) for i, shape in enumerate(inputs)]
    graph.outputs = []
    for k, (source, shape, scale) in enumerate(outputs):
        constant = schema.BufferT()
        constant.data = np.array([scale], dtype="<f4").view(np.uint8)
        model.buffers.append(constant)
        op = schema.OperatorT()
        op.opcodeIndex = 0
        op.inputs = [graph.inputs[source], tensor(f"c{k}", [1], len(model.buffers) - 1)]
        op.outputs = [tensor(f"out{k}", shape)]
        op.builtinOptionsType = schema.BuiltinOptions.MulOptions
        op.builtinOptions = schema.MulOptionsT()
        graph.operators.append(op)
        graph.outputs.append(op.outputs[0])
    model.subgraphs = [graph]
    if extra_metadata:
        version = schema.BufferT()
        version.data = np.frombuffer(b"1.5.0\0", dtype=np.uint8)
        model.buffers.append(version)
        entry = schema.MetadataT()
        entry.name, entry.buffer = "min_runtime_version", len(model.buffers) - 1
        model.metadata = [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def stylizer(size: int = 8, **kwargs) -> bytes:
    return tflite_model([[1, size, size, 3]], [(0, [1, size, size, 3], 0.5)], **kwargs)


def run(model: bytes, *arrays: np.ndarray) -> list[np.ndarray]:
    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), arrays, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


def metadata_names(model: bytes) -> list[str]:
    root = schema.Model.GetRootAs(model, 0)
    return [root.Metadata(i).Name().decode() for i in range(root.MetadataLength())]


# --- metadata ----------------------------------------------------------------------------------

def test_metadata_round_trip_gives_mediapipes_fields_and_the_model_still_runs():
    model = stylizer()
    written = mpb.with_stylizer_metadata(model)
    assert mpb.read_stylizer_metadata(written) == EXPECTED_METADATA
    raw = mpb.metadata_buffer(written)
    assert raw[4:8] == b"M001" and mpb.parse_metadata(raw) == EXPECTED_METADATA
    assert raw == mpb.stylizer_metadata("out0")
    # The converter's entries stay; ours is added once, also when written again.
    assert metadata_names(written) == ["min_runtime_version", "TFLITE_METADATA"]
    again = mpb.with_stylizer_metadata(written, version="v2")
    assert metadata_names(again) == ["min_runtime_version", "TFLITE_METADATA"]
    assert mpb.read_stylizer_metadata(again)["version"] == "v2"
    x = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
    assert np.array_equal(run(written, x)[0], run(model, x)[0])
    assert np.array_equal(run(again, x)[0], x * np.float32(0.5))


def test_optional_general_fields_and_uint8_input_stats():
    metadata = mpb.read_stylizer_metadata(mpb.with_stylizer_metadata(
        stylizer(dtype=3), name="Ink", description="Ink style.", version="1.2",
        author="us", license="Apache-2.0"))
    assert {k: metadata[k] for k in ("name", "description", "version", "author", "license")} == {
        "name": "Ink", "description": "Ink style.", "version": "1.2", "author": "us",
        "license": "Apache-2.0"}
    # MediaPipe's writer: uint8 inputs get stats 0..255, float32 ones the normalized range.
    tensor = metadata["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert tensor["stats"] == {"max": [255.0], "min": [0.0]}


@pytest.mark.parametrize("model, message", [
    (b"not a model at all", "not a TFLite model"),
    (stylizer()[:40], "corrupt TFLite model"),
    (tflite_model([[1, 8, 8, 4]], [(0, [1, 8, 8, 4], 1.0)]), "input shape [1, 8, 8, 4]"),
    (tflite_model([[1, 8, 8, 3]], [(0, [1, 8, 8, 3], 1.0), (0, [1, 8, 8, 3], 2.0)]),
     "1 inputs and 2 outputs"),
    (tflite_model([[8, 8, 3]], [(0, [8, 8, 3], 1.0)]), "input shape [8, 8, 3]"),
    (stylizer(dtype=2), "input type 2"),
], ids=["garbage", "truncated", "four-channels", "two-outputs", "no-batch", "int32"])
def test_models_the_tasks_graph_cannot_run_are_refused_in_one_line(model, message):
    with pytest.raises(DataError) as error:
        mpb.with_stylizer_metadata(model)
    assert message in one_line(error)


def test_missing_or_broken_metadata_is_reported():
    with pytest.raises(DataError, match="no TFLITE_METADATA metadata"):
        mpb.read_stylizer_metadata(stylizer())
    with pytest.raises(DataError, match="no 'M001'"):
        mpb.parse_metadata(b"\0" * 16)
    with pytest.raises(DataError, match="corrupt model metadata"):
        mpb.parse_metadata(mpb.stylizer_metadata("out0")[:40])


# --- the landmark stand-in -------------------------------------------------------------------

@pytest.mark.parametrize("landmarks_first", [True, False], ids=["landmarks-first", "flag-first"])
def test_padding_appends_ten_zero_landmarks_and_keeps_the_outputs_order(landmarks_first):
    outputs = [(0, [1, 1, 1, 1404], 2.0), (1, [1, 1, 1, 1], 3.0)]
    model = tflite_model([[1, 1, 1, 1404], [1, 1, 1, 1]],
                         outputs if landmarks_first else outputs[::-1])
    padded = mpb.pad_landmarks_to_478(model)
    rng = np.random.default_rng(0)
    xs = (rng.random((1, 1, 1, 1404), dtype=np.float32), rng.random((1, 1, 1, 1), np.float32))
    before, after = run(model, *xs), run(padded, *xs)
    assert [a.shape for a in after] == [(1, 1, 1, 1434) if b.shape[-1] == 1404 else b.shape
                                        for b in before]
    for b, a in zip(before, after, strict=True):
        assert np.array_equal(a[..., :b.shape[-1]], b)
        assert not a[..., b.shape[-1]:].any()
    # The padded tensor carries the old output's name (the model's own metadata names it).
    interpreter = Interpreter(model_content=padded)
    names = [d["name"] for d in interpreter.get_output_details()]
    assert names == ["out0", "out1"]
    with pytest.raises(DataError, match="already has a 1434-float landmark output"):
        mpb.pad_landmarks_to_478(padded)


def test_a_model_without_a_landmark_output_is_refused():
    with pytest.raises(DataError) as error:
        mpb.pad_landmarks_to_478(stylizer(), "x.tflite")
    assert one_line(error).startswith("x.tflite: expected one float32 output of 1404 values")


def test_the_wheels_landmark_model_padded_matches_the_original():
    modules = wheel_modules_or_skip()
    original = (modules / mpb.WHEEL_LANDMARKS).read_bytes()
    padded = mpb.face_models(None, modules).face_landmarks_detector
    image = np.random.default_rng(1).random((1, 192, 192, 3), dtype=np.float32)
    before, after = run(original, image), run(padded, image)
    assert [a.shape for a in after] == [(1, 1, 1, 1434), (1, 1, 1, 1)]
    assert np.array_equal(after[0][..., :1404], before[0]) and not after[0][..., 1404:].any()
    assert np.array_equal(after[1], before[1])
    assert mpb.metadata_buffer(padded) == mpb.metadata_buffer(original)  # its metadata is kept


# --- face models ------------------------------------------------------------------------------

def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


DETECTOR = stylizer(4)
LANDMARKS = tflite_model([[1, 1, 1, 1404]], [(0, [1, 1, 1, 1404], 1.0)])


@pytest.mark.parametrize("layout", ["top", "folder", "nested"])
def test_models_come_from_an_official_landmarker_task_in_any_layout(tmp_path, layout):
    members = {"face_detector.tflite": DETECTOR, "face_landmarks_detector.tflite": LANDMARKS,
               "face_blendshapes.tflite": b"TFL3"}
    if layout == "folder":
        members = {f"face_landmarker/{k}": v for k, v in members.items()}
    elif layout == "nested":
        members = {"face_detector.tflite": DETECTOR,
                   "face_landmarks_detector.task": zip_of(
                       {"face_landmarks_detector.tflite": LANDMARKS})}
    task = tmp_path / "face_landmarker.task"
    task.write_bytes(zip_of(members))
    models = mpb.face_models(task, tmp_path / "ignored")
    assert (models.face_detector, models.face_landmarks_detector) == (DETECTOR, LANDMARKS)
    digest = hashlib.sha256(task.read_bytes()).hexdigest()
    assert models.source == f"official face landmarker {digest}"


def test_models_come_from_the_wheels_modules_as_a_stated_stand_in(tmp_path):
    (tmp_path / "face_detection").mkdir()
    (tmp_path / "face_landmark").mkdir()
    (tmp_path / mpb.WHEEL_DETECTOR).write_bytes(DETECTOR)
    (tmp_path / mpb.WHEEL_LANDMARKS).write_bytes(LANDMARKS)
    models = mpb.face_models(None, tmp_path)
    assert models.face_detector == DETECTOR
    assert models.source == "test stand-in from the mediapipe wheel (468 landmarks padded to 478)"
    assert run(models.face_landmarks_detector, np.ones((1, 1, 1, 1404), np.float32))[0].shape \
        == (1, 1, 1, 1434)


def test_missing_or_corrupt_face_models_are_one_line_errors_naming_the_file(tmp_path):
    task = tmp_path / "face_landmarker.task"
    with pytest.raises(FileError) as error:
        mpb.face_models(task, None)
    assert one_line(error) == f"{task}: face landmarker task not found"
    task.write_bytes(b"PK\3\4 not really")
    with pytest.raises(DataError) as error:
        mpb.face_models(task, None)
    assert one_line(error).startswith(f"{task}: not a zip archive")
    task.write_bytes(zip_of({"face_detector.tflite": DETECTOR}))
    with pytest.raises(DataError) as error:
        mpb.face_models(task, None)
    assert one_line(error) == (f"{task}: no face_landmarks_detector.tflite inside (entries: "
                               f"face_detector.tflite)")
    task.write_bytes(zip_of({"face_detector.tflite": b"garbage",
                             "face_landmarks_detector.tflite": LANDMARKS}))
    with pytest.raises(DataError, match=r"face_detector.tflite: not a TFLite model"):
        mpb.face_models(task, None)
    task.write_bytes(zip_of({"a/face_detector.tflite": DETECTOR,
                             "b/face_detector.tflite": DETECTOR}))
    with pytest.raises(DataError, match="2 entries named face_detector.tflite"):
        mpb.face_models(task, None)
    with pytest.raises(FileError) as error:
        mpb.face_models(None, tmp_path)
    assert one_line(error) == f"{tmp_path / mpb.WHEEL_DETECTOR}: face detector model not found"
    with pytest.raises(DataError, match="no face models"):
        mpb.face_models(None, None)
    with pytest.raises(FileError, match="no mediapipe/modules"):
        mpb.wheel_modules(tmp_path)


# --- the bundle --------------------------------------------------------------------------------

def bundle_models(stylizer_model: bytes | None = None, pad: int = 0) -> dict[str, bytes]:
    return {"face_detector": DETECTOR + b"\0" * pad, "face_landmarks_detector": LANDMARKS,
            "face_stylizer": stylizer_model or mpb.with_stylizer_metadata(stylizer())}


@pytest.mark.parametrize("pad", range(4))
def test_bundle_is_stored_aligned_exact_and_reproducible(tmp_path, pad):
    path = tmp_path / "face_stylizer.task"
    models = bundle_models(pad=pad)
    mpb.write_task_bundle(path, **models)
    first = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == list(mpb.BUNDLE_NAMES)
        assert archive.testzip() is None
        assert all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        for name, key in zip(mpb.BUNDLE_NAMES, models, strict=True):
            assert archive.read(name) == models[key]
    info = mpb.check_task_bundle(path)
    assert all(start % 4 == 0 for start, _ in info["entries"].values())
    assert {name: first[s:s + n] for name, (s, n) in info["entries"].items()} == {
        name: models[key] for name, key in zip(mpb.BUNDLE_NAMES, models, strict=True)}
    assert info["metadata"] == EXPECTED_METADATA
    mpb.write_task_bundle(path, **models)
    assert path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face_stylizer.task"]


def test_a_stylizer_without_metadata_is_refused_and_nothing_replaced(tmp_path):
    path = tmp_path / "face_stylizer.task"
    path.write_bytes(b"earlier bundle")
    with pytest.raises(DataError) as error:
        mpb.write_task_bundle(path, **bundle_models(stylizer()))
    assert one_line(error).startswith("face_stylizer.tflite: no TFLITE_METADATA metadata")
    assert path.read_bytes() == b"earlier bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["face_stylizer.task"]


def misaligned_zip(entries: dict[str, bytes]) -> bytes:
    """Stored entries with a local extra field that puts the first one's data off by one."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for i, (name, data) in enumerate(entries.items()):
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
            if i == 0:
                # data starts at 30 + len(name) + len(extra); make that 1 mod 4
                extra_size = (1 - 30 - len(name)) % 4 + 4
                info.extra = b"\xff\xff" + (extra_size - 4).to_bytes(2, "little") \
                    + b"\0" * (extra_size - 4)
            archive.writestr(info, data)
    return out.getvalue()


def test_bundle_faults_are_one_line_errors(tmp_path):
    path = tmp_path / "b.task"
    good = dict(zip(mpb.BUNDLE_NAMES, bundle_models().values(), strict=True))
    cases = {
        "names": (zip_of({**good, "extra.txt": b""}), "entries ["),
        "missing": (zip_of({k: v for k, v in good.items() if "stylizer" not in k}), "entries ["),
        "compressed": (zip_of(good), "is compressed"),
        "misaligned": (misaligned_zip(good), "not 4-byte aligned"),
        "not-a-zip": (b"hello", "not a zip archive"),
        "no-metadata": (None, "no TFLITE_METADATA metadata"),
    }
    for label, (data, message) in cases.items():
        if data is None:  # a valid layout around a stylizer without metadata
            data = mpb._stored_zip({**good, "face_stylizer.tflite": stylizer()})
        path.write_bytes(data)
        with pytest.raises(DataError) as error:
            mpb.check_task_bundle(path)
        assert message in one_line(error), label
        assert one_line(error).startswith(str(path)), label
    mpb.write_task_bundle(tmp_path / "good.task", **bundle_models())
    bundle = bytearray((tmp_path / "good.task").read_bytes())
    entries = mpb.check_task_bundle(tmp_path / "good.task")["entries"]
    start, size = entries["face_landmarks_detector.tflite"]
    bundle[start + size // 2] ^= 0xFF  # inside the landmarks model
    path.write_bytes(bytes(bundle))
    with pytest.raises(DataError, match="fails its CRC check"):
        mpb.check_task_bundle(path)
    with pytest.raises(FileError, match="face stylizer bundle not found"):
        mpb.check_task_bundle(tmp_path / "absent.task")


# --- MediaPipe itself (slow) -------------------------------------------------------------------

def mediapipe_python() -> Path:
    python = MEDIAPIPE_VENV / "bin" / "python"
    if not python.is_file():
        reason = (f"no mediapipe virtualenv at {MEDIAPIPE_VENV} (build it with "
                  f"scripts/mediapipe_venv.sh, or set MEDIAPIPE_VENV)")
        if MEDIAPIPE_VENV_REQUIRED:
            pytest.fail(f"MEDIAPIPE_VENV is set but {reason}")
        pytest.skip(reason)
    return python


def wheel_modules_or_skip() -> Path:
    mediapipe_python()
    return mpb.wheel_modules(MEDIAPIPE_VENV)


def face_photo() -> Path:
    photos = sorted(SHARED_FACES.glob("*.jpg")) if SHARED_FACES.is_dir() else []
    if not photos:
        pytest.skip(f"real face data not present at {SHARED_FACES}")
    return photos[0]


class Stylizer:
    """A tiny image-to-image model: a fixed colour mix (rows summing to at most L = 0.9) plus a
    fixed ramp, clamped to [0, 1]. The ramp makes it position-dependent, so a flipped or
    transposed crop would not match; L bounds how input rounding moves the output."""

    LIPSCHITZ = 0.9

    @staticmethod
    def module(size: int):
        import torch
        from torch import nn

        class ColourRamp(nn.Module):
            def __init__(self):
                super().__init__()
                self.mix = nn.Conv2d(3, 3, 1)
                mix = torch.tensor([[0.5, 0.3, 0.1], [0.1, 0.6, 0.2], [0.2, 0.1, 0.6]])
                with torch.no_grad():
                    self.mix.weight.copy_(mix.view(3, 3, 1, 1))
                    self.mix.bias.zero_()
                ramp = torch.zeros(1, 3, size, size)  # (1, C, H, W): converts correctly
                ramp[0, 0] = 0.2 * torch.linspace(0, 1, size).view(1, size)
                ramp[0, 2] = 0.2 * torch.linspace(0, 1, size).view(size, 1)
                self.register_buffer("ramp", ramp - 0.05)

            def forward(self, image):  # (1, 3, H, W) in [0, 1]
                return (self.mix(image) + self.ramp).clamp(0, 1)

        return ColourRamp().eval()


SIZE = 64
# MediaPipe hands out 8-bit images: the aligned crop is the model's input rounded to 1/255
# (moving our output by at most L * 0.5/255) and the stylized image is the model's output
# rounded to 1/255 (0.5/255); plus float slack for two runs of the same model.
TOLERANCE = (0.5 + 0.5 * Stylizer.LIPSCHITZ) / 255 + 1e-5


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny stylizer through the project's export chain (ONNX, onnxsim, onnx2tf float32),
    with and without metadata, and bundled with the wheel's stand-in face models."""
    import torch

    from pipeline.export.onnx_export import export_onnx
    from pipeline.export.onnx_simplify import simplify_onnx
    from pipeline.export.tflite import onnx_to_tflite

    modules = wheel_modules_or_skip()
    out = tmp_path_factory.mktemp("mediapipe")
    model = Stylizer.module(SIZE)
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    export_onnx(model, out / "stylizer.raw.onnx", 18, 1, images, 1e-5, input_name="image",
                output_name="stylized")
    simplify_onnx(out / "stylizer.raw.onnx", out / "stylizer.onnx", images, 1e-6)
    plain = onnx_to_tflite(out / "stylizer.onnx", out)["float32"].read_bytes()
    faces = mpb.face_models(None, modules)
    stylizer_model = mpb.with_stylizer_metadata(plain)
    bundle = out / "face_stylizer.task"
    mpb.write_task_bundle(bundle, face_detector=faces.face_detector,
                          face_landmarks_detector=faces.face_landmarks_detector,
                          face_stylizer=stylizer_model)
    for name, data in (("plain.tflite", plain), ("stylizer.tflite", stylizer_model),
                       ("detector.tflite", faces.face_detector),
                       ("landmarks.tflite", faces.face_landmarks_detector)):
        (out / name).write_bytes(data)
    return out


def client(bundle: Path, image: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(mediapipe_python()), str(CLIENT), str(bundle), str(image),
                           str(out), *extra], capture_output=True, text=True, timeout=300)


def photo_similarity(crop: np.ndarray, photo: Path) -> float:
    """Correlation of a crop with the whole photo downscaled: the shared faces are aligned
    already, so a right FFHQ-style crop is close to the full frame."""
    from PIL import Image

    with Image.open(photo) as image:
        small = np.asarray(image.convert("RGB").resize(crop.shape[:2][::-1], Image.BOX),
                           dtype=np.float32) / 255
    return float(np.corrcoef(crop.ravel(), small.ravel())[0, 1])


@pytest.mark.slow
def test_mediapipes_face_stylizer_runs_our_bundle_like_litert_on_its_crop(built, tmp_path):
    photo = face_photo()
    result = client(built / "face_stylizer.task", photo, tmp_path, "--repeats", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    stylized, aligned = np.load(tmp_path / "stylized.npy"), np.load(tmp_path / "aligned.npy")
    assert stylized.shape == aligned.shape == (SIZE, SIZE, 3)
    assert stylized.dtype == aligned.dtype == np.float32
    # Our float32 TFLite stylizer (the bundle's file, on LiteRT) on MediaPipe's aligned crop.
    ours = run((built / "stylizer.tflite").read_bytes(), aligned[None])[0][0]
    assert np.abs(ours - stylized).max() <= TOLERANCE
    assert photo_similarity(aligned, photo) > 0.9  # the padded landmarks give the right crop
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mediapipe"] == "0.10.21" and report["stylized_shape"] == [SIZE, SIZE, 3]
    assert 0 < report["stylize_median_s"] < 10


@pytest.mark.slow
def test_the_unpadded_468_landmark_model_gives_a_wrong_crop_silently(built, tmp_path):
    """Why the stand-in is padded: MediaPipe runs the 468-landmark model without complaint and
    aligns on garbage."""
    modules = wheel_modules_or_skip()
    bundle = tmp_path / "unpadded.task"
    mpb.write_task_bundle(bundle, face_detector=(built / "detector.tflite").read_bytes(),
                          face_landmarks_detector=(modules / mpb.WHEEL_LANDMARKS).read_bytes(),
                          face_stylizer=(built / "stylizer.tflite").read_bytes())
    photo = face_photo()
    result = client(bundle, photo, tmp_path / "out", "--repeats", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert photo_similarity(np.load(tmp_path / "out" / "aligned.npy"), photo) < 0.8


@pytest.mark.slow
def test_the_client_reports_no_face_in_one_line(built, tmp_path):
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(blank)
    result = client(built / "face_stylizer.task", blank, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mediapipe_client: error: {blank}: MediaPipe found no face")
    result = client(tmp_path / "absent.task", blank, tmp_path / "out")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].endswith("absent.task: bundle not found")


REFERENCE_WRITER = """
import io, json, sys, zipfile
from mediapipe.tasks.python.metadata import metadata
from mediapipe.tasks.python.metadata.metadata_writers import face_stylizer
plain, detector, landmarks, ours = (open(p, "rb").read() for p in sys.argv[1:5])
writer = face_stylizer.MetadataWriter.create(
    bytearray(plain), bytearray(detector), bytearray(landmarks),
    input_norm_mean=[0.0], input_norm_std=[255.0])  # Model Maker's export
bundle, reference_json = writer.populate()
reference = zipfile.ZipFile(io.BytesIO(bundle)).read("face_stylizer.tflite")
print(json.dumps({
    "reference": json.loads(reference_json),
    "ours": json.loads(metadata.MetadataDisplayer.with_model_buffer(ours).get_metadata_json()),
    "same_bytes": bytes(metadata.get_metadata_buffer(reference))
                  == bytes(metadata.get_metadata_buffer(ours)),
    "names": zipfile.ZipFile(io.BytesIO(bundle)).namelist()}))
"""


@pytest.mark.slow
def test_metadata_equals_mediapipes_own_writer(built):
    """MediaPipe's face stylizer MetadataWriter on the same model, inside the mediapipe venv:
    its MetadataDisplayer shows the same JSON for our model, the metadata buffers are the same
    bytes, and its bundle has our entry names in our order."""
    result = subprocess.run(
        [str(mediapipe_python()), "-c", REFERENCE_WRITER]
        + [str(built / n) for n in ("plain.tflite", "detector.tflite", "landmarks.tflite",
                                    "stylizer.tflite")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["ours"] == shown["reference"]
    assert shown["same_bytes"]
    assert shown["names"] == list(mpb.BUNDLE_NAMES)
    # Our reader agrees with MediaPipe's displayer on our file.
    ours = mpb.read_stylizer_metadata((built / "stylizer.tflite").read_bytes())
    assert ours == shown["ours"]
