"""The release bundle: the deployed student (float16 and float32 TFLite) with its interface
JSON, each style's float16 stylizer with its card and its MediaPipe ``.task`` bundle, a model
card, the exact params, the metrics, and ``SHA256SUMS``; as a directory and as a zip with fixed
timestamps (same contents, same bytes).
Its consumer's check is ``pipeline.export.verify_bundle``.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path
from typing import Annotated

import pydantic

from pipeline.artifacts.base import read_artifact, write_artifact
from pipeline.artifacts.evaluation import Evaluation, Latency, ModelSize
from pipeline.artifacts.release import (
    GENERATOR,
    METRICS,
    RELEASED_PRECISIONS,
    SUMS,
    ReleaseMetrics,
    model_files,
    stylizer_files,
)
from pipeline.artifacts.stylizer import StylizerExport, StylizersEvaluation
from pipeline.artifacts.tflite import (
    ConversionMetrics,
    GeneratorConversion,
    Source,
    TfliteCard,
    card_file,
    model_file,
)
from pipeline.config import StageConfig, read_yaml
from pipeline.data.layout import META_FILE, DatasetMeta
from pipeline.errors import PipelineError
from pipeline.io import atomic_path, sha256_file, write_text

log = logging.getLogger(__name__)

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: reproducible zip bytes


class BundleConfig(StageConfig):
    """The ``bundle`` section of params.yaml."""

    name: Annotated[str, pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]  # release name
    license: str     # licence of the released weights, stated in the model card


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def _model_section(card: TfliteCard, size: ModelSize) -> list[str]:
    r = card.resolution
    files = ((model_file("", GENERATOR, p).name, p) for p in RELEASED_PRECISIONS)
    return [
        "## Model", "",
        f"A BlazeStyleGAN generator (Jia et al., CVPRW 2023) at {r}x{r}: a StyleGAN2 mapping "
        "network and synthesis blocks at a quarter of the teacher's feature resolution with "
        "activation modulation, distilled from a StyleGAN2 teacher with a multi-scale perceptual "
        "loss and an adversarial loss on real images; only the last RGB head is kept. "
        f"{size.params / 1e6:.3f} M parameters, {size.gflops:.4f} GFLOPs per image "
        "(2 x MACs, mapping network included).", "",
        "| file | precision | input | output |", "| --- | --- | --- | --- |",
        *(f"| `{file}` | {precision} | `{card.input.name}` "
          f"{card.input.shape} {card.input.dtype}: {card.input.meaning} "
          f"| {card.output.shape} {card.output.layout}, RGB in [-1, 1] |"
          for file, precision in files), "",
        f"Output to pixels: {card.output.normalization}. Tensors are looked up by index "
        "(the JSON beside each model gives index, name, shape and dtype).", "",
    ]


def _use_and_data_sections(dataset: DatasetMeta) -> list[str]:
    data_line = ("the procedural synthetic face dataset of this pipeline (`prepare`, "
                 "`source: synthetic`): drawn faces, not photographs of people"
                 if dataset.source == "synthetic" else f"the face images at `{dataset.source}`")
    return [
        "## Intended use and limits", "",
        "Intended for on-device face image generation research and for benchmarking mobile "
        "generators. It generates images of faces that do not exist; it must not be used to "
        "impersonate real people or to make deceptive media. Its quality is bounded by its "
        f"teacher and its training data ({data_line}); it reproduces their biases and covers "
        "only aligned, frontal, centred faces. It has not been evaluated for fairness across "
        "demographic groups.", "",
        "## Training data", "",
        f"{dataset.count} images at {dataset.resolution}x{dataset.resolution}, "
        f"source `{dataset.source}`, manifest SHA-256 `{dataset.manifest_sha256}` (the list of "
        "every image file and its hash, `data/prepared/manifest.csv` in the pipeline).", "",
    ]


def _metrics_section(evaluation: Evaluation, conversion: GeneratorConversion) -> list[str]:
    quality, sim = evaluation.quality, evaluation.similarity
    fid = {name: _fmt(q.fid) if q.fid is not None else "n/a"
           for name, q in (("teacher", quality.teacher), ("student", quality.student),
                           ("student_float16", quality.student_float16))}
    reason = evaluation.fid_unavailable_reason
    fid_note = f" FID was not measured: {reason}." if reason else ""
    return [
        "## Metrics", "",
        f"Measured by the pipeline's `evaluate` stage on {evaluation.samples} images from "
        "fixed latents, the same for every model, against a fixed set of real images. SWD: "
        "sliced Wasserstein distance x 1e3 on Laplacian pyramids (ProGAN), mean over levels. "
        "FID: InceptionV3 pool3 via torchmetrics, only with the standard weights. PSNR / SSIM: "
        f"against the teacher on the same latents.{fid_note}", "",
        "| model | SWD | FID | PSNR vs teacher (dB) | SSIM vs teacher |",
        "| --- | --- | --- | --- | --- |",
        f"| teacher (PyTorch) | {_fmt(quality.teacher.swd_mean)} | {fid['teacher']} | - | - |",
        f"| student (PyTorch) | {_fmt(quality.student.swd_mean)} | {fid['student']} | "
        f"{_fmt(sim.student_vs_teacher.psnr_db)} | {_fmt(sim.student_vs_teacher.ssim, 4)} |",
        f"| student float16 TFLite | {_fmt(quality.student_float16.swd_mean)} | "
        f"{fid['student_float16']} | {_fmt(sim.student_float16_vs_teacher.psnr_db)} | "
        f"{_fmt(sim.student_float16_vs_teacher.ssim, 4)} |", "",
        f"Conversion (fixed latents, LiteRT vs PyTorch): float32 max abs error "
        f"{conversion.float32.max_abs_error_vs_pytorch:.2g}, float16 PSNR "
        f"{_fmt(conversion.float16.psnr_db_vs_pytorch_min, 1)} dB on the worst image.", "",
        *_latency_paragraph(evaluation.latency),
    ]


def _latency_paragraph(lat: Latency) -> list[str]:
    return [
        f"Latency (LiteRT with XNNPACK, batch 1, {lat.threads} threads, mean of "
        f"{lat.student.litert_float16.runs} runs after warm-up, on the machine that "
        "built this release, whose float32 sgemm peak was "
        f"{_fmt(lat.peak_sgemm_gflops, 1)} GFLOP/s): float16 "
        f"{lat.student.litert_float16.mean_ms:.3f} ms, float32 "
        f"{lat.student.litert_float32.mean_ms:.3f} ms (teacher float16: "
        f"{lat.teacher.litert_float16.mean_ms:.3f} ms).", "",
    ]


def _provenance_section(config: BundleConfig, origin: Source, dataset: DatasetMeta) -> list[str]:
    dirty = " (with code changes not in that commit)" if origin.code_dirty else ""
    return [
        "## Provenance", "",
        f"- git commit the models were built from: `{origin.git_commit}`{dirty}",
        f"- params SHA-256 (sections {', '.join(origin.params_sections)}): "
        f"`{origin.params_sha256}`",
        f"- dataset manifest SHA-256: `{dataset.manifest_sha256}`",
        f"- licence: {config.license}",
        "- the exact params: `params.yaml` in this bundle; all metrics: `metrics.json`", "",
    ]


def model_card(config: BundleConfig, card: TfliteCard, evaluation: Evaluation,
               conversion: GeneratorConversion, dataset: DatasetMeta) -> str:
    """MODEL_CARD.md: what the model is, its use and limits, data provenance, metrics with how
    they were measured, the exact params, commit and dataset hash (``card.source``: recorded
    when the models were built, not now)."""
    return "\n".join([
        f"# Model card: {config.name}", "",
        *_model_section(card, evaluation.complexity.student),
        *_use_and_data_sections(dataset),
        *_metrics_section(evaluation, conversion),
        *_provenance_section(config, card.source, dataset),
    ])


def _stylizer_section(styles: list[str], evaluation: StylizersEvaluation | None,
                      exports: dict[str, StylizerExport]) -> list[str]:
    """The model card's face stylizers: files, what they do, their scores and bundles."""
    if not styles:
        return []
    lines = ["## Face stylizers", "",
             "One image-to-image stylizer per style: an aligned face photo (1 x R x R x 3 float32 "
             "in [0, 1], NHWC) -> the inversion encoder -> the student fine-tuned to the style -> "
             "the stylized face (same shape and range). `stylizer_<style>_float16.tflite` runs on "
             "LiteRT; `face_stylizer_<style>.task` is the MediaPipe Tasks bundle (face detection, "
             "alignment and the float32 stylizer) for MediaPipe's FaceStylizer.", "",
             f"Scored on {evaluation.faces} held-out faces against the unstylized "
             "reconstructions (the encoder and the base student): style distances to the style "
             "images (lower is closer), content as the encoder's W+ distance on the layers the "
             "fine-tune did not mix, relative to two different faces (0: the same code, 1: "
             "another person).", "",
             "| style | Gram distance (unstylized) | SWD (unstylized) | content (unstylized) | "
             "float16 LiteRT p50 | face models |", "| --- | --- | --- | --- | --- | --- |"]
    stand_in = False
    for style in styles:
        scores, faces = evaluation.styles[style], exports[style].bundle.face_models
        sty, base = scores.stylized, scores.unstylized
        stand_in = stand_in or faces.startswith("test stand-in")
        lines.append(f"| {style} | {sty.gram_distance:.3g} ({base.gram_distance:.3g}) | "
                     f"{sty.swd:.0f} ({base.swd:.0f}) | {sty.content_wplus:.2f} "
                     f"({base.content_wplus:.2f}) | {scores.latency_float16.p50_ms:.2f} ms | "
                     f"{faces} |")
    if stand_in:
        lines += ["", "**The `.task` bundles hold TEST STAND-IN face models** (the mediapipe "
                  "wheel's 468-landmark mesh model padded to 478 landmarks, not MediaPipe's v2 "
                  "face landmarker): for tests only, not for release. Name an official "
                  "`face_landmarker.task` in `face_models.landmarker_task` to build real ones."]
    return [*lines, ""]


