"""Reading real face images: listing a folder or a zip, decoding any image mode to RGB, resizing.

Every file is either turned into an RGB uint8 array at the target resolution or rejected with a
reason (one of :data:`SKIP_REASONS`); nothing here raises for a bad file. Problems with the source
as a whole (missing, empty, not a folder or zip, corrupt zip) raise :class:`DataError`.
"""

from __future__ import annotations

import functools
import io
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from pipeline.errors import DataError
from pipeline.io import sha256_bytes

# Why a file was not used. Stable names: they are metric keys.
SKIP_REASONS = (
    "not_an_image",      # not a format PIL recognises (text, archives, ...)
    "unreadable",        # a recognised format that fails to decode (corrupt, truncated)
    "unsupported_mode",  # decodes, but in a mode with no sensible RGB meaning (e.g. float)
    "too_small",         # shorter side below the target resolution: upscaling would blur
    "too_large",         # above PIL's decompression-bomb limit
    "duplicate",         # same bytes as an earlier file
)

# Alpha is composited over white: transparent pixels hold arbitrary colours otherwise.
ALPHA_BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class SourceFile:
    """One candidate file: where to read it from and its name relative to the source."""

    source: Path   # the folder or the zip archive
    name: str      # POSIX path relative to the folder, or the zip member name
    in_zip: bool

    def read(self) -> bytes:
        if self.in_zip:
            return _open_zip(self.source).read(self.name)
        return (self.source / self.name).read_bytes()


@functools.lru_cache(maxsize=4)
def _open_zip(path: Path) -> zipfile.ZipFile:
    # One open archive per process: re-reading the central directory of a 70k-member zip for
    # every member would make ingestion quadratic.
    return zipfile.ZipFile(path)


@dataclass(frozen=True)
class LoadedImage:
    """The outcome for one file: ``image`` set when usable, ``skip_reason`` set otherwise."""

    name: str
    source_sha256: str
    source_bytes: int
    source_width: int = 0
    source_height: int = 0
    source_mode: str = ""
    image: np.ndarray | None = None   # uint8 (R, R, 3)
    cropped: bool = False
    skip_reason: str = ""
    detail: str = ""


def _hidden(parts: tuple[str, ...]) -> bool:
    # Dot files (.DS_Store, .gitignore) and macOS resource forks are not candidates at all.
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def list_source(source: str | Path) -> list[SourceFile]:
    """List the candidate files of a folder (recursively) or a zip archive, sorted by name."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    if source.is_dir():
        files = [SourceFile(source, p.relative_to(source).as_posix(), in_zip=False)
                 for p in source.rglob("*")
                 if p.is_file() and not _hidden(p.relative_to(source).parts)]
    elif zipfile.is_zipfile(source):
        try:
            with zipfile.ZipFile(source) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{source}: cannot read the zip archive: {e}") from None
        files = [SourceFile(source, name, in_zip=True)
                 for name in names if not _hidden(PurePosixPath(name).parts)]
    elif source.suffix.lower() == ".zip":
        raise DataError(f"{source}: not a valid zip archive")
    else:
        raise DataError(f"{source}: expected a folder or a .zip archive of face images")
    if not files:
        raise DataError(f"{source}: contains no files")
    return sorted(files, key=lambda f: f.name)


def to_rgb(image: Image.Image) -> np.ndarray | None:
    """Any PIL image as uint8 RGB (H, W, 3), or None for modes with no sensible RGB meaning."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (PNG opens as I;16 or I): scale 0..65535 down to 0..255.
        grey = np.asarray(image, dtype=np.float64) / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
        image = Image.alpha_composite(background, image)
    if image.mode in ("F",):
        return None
    try:
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, RGBA (composited), RGB
    except ValueError:
        return None
    return np.asarray(image, dtype=np.uint8)


def center_square(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The largest centred square crop, and whether anything was cropped."""
    h, w = image.shape[:2]
    if h == w:
        return image, False
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top:top + side, left:left + side], True


def resize_square(image: np.ndarray, resolution: int) -> np.ndarray:
    """Resize a square uint8 RGB image with an anti-aliasing (Lanczos) filter."""
    if image.shape[0] == resolution:
        return image
    resized = Image.fromarray(image).resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8)


def load_face(file: SourceFile, resolution: int) -> LoadedImage:
    """Read, decode, crop and resize one file; never raises for a bad file."""
    try:
        data = file.read()
    except Exception as e:  # noqa: BLE001 - bad zip member (CRC, encryption, method), permissions
        return LoadedImage(name=file.name, source_sha256="", source_bytes=0,
                           skip_reason="unreadable", detail=f"{type(e).__name__}: {e}")
    info = dict(name=file.name, source_sha256=sha256_bytes(data), source_bytes=len(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                opened.load()  # decode now: truncated files fail here, not later
                mode, (width, height) = opened.mode, opened.size
                oriented = ImageOps.exif_transpose(opened)
                rgb = to_rgb(oriented)
    except Image.UnidentifiedImageError:
        return LoadedImage(**info, skip_reason="not_an_image")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return LoadedImage(**info, skip_reason="too_large", detail=str(e))
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return LoadedImage(**info, skip_reason="unreadable", detail=f"{type(e).__name__}: {e}")
    info.update(source_width=width, source_height=height, source_mode=mode)
    if rgb is None:
        return LoadedImage(**info, skip_reason="unsupported_mode", detail=f"mode {mode}")
    if min(rgb.shape[:2]) < resolution:
        return LoadedImage(**info, skip_reason="too_small",
                           detail=f"{width}x{height} is below {resolution}x{resolution}")
    square, cropped = center_square(rgb)
    return LoadedImage(**info, image=resize_square(square, resolution), cropped=cropped)
