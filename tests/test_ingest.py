"""Real images: every mode is converted to RGB, every unusable file is skipped with a reason."""

import csv
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from pipeline.config import load_config
from pipeline.data.ingest import SourceFile, load_face
from pipeline.data.prepare import PrepareConfig, prepare_dataset
from pipeline.errors import DataError

R = 32


def face(size=(64, 64), seed=0) -> np.ndarray:
    """A smooth random RGB picture (not noise, so resizing keeps it recognisable)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size[1], 0:size[0]] / max(size)
    channels = [np.sin(x * rng.uniform(2, 6) + y * rng.uniform(2, 6) + rng.uniform(0, 6))
                for _ in range(3)]
    return ((np.stack(channels, axis=-1) + 1) * 127.5).astype(np.uint8)


def encode(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_rgb16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one), built from the PNG spec."""
    h, w, _ = array.shape
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16-bit, colour type 2 (RGB)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def load_bytes(tmp_path, name: str, data: bytes):
    (tmp_path / name).write_bytes(data)
    return load_face(SourceFile(tmp_path, name, in_zip=False), R)


def test_rgb_is_resized_with_antialiasing(tmp_path):
    # A 1-pixel checkerboard averages to mid-grey when filtered; naive subsampling keeps 0/255.
    checker = ((np.indices((256, 256)).sum(axis=0) % 2) * 255).astype(np.uint8)
    item = load_bytes(tmp_path, "c.png", encode(Image.fromarray(np.stack([checker] * 3, -1))))
    assert item.image.shape == (R, R, 3)
    assert np.abs(item.image.astype(int) - 128).max() < 8


def test_grayscale_becomes_rgb(tmp_path):
    grey = face()[..., 0]
    item = load_bytes(tmp_path, "g.png", encode(Image.fromarray(grey, mode="L")))
    assert item.source_mode == "L" and item.image.shape == (R, R, 3)
    assert (item.image[..., 0] == item.image[..., 1]).all()


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 10
    rgba[:, :32, 3] = 255  # left half opaque dark, right half fully transparent
    item = load_bytes(tmp_path, "a.png", encode(Image.fromarray(rgba, mode="RGBA")))
    assert item.source_mode == "RGBA"
    assert item.image[:, :8].max() <= 12 and item.image[:, -8:].min() >= 250


def test_16bit_grayscale_is_scaled(tmp_path):
    values = np.full((64, 64), 128 * 257, dtype=np.uint16)
    values[:, 32:] = 65535
    item = load_bytes(tmp_path, "g16.png", encode(Image.fromarray(values)))
    assert item.source_mode.startswith("I")
    assert item.image[0, 0, 0] == 128 and item.image[0, -1, 0] == 255


def test_16bit_rgb(tmp_path):
    rgb8 = face(seed=3)
    item = load_bytes(tmp_path, "c16.png", png_rgb16(rgb8.astype(np.uint16) * 257))
    assert item.skip_reason == "" and item.image.shape == (R, R, 3)
    expected = load_bytes(tmp_path, "c8.png", encode(Image.fromarray(rgb8))).image
    assert np.abs(item.image.astype(int) - expected).max() <= 1


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (64, 64), (0, 0, 0, 0))  # no ink: white
    item = load_bytes(tmp_path, "k.jpg", encode(cmyk, "JPEG"))
    assert item.source_mode == "CMYK" and item.image.min() > 240


def test_palette_and_non_square(tmp_path):
    image = Image.fromarray(face((96, 64))).convert("P")
    item = load_bytes(tmp_path, "p.png", encode(image))
    assert item.image.shape == (R, R, 3) and item.cropped


