"""Evaluating the face stylizers: the ``evaluate_stylizers`` stage's library.

For every style, on held-out faces that no training ever saw (the encoder's held-out split), the
stylized outputs of the PyTorch stylizer and of its float16 TFLite model are scored against the
unstylized baseline (the same faces through the encoder and the *base* student: the
reconstructions the stylizer starts from):

* **style distance** to the style images: the Gram distance on the frozen discriminator's
  features (the style loss's network; VGG19 when chosen and available), and the sliced
  Wasserstein distance between 7x7 patch sets (weight-free, no network at all). Lower is closer
  to the style; a stylizer must beat the baseline.
* **content**: the encoder's W+ distance between an input face and its output on the layers the
  fine-tune did not mix (the style inputs outside ``swap_layers``: where the face's identity and
  pose live), relative to the distance between two different held-out faces. 0: the output
  encodes to the input's code; 1: as far as another person. Chosen over a pixel score because a
  style changes every pixel by design; the encoder reads the structure the generator draws.
* **latency**: each float16 stylizer on LiteRT, batch 1, with the share of the sgemm peak.

The picture: one style image per style along the top, held-out faces down the left, the
stylized faces in the grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts.base import read_artifact
from pipeline.artifacts.stylizer import (
    StylizerCard,
    StylizersEvaluation,
    stylizer_card_file,
    stylizer_model_file,
)
from pipeline.config import PositiveInt, StageConfig
from pipeline.data.dataset import FaceDataset, heldout_images
from pipeline.errors import DataError
from pipeline.images import make_grid, to_pixels
from pipeline.io import sha256_file
from pipeline.metrics import latency, swd
from pipeline.models.complexity import count_flops
from pipeline.models.encoder import Encoder, load_encoder_and_generator
from pipeline.models.stylizer import (
    FeatureNetworkName,
    Stylizer,
    feature_network,
    load_stylized,
    stylized_meta,
    stylized_mismatch,
)
from pipeline.runtimes import run_tflite
from pipeline.stylization import gram_distance

log = logging.getLogger(__name__)

PATCHES = 64  # 7x7 patches per output image for the SWD (the style set is sampled to match)


class EvaluateStylizersConfig(StageConfig):
    """The ``evaluate_stylizers`` section of params.yaml."""

    faces: PositiveInt                    # held-out faces scored per style
    feature_network: FeatureNetworkName   # the Gram distance's network
    seed: int
    threads: PositiveInt
    warmup: PositiveInt
    runs: PositiveInt
    grid_faces: PositiveInt               # rows of held-out faces in the picture


def _patches(images: torch.Tensor, per_image: int, seed: int) -> list[torch.Tensor]:
    """Raw 7x7 patch descriptors of each Laplacian pyramid level, finest first."""
    generator = torch.Generator().manual_seed(seed)
    return [swd.descriptors(level, per_image, generator) for level in
            swd.laplacian_pyramid(images)]


def swd_to_style(outputs: torch.Tensor, style_images: torch.Tensor, seed: int) -> float:
    """Mean SWD (x 1e3, over pyramid levels) between 7x7 patches of ``outputs`` (N images) and
    as many patches of the style images (sampled at random), images in [-1, 1].

    Unlike the generation metric (``pipeline.metrics.swd``), both sets are normalized with the
    *style* set's per-channel mean and deviation: a style is its palette and contrast as much
    as its strokes, and normalizing each set on its own would hide them."""
    count = len(outputs) * PATCHES
    per_style = -(-count // len(style_images))                  # ceil
    pick = torch.randperm(per_style * len(style_images),
                          generator=torch.Generator().manual_seed(seed))[:count]
    generator, distances = torch.Generator().manual_seed(seed), []
    for theirs, ours in zip(_patches(style_images, per_style, seed),
                            _patches(outputs, PATCHES, seed + 1), strict=True):
        theirs = theirs[pick]
        mean = theirs.mean(dim=(0, 2, 3), keepdim=True)
        std = theirs.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        a, b = ((theirs - mean) / std).flatten(1), ((ours - mean) / std).flatten(1)
        dirs = swd.random_directions(a.shape[1], swd.DIRECTIONS, generator)
        distances.append(1e3 * swd.sliced_wasserstein(swd.sorted_projections(a, dirs),
                                                      swd.sorted_projections(b, dirs)))
    return float(np.mean(distances))


@torch.no_grad()
def content_distance(encoder: Encoder, inputs: torch.Tensor, outputs: torch.Tensor,
                     keep: list[int]) -> float:
    """W+ distance on the ``keep`` layers between each input and its output, over the distance
    between different inputs (each against the next one); images in [-1, 1]."""
    w_in, w_out = encoder(inputs)[:, keep], encoder(outputs)[:, keep]
    between = ((w_in - w_in.roll(1, dims=0)) ** 2).sum(dim=(1, 2)).mean()
    return float(((w_out - w_in) ** 2).sum(dim=(1, 2)).mean() / between)


def score_outputs(outputs: torch.Tensor, faces: torch.Tensor, style_images: torch.Tensor,
                  features: torch.nn.Module, encoder: Encoder, keep: list[int],
                  seed: int) -> dict[str, float]:
    """Style distances and content of stylized ``outputs`` (N, 3, R, R) in [-1, 1]."""
    with torch.no_grad():
        gram = gram_distance(features(outputs), features(style_images))
    return {"gram_distance": float(gram.mean()),
            "swd": swd_to_style(outputs, style_images, seed),
            "content_wplus": content_distance(encoder, faces, outputs, keep)}


def stylizer_latency(tflite: Path, stylizer: Stylizer, config: EvaluateStylizersConfig,
                     peak: float) -> dict[str, float]:
    """LiteRT latency of one TFLite stylizer, its GFLOPs and share of the sgemm ``peak``."""
    resolution = stylizer.config.resolution
    image = torch.zeros(1, 3, resolution, resolution)
    flops = count_flops(lambda: stylizer(image))
    return {**latency.litert_timing(tflite, config.threads, config.warmup, config.runs, flops,
                                    peak), "gflops": flops / 1e9}


def check_built_from(stylized_path: Path, tflite_dir: Path) -> None:
    """Refuse a TFLite stylizer exported from another stylized generator than ``stylized_path``
    (its card records the one it was built from)."""
    card_path = stylizer_card_file(tflite_dir, "float16")
    card = read_artifact(card_path, StylizerCard, "export_stylizer")
    recorded, digest = card.built_from["stylized_generator"]["sha256"], sha256_file(stylized_path)
    if recorded != digest:
        raise DataError(f"{card_path} was exported from another stylized generator "
                        f"({recorded[:12]}...) than {stylized_path} ({digest[:12]}...); re-run "
                        "export_stylizer")


def style_images_of(styles_dir: Path) -> torch.Tensor:
    """Every image of a prepared style dataset, (S, 3, R, R) in [-1, 1]."""
    styles = FaceDataset(styles_dir)
    return torch.stack([styles[i] for i in range(len(styles))])


def evaluate_style(style: str, *, encoder: Encoder, base_stylizer: Stylizer, faces: torch.Tensor,
                   encoder_path: Path, student_path: Path, stylized_path: Path,
                   style_images: torch.Tensor, tflite_dir: Path,
                   features: torch.nn.Module, config: EvaluateStylizersConfig,
                   peak: float) -> tuple[dict[str, Any], torch.Tensor]:
    """One style's scores (stylized, float16 TFLite, unstylized baseline) and its PyTorch
    outputs (N, 3, R, R) in [-1, 1]."""
    meta = stylized_meta(stylized_path)
    mismatch = stylized_mismatch(meta, stylized_path, encoder_path, student_path)
    if mismatch:
        raise DataError(f"{mismatch}@{style}")
    stylizer = Stylizer(encoder, load_stylized(stylized_path)).eval()
    check_built_from(stylized_path, tflite_dir)
    keep = [k for k in range(encoder.config.num_ws) if k not in meta["swap_layers"]]
    inputs = (faces + 1) / 2
    tflite = stylizer_model_file(tflite_dir, "float16")
    with torch.no_grad():
        outputs = {"stylized": stylizer(inputs), "unstylized": base_stylizer(inputs)}
    nhwc = run_tflite(tflite, inputs.permute(0, 2, 3, 1).contiguous().numpy(), config.threads)
    outputs["stylized_float16"] = torch.from_numpy(nhwc).permute(0, 3, 1, 2)
    scores = {name: score_outputs(image * 2 - 1, faces, style_images, features, encoder, keep,
                                  config.seed) for name, image in outputs.items()}
    for name in ("gram_distance", "swd"):
        scores[f"{name}_vs_unstylized"] = (scores["stylized"][name]
                                           / scores["unstylized"][name])
    scores.update(style_images=len(style_images), swap_layers=meta["swap_layers"],
                  alpha=meta["alpha"], latency_float16=stylizer_latency(tflite, stylizer, config,
                                                                        peak))
    return scores, outputs["stylized"] * 2 - 1


def blog_picture(faces: torch.Tensor, style_tops: list[torch.Tensor],
                 stylized: list[torch.Tensor], rows: int) -> np.ndarray:
    """uint8 picture: a blank corner then one style image per style on top; each row a held-out
    face then its stylized versions."""
    corner = torch.ones_like(faces[:1])
    top = torch.cat([corner, *[s[:1] for s in style_tops]])
    body = [torch.cat([faces[i:i + 1], *[s[i:i + 1] for s in stylized]])
            for i in range(min(rows, len(faces)))]
    return make_grid(to_pixels(torch.cat([top, *body]).clamp(-1, 1)),
                     columns=1 + len(style_tops))


def evaluate_stylizers(config: EvaluateStylizersConfig, *, styles: list[str],
                       encoder_path: str | Path, student_path: str | Path,
                       discriminator_path: str | Path, dataset_dir: str | Path,
                       stylized_dir: str | Path, styles_dir: str | Path,
                       stylizers_dir: str | Path,
                       vgg19_weights: str | Path | None = None
                       ) -> tuple[StylizersEvaluation, np.ndarray]:
    """Score every style's stylizer (``stylized_dir/<style>.pt``, ``styles_dir/<style>``,
    ``stylizers_dir/<style>``) on held-out faces; returns (metrics, the picture)."""
    torch.set_num_threads(config.threads)
    encoder, base, meta = load_encoder_and_generator(encoder_path, student_path)
    faces = heldout_images(dataset_dir, meta)[:config.faces]
    if len(faces) < 2:
        raise DataError(f"{encoder_path}: {len(faces)} held-out face(s); 2 or more needed")
    features = feature_network(config.feature_network, discriminator_path, vgg19_weights)
    base_stylizer = Stylizer(encoder, base).eval()
    peak = latency.sgemm_peak_gflops(config.threads)
    metrics: dict[str, Any] = {"faces": len(faces), "feature_network": config.feature_network,
                               "sgemm_peak_gflops": peak, "threads": config.threads, "styles": {}}
    tops, stylized = [], []
    for style in styles:
        style_images = style_images_of(Path(styles_dir) / style)
        scores, outputs = evaluate_style(
            style, encoder=encoder, base_stylizer=base_stylizer, faces=faces,
            encoder_path=Path(encoder_path), student_path=Path(student_path),
            stylized_path=Path(stylized_dir) / f"{style}.pt", style_images=style_images,
            tflite_dir=Path(stylizers_dir) / style, features=features, config=config,
            peak=peak)
        metrics["styles"][style] = scores
        tops.append(style_images)
        stylized.append(outputs)
        log.info("%s: Gram distance %.3g (unstylized %.3g), SWD %.1f (unstylized %.1f), content "
                 "%.2f", style, scores["stylized"]["gram_distance"],
                 scores["unstylized"]["gram_distance"], scores["stylized"]["swd"],
                 scores["unstylized"]["swd"], scores["stylized"]["content_wplus"])
    return (StylizersEvaluation.model_validate(metrics),
            blog_picture(faces, tops, stylized, config.grid_faces))
