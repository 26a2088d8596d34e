"""Procedural style exemplars: the embedded default's style images (offline, no download).

A few-shot stylizer needs one or a few style portraits. The default makes its own, from faces of
the synthetic renderer (``pipeline.data.synthetic``, other seeds than the training faces) redrawn
in a style that differs clearly from the training images:

* ``ink``: an ink drawing on paper. Dark outlines where the luminance changes (a difference of
  Gaussians, thresholded softly, as in XDoG), diagonal hatching over the shadows, no colour: navy
  ink on warm paper.
* ``cartoon``: a flat cartoon. Colours smoothed, then posterized to three levels per channel with
  the saturation pushed up (flat regions, no shading), and thick black outlines.

Each exemplar is drawn at four times the target resolution and box-filtered down, so thin lines
stay anti-aliased. Image ``i`` of a style and seed depends only on ``(style, seed, i)``.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pydantic
from scipy import ndimage

from pipeline.config import PositiveInt, StageConfig
from pipeline.data.synthetic import render_face, sample_attributes
from pipeline.seeding import numpy_rng

PROCEDURAL_STYLES = ("ink", "cartoon")
OVERSAMPLE = 4
PAPER = np.array([244, 236, 218], dtype=np.float32)
INK = np.array([28, 30, 58], dtype=np.float32)
STREAM = {"ink": 101, "cartoon": 102}  # keeps each style's faces apart from the other's


class StyleConfig(StageConfig):
    """One entry of the ``styles`` section of params.yaml: where a style's images come from."""

    source: str                       # procedural:<style>, or a folder / .zip of style images
    images: PositiveInt               # exemplars drawn for a procedural source
    seed: Annotated[int, pydantic.Field(ge=0)]  # seed of a procedural source


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of float RGB in [0, 1], (H, W)."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def outlines(lum: np.ndarray, sigma: float, sharpness: float = 60.0) -> np.ndarray:
    """Ink coverage in [0, 1] of the edges of ``lum``: a soft threshold of the difference of
    Gaussians at ``sigma`` and 1.6 ``sigma`` (dark side of each edge only)."""
    dog = ndimage.gaussian_filter(lum, sigma) - ndimage.gaussian_filter(lum, 1.6 * sigma)
    return np.clip(-dog * sharpness, 0, 1)


def ink_drawing(rgb: np.ndarray) -> np.ndarray:
    """float RGB (H, W, 3) in [0, 1] -> the ink drawing of it, float RGB in [0, 255]."""
    size = rgb.shape[0]
    lum = luminance(rgb)
    lines = outlines(lum, sigma=size / 160)
    # Hatching: diagonal strokes, denser (two directions) in the darkest areas.
    v, u = np.mgrid[0:size, 0:size].astype(np.float32) * (2 * np.pi / (size / 40))
    stroke = lambda phase: (np.sin(phase) > 0.6).astype(np.float32)  # noqa: E731 - one formula
    shade = ndimage.gaussian_filter(lum, size / 100)
    hatch = stroke(u + v) * (shade < 0.45) + stroke(u - v) * (shade < 0.28)
    ink = np.clip(lines + 0.7 * hatch, 0, 1)[..., None]
    return PAPER * (1 - ink) + INK * ink


def flat_cartoon(rgb: np.ndarray) -> np.ndarray:
    """float RGB (H, W, 3) in [0, 1] -> the flat cartoon of it, float RGB in [0, 255]."""
    size = rgb.shape[0]
    smooth = ndimage.gaussian_filter(rgb, (size / 120, size / 120, 0))
    # Saturation up (away from the grey of each pixel), then three levels per channel.
    grey = luminance(smooth)[..., None]
    vivid = np.clip(grey + 1.8 * (smooth - grey), 0, 1)
    flat = np.round(vivid * 2) / 2
    lines = outlines(luminance(smooth), sigma=size / 110, sharpness=40.0)
    lines = ndimage.grey_dilation(lines, size=(3, 3))[..., None]
    return flat * 255 * (1 - lines) + 12 * lines


def procedural_style(style: str, seed: int, index: int, resolution: int) -> np.ndarray:
    """Exemplar ``index`` of the procedural ``style`` (one of :data:`PROCEDURAL_STYLES`) for
    ``seed``: uint8 (resolution, resolution, 3)."""
    if style not in PROCEDURAL_STYLES:
        raise ValueError(f"unknown procedural style {style!r}; choose one of {PROCEDURAL_STYLES}")
    size = resolution * OVERSAMPLE
    face = render_face(sample_attributes(numpy_rng(seed, STREAM[style], index)), size)
    rgb = face.astype(np.float32) / 255
    drawn = ink_drawing(rgb) if style == "ink" else flat_cartoon(rgb)
    image = drawn.reshape(resolution, OVERSAMPLE, resolution, OVERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