@pytest.mark.parametrize("name, data, reason", [
    ("notes.txt", b"not an image at all", "not_an_image"),
    ("empty.jpg", b"", "not_an_image"),
    ("small.png", None, "too_small"),
    ("truncated.jpg", None, "unreadable"),
    ("corrupt.png", None, "unreadable"),
    ("float.tif", None, "unsupported_mode"),
])
def test_unusable_files_are_skipped_with_a_reason(tmp_path, name, data, reason):
    if name == "small.png":
        data = encode(Image.fromarray(face((20, 20))))
    elif name == "truncated.jpg":
        full = encode(Image.fromarray(face((128, 128))), "JPEG")
        data = full[: len(full) // 2]
    elif name == "corrupt.png":
        full = bytearray(encode(Image.fromarray(face((128, 128)))))
        full[200:260] = bytes(60)  # inside the compressed pixel data: CRC and zlib both break
        data = bytes(full)
    elif name == "float.tif":
        data = encode(Image.fromarray(np.zeros((64, 64), np.float32), mode="F"), "TIFF")
    item = load_bytes(tmp_path, name, data)
    assert item.image is None and item.skip_reason == reason


def make_folder(root):
    root.mkdir()
    for i in range(4):
        Image.fromarray(face(seed=i)).save(root / f"face{i}.png")
    Image.fromarray(face(seed=9)).save(root / "sub_face.jpg")
    (root / "nested").mkdir()
    Image.fromarray(face(seed=5)).save(root / "nested" / "face5.png")
    (root / "zz_copy.png").write_bytes((root / "face0.png").read_bytes())
    (root / "readme.txt").write_text("hello")
    Image.fromarray(face((8, 8))).save(root / "tiny.png")
    (root / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: not even a candidate
    return root


def test_prepare_folder_reports_and_manifest(tmp_path, prepare_params):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    src = make_folder(tmp_path / "src")
    report = prepare_dataset(str(src), tmp_path / "out", config, workers=2)
    assert report.candidates == 9 and report.images == 6
    assert dict(report.skipped) == {"duplicate": 1, "not_an_image": 1, "too_small": 1}
    metrics = report.metrics()
    assert metrics["skipped"] == 3 and metrics["skipped_by_reason"]["too_small"] == 1
    with open(tmp_path / "out" / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"] for r in rows] == ["face0.png", "face1.png", "face2.png", "face3.png",
                                           "nested/face5.png", "sub_face.jpg"]
    assert rows[0]["source_width"] == "64" and rows[0]["source_mode"] == "RGB"
    with open(tmp_path / "out" / "skipped.csv") as f:
        skipped = {r["source"]: r["reason"] for r in csv.DictReader(f)}
    assert skipped == {"zz_copy.png": "duplicate", "readme.txt": "not_an_image",
                       "tiny.png": "too_small"}
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["count"] == 6 and meta["resolution"] == R


def test_zip_source_matches_folder(tmp_path, prepare_params):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    src = make_folder(tmp_path / "src")
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(src).as_posix())
        z.writestr("__MACOSX/._face0.png", b"resource fork")
    prepare_dataset(str(src), tmp_path / "a", config, workers=1)
    prepare_dataset(str(archive), tmp_path / "b", config, workers=1)
    assert ((tmp_path / "a" / "manifest.csv").read_bytes()
            == (tmp_path / "b" / "manifest.csv").read_bytes())


@pytest.mark.parametrize("kind, words", [
    ("missing", "no such file or directory"),
    ("empty", "contains no files"),
    ("hidden_only", "contains no files"),
    ("bad_zip", "not a valid zip archive"),
    ("plain_file", "expected a folder or a .zip"),
])
def test_bad_sources_fail_clearly_and_write_nothing(tmp_path, prepare_params, kind, words):
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    source = tmp_path / {"bad_zip": "faces.zip", "plain_file": "faces.tar"}.get(kind, "faces")
    if kind in ("empty", "hidden_only"):
        source.mkdir()
        if kind == "hidden_only":
            (source / ".hidden.png").write_bytes(b"x")
    elif kind in ("bad_zip", "plain_file"):
        source.write_bytes(b"PK\x03\x04 garbage")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=words) as error:
        prepare_dataset(str(source), out, config, workers=1)
    assert str(source) in str(error.value)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if not p.name.startswith(".out"))


def test_too_few_usable_images_fails_and_keeps_the_previous_artifact(tmp_path, prepare_params):
    src = make_folder(tmp_path / "src")
    out = tmp_path / "out"
    prepare_dataset(str(src), out, load_config(prepare_params(), "prepare", PrepareConfig),
                    workers=1)
    before = (out / "manifest.csv").read_bytes()
    strict = load_config(prepare_params(min_images=7), "prepare", PrepareConfig)
    with pytest.raises(DataError, match=r"only 6 usable images, prepare.min_images is 7") as error:
        prepare_dataset(str(src), out, strict, workers=1)
    assert "tiny.png: too_small" in str(error.value)
    assert (out / "manifest.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "params.yaml", "src"]


def test_stage_reports_bad_source_without_traceback(tmp_path, prepare_params):
    (tmp_path / "empty").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--source", str(tmp_path / "empty"),
         "--params", str(prepare_params()), "--out", str(tmp_path / "out"),
         "--metrics", str(tmp_path / "m.json"), "--preview", str(tmp_path / "p.png")],
        cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: prepare:" in result.stderr and "contains no files" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_corrupt_zip_member_is_skipped_not_fatal(tmp_path, prepare_params):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(3):
            z.writestr(f"face{i}.png", encode(Image.fromarray(face(seed=i))))
    data = bytearray(archive.read_bytes())
    offset = data.index(b"IDAT") + 20  # inside face0.png's stored bytes: its CRC no longer matches
    data[offset:offset + 8] = bytes(8)
    archive.write_bytes(bytes(data))
    config = load_config(prepare_params(), "prepare", PrepareConfig)
    report = prepare_dataset(str(archive), tmp_path / "out", config, workers=1)
    assert report.images == 2 and dict(report.skipped) == {"unreadable": 1}
    assert "BadZipFile" in report.skipped_files[0][2]
