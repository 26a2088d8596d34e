"""Run a face_stylizer.task in MediaPipe's own Tasks FaceStylizer, the way an app would (CPU).

Runs INSIDE the mediapipe virtualenv of scripts/mediapipe_venv.sh (mediapipe 0.10.21 needs
numpy < 2, so it cannot share the project's environment); imports only mediapipe, numpy, PIL and
the standard library, never the project.

    .venv-mediapipe/bin/python scripts/mediapipe_client.py BUNDLE IMAGE OUT_DIR [--repeats 5]

Writes to OUT_DIR:
    stylized.npy   float32 (R, R, 3) in [0, 1]: FaceStylizer.stylize(image), the model's size
    aligned.npy    float32 (R, R, 3) in [0, 1]: FaceAligner's crop of the same face at the
                   stylizer's size (face_alignment_size = R), i.e. the model's input
    report.json    mediapipe version, shapes, seconds: creating each task, the first stylize call,
                   the median of ``--repeats`` further calls (one full stylize call: detection,
                   landmarks, alignment, the stylizer, conversion to an image)
    metadata.json  (with --metadata-json) MediaPipe's MetadataDisplayer JSON of the stylizer

Both tasks output 8-bit images (MediaPipe's TensorsToImageCalculator rounds to uint8), so both
arrays are multiples of 1/255. FaceAligner is built from the same bundle: it runs the same
FaceStylizerGraph without the stylizer, and needs only the two face models in it. Errors (no
face, unreadable files, a bundle MediaPipe refuses) are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np


class ClientError(Exception):
    """A problem with the inputs, reported as one line."""


def load_image(path: Path):  # -> mediapipe.Image
    import mediapipe as mp
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise ClientError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ClientError(f"{path}: not a readable image ({e})") from None
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(pixels))


def as_float(image) -> np.ndarray:
    """A MediaPipe SRGB image as float32 (H, W, 3) in [0, 1]."""
    return np.asarray(image.numpy_view(), dtype=np.float32)[..., :3] / 255.0


def create_tasks(bundle: Path, size: int | None):
    """(FaceStylizer, FaceAligner) on CPU; the aligner's crop is ``size`` square (None: 256,
    MediaPipe's default)."""
    from mediapipe.tasks.python import BaseOptions, vision

    @dataclasses.dataclass
    class AlignerOptions(vision.FaceAlignerOptions):
        # FaceAlignerOptions has no size; the graph option behind it is face_alignment_size.
        face_alignment_size: int | None = None

        def to_pb2(self):
            proto = super().to_pb2()
            if self.face_alignment_size is not None:
                proto.face_alignment_size = self.face_alignment_size
            return proto

    def options():
        return BaseOptions(model_asset_path=str(bundle), delegate=BaseOptions.Delegate.CPU)

    try:
        stylizer = vision.FaceStylizer.create_from_options(
            vision.FaceStylizerOptions(base_options=options()))
        aligner = vision.FaceAligner.create_from_options(
            AlignerOptions(base_options=options(), face_alignment_size=size))
    except (RuntimeError, ValueError) as e:
        raise ClientError(f"{bundle}: MediaPipe cannot load it ({first_line(e)})") from None
    return stylizer, aligner


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def stylizer_size(bundle: Path) -> int:
    """The stylizer's input size R, read from its TFLite model in the bundle."""
    from mediapipe.tasks.metadata import schema_py_generated as schema

    try:
        with zipfile.ZipFile(bundle) as archive:
            model = archive.read("face_stylizer.tflite")
        root = schema.Model.GetRootAs(model, 0)
        graph = root.Subgraphs(0)
        shape = graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()
    except FileNotFoundError:
        raise ClientError(f"{bundle}: bundle not found") from None
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise ClientError(f"{bundle}: not a face stylizer bundle ({first_line(e)})") from None
    return int(shape[1])


def run(bundle: Path, image_path: Path, out_dir: Path, repeats: int) -> dict:
    """Stylize and align one image; write the arrays; return the report."""
    import mediapipe as mp

    size = stylizer_size(bundle)
    image = load_image(image_path)
    start = time.perf_counter()
    stylizer, aligner = create_tasks(bundle, size)
    created = time.perf_counter() - start
    with stylizer, aligner:
        timings = []
        for _ in range(1 + repeats):
            start = time.perf_counter()
            stylized = stylizer.stylize(image)
            timings.append(time.perf_counter() - start)
            if stylized is None:
                raise ClientError(f"{image_path}: MediaPipe found no face")
        start = time.perf_counter()
        aligned = aligner.align(image)
        align_s = time.perf_counter() - start
        if aligned is None:
            raise ClientError(f"{image_path}: MediaPipe's FaceAligner found no face")
        stylized, aligned = as_float(stylized), as_float(aligned)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "stylized.npy", stylized)
    np.save(out_dir / "aligned.npy", aligned)
    return {"mediapipe": mp.__version__, "bundle": str(bundle), "image": str(image_path),
            "image_shape": list(image.numpy_view().shape), "model_size": size,
            "stylized_shape": list(stylized.shape), "aligned_shape": list(aligned.shape),
            "create_tasks_s": created, "stylize_first_s": timings[0],
            "stylize_median_s": statistics.median(timings[1:]) if repeats else None,
            "stylize_repeats": repeats, "align_s": align_s, "delegate": "CPU"}


def metadata_json(bundle: Path) -> str:
    """MediaPipe's MetadataDisplayer JSON of the bundle's stylizer."""
    from mediapipe.tasks.python.metadata import metadata

    with zipfile.ZipFile(bundle) as archive:
        model = archive.read("face_stylizer.tflite")
    try:
        return metadata.MetadataDisplayer.with_model_buffer(model).get_metadata_json()
    except ValueError as e:
        raise ClientError(f"{bundle}: face_stylizer.tflite has no readable metadata "
                          f"({first_line(e)})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="face_stylizer.task")
    parser.add_argument("image", type=Path, help="a photo with one face")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed stylize calls after the first (default 5)")
    parser.add_argument("--metadata-json", action="store_true",
                        help="also write metadata.json (MediaPipe's MetadataDisplayer)")
    args = parser.parse_args(argv)
    try:
        if args.repeats < 0:
            raise ClientError(f"--repeats {args.repeats}: must be 0 or more")
        report = run(args.bundle, args.image, args.out_dir, args.repeats)
        if args.metadata_json:
            (args.out_dir / "metadata.json").write_text(metadata_json(args.bundle))
        (args.out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    except ClientError as e:
        print(f"mediapipe_client: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mediapipe_client: error: {e.filename or args.out_dir}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print(json.dumps({k: report[k] for k in ("stylized_shape", "stylize_median_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