def write_sums(root: Path) -> None:
    files = sorted(p.name for p in root.iterdir() if p.is_file() and p.name != SUMS)
    write_text(root / SUMS, "".join(f"{sha256_file(root / f)}  {f}\n" for f in files))


def write_zip(root: Path, path: Path, folder: str) -> None:
    """Zip ``root``'s files under ``folder``, with fixed timestamps."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(root.iterdir()):
            info = zipfile.ZipInfo(f"{folder}/{file.name}", date_time=ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            archive.writestr(info, file.read_bytes())


def read_stylizers(styles: list[str], stylizers_dir: Path | None,
                   stylizer_metrics: Path | None, export_metrics: Path | None
                   ) -> tuple[StylizersEvaluation | None, dict[str, StylizerExport]]:
    """The stylizers' evaluation and each style's export metrics; their files must exist."""
    if not styles:
        return None, {}
    if None in (stylizers_dir, stylizer_metrics, export_metrics):
        raise PipelineError("a release with styles needs the stylizers, their evaluation and "
                            "their export metrics")
    for style in styles:
        for name in stylizer_files(style):
            if not (stylizers_dir / style / name).is_file():
                raise PipelineError(f"{stylizers_dir / style / name}: missing; run "
                                    f"export_stylizer@{style}")
    evaluation = read_artifact(stylizer_metrics, StylizersEvaluation, "evaluate_stylizers")
    missing = [s for s in styles if s not in evaluation.styles]
    if missing:
        raise PipelineError(f"{stylizer_metrics}: no scores of style {missing[0]}; run "
                            "evaluate_stylizers")
    return evaluation, {s: read_artifact(export_metrics / f"{s}.json", StylizerExport,
                                         f"export_stylizer@{s}") for s in styles}


def build_bundle(config: BundleConfig, *, params_path: Path, tflite_dir: Path,
                 evaluation_path: Path, conversion_path: Path, dataset_dir: Path, out_dir: Path,
                 zip_path: Path, styles: list[str] = (), stylizers_dir: Path | None = None,
                 stylizer_metrics: Path | None = None,
                 export_metrics: Path | None = None) -> dict:
    """Write the release directory ``out_dir`` (replaced whole) and ``zip_path``; with
    ``styles``, each style's stylizer files from ``stylizers_dir/<style>`` and their scores
    (``stylizer_metrics``, ``export_metrics/<style>.json``).

    Every input is read and validated before anything is written: a missing file, or one
    written by another version of its stage, fails with one line naming the file and the field.
    """
    for path in model_files(tflite_dir):
        if not path.is_file():
            raise PipelineError(f"{path}: missing; run convert_tflite")
    cards = [read_artifact(card_file(tflite_dir, GENERATOR, p), TfliteCard, "convert_tflite")
             for p in RELEASED_PRECISIONS]  # the shipped ones, the deployed one first
    evaluation = read_artifact(evaluation_path, Evaluation, "evaluate")
    conversion = read_artifact(conversion_path, ConversionMetrics, "convert_tflite")
    dataset = read_artifact(dataset_dir / META_FILE, DatasetMeta, "prepare")
    read_yaml(params_path)  # fails clearly on a broken params file before anything is written
    styles = list(styles)
    stylized, exports = read_stylizers(styles, stylizers_dir, stylizer_metrics, export_metrics)
    with atomic_path(out_dir, directory=True) as tmp:
        for path in model_files(tflite_dir):
            shutil.copyfile(path, tmp / path.name)
        for style in styles:
            for source, name in stylizer_files(style).items():
                shutil.copyfile(stylizers_dir / style / source, tmp / name)
        shutil.copyfile(params_path, tmp / "params.yaml")
        write_artifact(tmp / METRICS, ReleaseMetrics(
            evaluate=evaluation, convert_tflite=conversion.student,
            evaluate_stylizers=stylized, export_stylizer=exports or None))
        write_text(tmp / "MODEL_CARD.md", model_card(config, cards[0], evaluation,
                                                     conversion.student, dataset)
                   + "\n".join(_stylizer_section(styles, stylized, exports)))
        write_sums(tmp)
    write_zip(out_dir, zip_path, config.name)
    log.info("release %s: %s and %s", config.name, out_dir, zip_path)
    return {"files": sorted(p.name for p in out_dir.iterdir()),
            "zip_bytes": zip_path.stat().st_size}
