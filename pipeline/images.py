"""Image conversions and grids shared by every stage that writes pictures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.io import write_bytes


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2,
              pad_value: int = 255) -> np.ndarray:
    """Tile ``images`` into one picture.

    Args:
        images:    uint8 array (N, H, W, 3).
        columns:   images per row; default: as square a grid as possible.
        padding:   pixels between and around the tiles.
        pad_value: grey level of the padding.

    Returns:
        uint8 array (rows*(H+p)+p, columns*(W+p)+p, 3).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    n, h, w, _ = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, 3),
                   pad_value, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y:y + h, x:x + w] = image
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) array. Deterministic for equal arrays."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write a uint8 (H, W, 3) array as PNG, atomically."""
    write_bytes(path, encode_png(image))


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Float images (N, 3, H, W) in [-1, 1] to uint8 (N, 3, H, W), as saved to PNG and as an app
    displays them: ``clip(round((x + 1) * 127.5), 0, 255)``."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """Float images (N, 3, H, W) in [-1, 1] to a uint8 NumPy array (N, H, W, 3) for grids and
    PNG files: :func:`quantize`, channels last."""
    return quantize(images.detach().cpu()).permute(0, 2, 3, 1).numpy()
