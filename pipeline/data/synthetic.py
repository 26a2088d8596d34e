"""Procedural synthetic faces: the embedded default dataset (offline, no download).

Each face is drawn from a few dozen random attributes: face shape (width, height, squareness, chin),
skin tone, hair style (bald, short, fringe, bob, long, bun) and colour, ears, eyes (size, spacing,
openness, iris colour), brows (thickness, tilt, raise), nose, mouth and expression (smile, open
mouth), optional beard, blush and glasses, head pose (roll, shift, scale), background and lighting.
Faces are aligned roughly like FFHQ (eyes at a fixed height, face centred), so a GAN sees the same
kind of structure it would on real aligned faces and its progress is visible by eye.

Rendering is pure NumPy: every shape is an anti-aliased mask evaluated on a supersampled pixel grid
(``SUPERSAMPLE`` x the target resolution, with an analytic half-pixel edge ramp on top) and the
picture is box-filtered down at the end. Pose is applied by transforming the grid, not the picture,
so nothing is resampled twice. Image ``i`` of seed ``s`` depends only on ``(s, i)``: the dataset is
the same byte for byte whatever the number of workers or the order of generation.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from pipeline.seeding import numpy_rng

SUPERSAMPLE = 3

SKIN_LIGHT = np.array([250, 222, 198], dtype=np.float32)
SKIN_DARK = np.array([86, 54, 36], dtype=np.float32)
HAIR_COLOURS = np.array([
    [25, 20, 20],      # black
    [62, 40, 28],      # dark brown
    [118, 78, 46],     # brown
    [196, 160, 98],    # dark blonde
    [232, 204, 140],   # blonde
    [150, 62, 32],     # red
    [168, 168, 172],   # grey
    [236, 236, 236],   # white
], dtype=np.float32)
HAIR_WEIGHTS = np.array([0.24, 0.22, 0.16, 0.1, 0.08, 0.08, 0.08, 0.04])
IRIS_COLOURS = np.array([
    [70, 42, 24], [110, 70, 36], [64, 110, 160], [80, 120, 80], [110, 110, 120], [30, 22, 18],
], dtype=np.float32)
HAIR_STYLES = ("bald", "short", "fringe", "bob", "long", "bun")
HAIR_STYLE_WEIGHTS = np.array([0.07, 0.25, 0.15, 0.18, 0.25, 0.10])


class _Canvas:
    """A supersampled RGB canvas with the pixel grid in image units (0..1) and in face units.

    Face units are image units relative to the face centre, after undoing the head pose: a shape
    drawn in face units rotates, shifts and scales with the head.
    """

    def __init__(self, size: int, centre: tuple[float, float], roll: float, scale: float):
        self.size, self.centre, self.roll, self.scale = size, centre, roll, scale
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self._v, self._u = np.meshgrid(coords, coords, indexing="ij")  # (S, S) image units, y down
        du, dv = self._u - centre[0], self._v - centre[1]
        cos, sin = np.cos(roll), np.sin(roll)
        self._x = (cos * du + sin * dv) / scale   # inverse rotation, then inverse scale
        self._y = (-sin * du + cos * dv) / scale
        # Half a supersampled pixel in face units: the width of the anti-aliasing ramp.
        self.aa = 0.5 / (size * scale)
        self._rgb = np.zeros((size, size, 3), dtype=np.float32)
        self.person = np.zeros((size, size), dtype=np.float32)
        self._window = (slice(None), slice(None))

    # The grid and the picture as seen through the current window (the whole canvas by default).
    u = property(lambda self: self._u[self._window])
    v = property(lambda self: self._v[self._window])
    x = property(lambda self: self._x[self._window])
    y = property(lambda self: self._y[self._window])

    @contextlib.contextmanager
    def window(self, cx: float, cy: float, radius: float):
        """Restrict drawing to the pixels within ``radius`` (face units) of face point (cx, cy).

        Small features are evaluated on their own few pixels instead of the whole canvas, which
        makes rendering several times faster. Shapes must fit inside the window.
        """
        cos, sin = np.cos(self.roll), np.sin(self.roll)
        px = self.centre[0] + self.scale * (cos * cx - sin * cy)
        py = self.centre[1] + self.scale * (sin * cx + cos * cy)
        half = self.scale * radius
        lo_x, hi_x = (int(np.clip(np.floor((p) * self.size), 0, self.size))
                      for p in (px - half, px + half + 1 / self.size))
        lo_y, hi_y = (int(np.clip(np.floor((p) * self.size), 0, self.size))
                      for p in (py - half, py + half + 1 / self.size))
        previous, self._window = self._window, (slice(lo_y, hi_y), slice(lo_x, hi_x))
        try:
            yield
        finally:
            self._window = previous

    def edge(self, signed_distance: np.ndarray) -> np.ndarray:
        """Coverage in [0, 1] of a shape given a signed distance (negative inside), anti-aliased."""
        return np.clip(0.5 - signed_distance / (2 * self.aa), 0.0, 1.0)

    def paint(self, mask: np.ndarray, colour, alpha: float = 1.0, person: bool = True) -> None:
        """Blend ``colour`` (RGB, or a field over the window) where ``mask`` covers the window.

        ``person`` marks the covered pixels as part of the person, whom the lighting applies to.
        """
        a = mask * alpha
        rgb = self._rgb[self._window]
        rgb += (np.asarray(colour, dtype=np.float32) - rgb) * a[..., None]
        if person:
            covered = self.person[self._window]
            np.maximum(covered, a, out=covered)

    # Shapes, all in face units. Distances are approximate (scaled implicit functions) but exact
    # enough for a half-pixel anti-aliasing ramp.
    def ellipse(self, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
        dx, dy = self.x - cx, self.y - cy
        if angle:
            cos, sin = np.cos(angle), np.sin(angle)
            dx, dy = cos * dx + sin * dy, -sin * dx + cos * dy
        r = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        return self.edge((r - 1) * min(rx, ry))

    def superellipse(self, cx, cy, rx, ry, power, chin=0.0) -> np.ndarray:
        """A rounded-square-ish outline; ``chin`` narrows the lower half towards a pointed chin."""
        dx, dy = self.x - cx, self.y - cy
        lower = np.clip(dy / ry, 0, 1)
        width = rx * (1 - chin * lower ** 2)
        r = (np.abs(dx / width) ** power + np.abs(dy / ry) ** power) ** (1 / power)
        return self.edge((r - 1) * min(rx, ry))

    def capsule(self, points: np.ndarray, radius) -> np.ndarray:
        """A thick polyline: all points within ``radius`` of the segments through ``points``.

        ``radius`` may be a scalar or one value per point (linearly interpolated along segments).
        """
        radius = np.broadcast_to(np.asarray(radius, dtype=np.float32), (len(points),))
        best = np.full(self.x.shape, np.inf, dtype=np.float32)
        for (x0, y0), (x1, y1), r0, r1 in zip(points[:-1], points[1:], radius[:-1], radius[1:]):
            sx, sy = x1 - x0, y1 - y0
            t = np.clip(((self.x - x0) * sx + (self.y - y0) * sy) / (sx * sx + sy * sy), 0, 1)
            d = np.hypot(self.x - x0 - t * sx, self.y - y0 - t * sy) - (r0 + t * (r1 - r0))
            best = np.minimum(best, d)
        return self.edge(best)

    def soft_ellipse(self, cx, cy, rx, ry) -> np.ndarray:
        """A smooth blob (1 at the centre, 0 at the rim) for shadows, highlights and blush."""
        r2 = ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2
        return np.clip(1 - r2, 0, 1) ** 2


@dataclass(frozen=True)
class FaceAttributes:
    """The random attributes of one face, in face units (fractions of the image size)."""

    centre: tuple[float, float]
    roll: float
    scale: float
    background: tuple[np.ndarray, np.ndarray, float]
    skin: np.ndarray
    face_rx: float
    face_ry: float
    face_power: float
    chin: float
    hair_style: str
    hair: np.ndarray
    hairline: float
    hair_volume: float
    clothes: np.ndarray
    eye_y: float
    eye_dx: float
    eye_rx: float
    openness: float
    iris: np.ndarray
    gaze: tuple[float, float]
    brow_thickness: float
    brow_raise: float
    brow_tilt: float
    nose_length: float
    nose_width: float
    mouth_y: float
    mouth_width: float
    smile: float
    mouth_open: float
    lip_colour: np.ndarray
    beard: bool
    blush: float
    glasses: bool
    glasses_colour: np.ndarray
    light_angle: float
    light_strength: float
    tint: np.ndarray


def sample_attributes(rng: np.random.Generator) -> FaceAttributes:
    """Draw one face's attributes. Correlations (e.g. smiling narrows the eyes) are built in."""
    u = rng.uniform
    skin_t = u() ** 0.9
    skin = (1 - skin_t) * SKIN_LIGHT + skin_t * SKIN_DARK + rng.normal(0, 6, 3)
    hair_colour = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_WEIGHTS)] + rng.normal(0, 8, 3)
    smile = u(-0.4, 1.0)
    # Backgrounds: muted colours (a grey blended with a random colour), as in portrait photos.
    grey = u(40, 220)
    bg = grey + (rng.uniform(0, 255, 3) - grey) * u(0.1, 0.6)
    return FaceAttributes(
        centre=(0.5 + u(-0.03, 0.03), 0.53 + u(-0.025, 0.025)),
        roll=u(-0.15, 0.15),
        scale=u(1.05, 1.2),
        background=(bg, np.clip(bg + rng.normal(0, 30, 3), 0, 255), u(0, 2 * np.pi)),
        skin=np.clip(skin, 0, 255),
        face_rx=u(0.2, 0.25),
        face_ry=u(0.27, 0.32),
        face_power=u(2.0, 2.8),
        chin=u(0.0, 0.35),
        hair_style=str(rng.choice(HAIR_STYLES, p=HAIR_STYLE_WEIGHTS)),
        hair=np.clip(hair_colour, 0, 255),
        hairline=u(0.14, 0.2),
        hair_volume=u(0.02, 0.05),
        clothes=rng.uniform(20, 235, 3),
        eye_y=u(-0.055, -0.035),
        eye_dx=u(0.085, 0.105),
        eye_rx=u(0.032, 0.042),
        openness=u(0.45, 1.0) * (1 - 0.3 * max(smile, 0)),
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] + rng.normal(0, 6, 3),
        gaze=(u(-0.3, 0.3), u(-0.15, 0.15)),
        brow_thickness=u(0.007, 0.014),
        brow_raise=u(0.0, 0.022),
        brow_tilt=u(-0.25, 0.25),
        nose_length=u(0.065, 0.095),
        nose_width=u(0.022, 0.034),
        mouth_y=u(0.13, 0.16),
        mouth_width=u(0.045, 0.075),
        smile=smile,
        mouth_open=max(0.0, u(-0.02, 0.025)) * (0.5 + max(smile, 0)),
        lip_colour=np.array([u(150, 200), u(60, 100), u(70, 110)], dtype=np.float32),
        beard=bool(u() < 0.12),
        blush=u(0.0, 0.35) if u() < 0.5 else 0.0,
        glasses=bool(u() < 0.15),
        glasses_colour=rng.uniform(10, 120, 3),
        light_angle=u(0, 2 * np.pi),
        light_strength=u(0.0, 0.35),
        tint=1 + rng.normal(0, 0.03, 3),
    )


def render_face(a: FaceAttributes, resolution: int) -> np.ndarray:
    """Render one face as a uint8 (resolution, resolution, 3) array."""
    size = resolution * SUPERSAMPLE
    c = _Canvas(size, a.centre, a.roll, a.scale)
    paint = c.paint

    # Background: a linear gradient between two colours, in image (not face) units.
    colour0, colour1, angle = a.background
    t = np.clip(0.5 + (c.u - 0.5) * np.cos(angle) + (c.v - 0.5) * np.sin(angle), 0, 1)[..., None]
    c._rgb[:] = colour0 * (1 - t) + colour1 * t

    rx, ry = a.face_rx, a.face_ry
    top = -ry
    hair = a.hair
    # One output pixel in face units. The small features (eyes, pupils, lips, brows) are drawn
    # at least about a pixel thick, so that at 32 px they stay visible features instead of
    # sub-pixel smudges; from 128 px up no face reaches these floors.
    pixel = 1 / (resolution * a.scale)

    # Shoulders and neck.
    with c.window(0, ry + 0.33, rx * 2.3 + 0.01):
        paint(c.ellipse(0, ry + 0.33, rx * 2.3, 0.22), a.clothes)
    with c.window(0, ry * 0.5 + 0.1, ry * 0.5 + 0.2):
        paint(c.capsule(np.array([[0, 0.1], [0, ry + 0.12]]), rx * 0.5), a.skin * 0.82)

    # Hair behind the head.
    if a.hair_style == "long":
        paint(c.superellipse(0, 0.06, rx + a.hair_volume + 0.03, ry + 0.17, 2.6), hair)
    elif a.hair_style == "bob":
        paint(c.superellipse(0, -0.02, rx + a.hair_volume + 0.01, ry + 0.03, 3.0), hair)
    elif a.hair_style == "bun":
        with c.window(0, top - 0.05, 0.09):
            paint(c.ellipse(0, top - 0.05, 0.07, 0.06), hair)

    # Ears, then the face, which darkens towards its rim to suggest volume.
    for side in (-1, 1):
        with c.window(side * (rx - 0.005), a.eye_y + 0.03, 0.06):
            paint(c.ellipse(side * (rx - 0.005), a.eye_y + 0.03, 0.028, 0.045), a.skin * 0.92)
    with c.window(0, 0, max(rx, ry) + 0.01):
        face = c.superellipse(0, 0, rx, ry, a.face_power, a.chin)
        rim = np.clip((c.x / rx) ** 2 + (c.y / ry) ** 2, 0, 1)[..., None]
        paint(face, a.skin * (1.04 - 0.2 * rim))
        # Beard: hair colour over the jaw, below the mouth line.
        if a.beard:
            paint(face * np.clip((c.y - (a.mouth_y - 0.05)) / 0.04, 0, 1), hair, 0.85)

    # Blush.
    if a.blush:
        for side in (-1, 1):
            cx, cy = side * (a.eye_dx + 0.01), a.mouth_y - 0.06
            with c.window(cx, cy, 0.06):
                paint(c.soft_ellipse(cx, cy, 0.05, 0.03), np.array([230, 110, 110]), a.blush)

    # Nose: a shadow on the side away from the light, nostrils, a highlight on the tip.
    nose_tip = a.eye_y + a.nose_length + 0.03
    shade_side = 1 if np.cos(a.light_angle) > 0 else -1
    with c.window(0, nose_tip - a.nose_length * 0.45, a.nose_length + 0.03):
        paint(c.soft_ellipse(shade_side * a.nose_width * 0.6, nose_tip - a.nose_length * 0.45,
                             a.nose_width * 0.45, a.nose_length * 0.6), a.skin * 0.72, 0.8)
        for side in (-1, 1):
            paint(c.ellipse(side * a.nose_width * 0.45, nose_tip + 0.004, a.nose_width * 0.28,
                            0.006), a.skin * 0.45)
        paint(c.soft_ellipse(0, nose_tip - 0.008, a.nose_width * 0.35, 0.012), a.skin * 1.1, 0.6)

    # Mouth: the lip line bends up at the corners when smiling; an open mouth shows teeth.
    w, my = a.mouth_width, a.mouth_y
    xs = np.linspace(-w, w, 7)
    line = my - a.smile * 0.022 * (xs / w) ** 2 + a.smile * 0.008
    taper = np.sqrt(1 - (xs / w) ** 2) + 0.15
    with c.window(0, my, w + 0.05):
        if a.mouth_open > 0.002:
            inner = c.capsule(np.stack([xs, line + a.mouth_open * 0.5 * taper], axis=1),
                              a.mouth_open * 0.5 * taper + 0.002)
            paint(inner, np.array([70, 20, 25]))
            paint(inner * (c.y < my + 0.002 + a.smile * 0.008), np.array([235, 232, 225]))
            paint(c.capsule(np.stack([xs, line + a.mouth_open * taper], axis=1), 0.007 * taper),
                  a.lip_colour)
        paint(c.capsule(np.stack([xs, line - 0.002], axis=1), max(0.006, 0.55 * pixel) * taper),
              a.lip_colour * 0.9)

    # Eyes: white, iris and pupil clipped to the eye, a dark lid line on top; then the brows.
    eye_rx = max(a.eye_rx, 1.3 * pixel)
    iris_r, pupil_r = max(eye_rx * 0.45, 0.75 * pixel), max(eye_rx * 0.2, 0.45 * pixel)
    for side in (-1, 1):
        ex = side * a.eye_dx
        with c.window(ex, a.eye_y - 0.03, eye_rx * 1.3 + 0.05):
            eye_ry = max(eye_rx * 0.5 * a.openness, 0.8 * pixel)
            white = c.ellipse(ex, a.eye_y, eye_rx, eye_ry)
            paint(c.ellipse(ex, a.eye_y - eye_ry * 0.25, eye_rx * 1.08, eye_ry * 1.1),
                  a.skin * 0.55)
            paint(white, np.array([240, 238, 232]))
            ix, iy = ex + a.gaze[0] * eye_rx * 0.5, a.eye_y + a.gaze[1] * eye_ry
            paint(white * c.ellipse(ix, iy, iris_r, iris_r), a.iris)
            paint(white * c.ellipse(ix, iy, pupil_r, pupil_r), np.array([12, 10, 10]))
            glint = eye_rx * 0.12
            paint(white * c.ellipse(ix - glint, iy - glint, glint * 0.7, glint * 0.7),
                  np.array([255, 255, 255]), 0.8)
            # The upper lid and lashes: a dark line along the top of the eye.
            lid = np.array([[ex - eye_rx, a.eye_y], [ex, a.eye_y - eye_ry],
                            [ex + eye_rx, a.eye_y]])
            paint(c.capsule(lid, max(0.0035, 0.3 * pixel) * np.array([0.5, 1.0, 0.5])),
                  np.array([35, 25, 25]), 0.9)

            # Brows: a tapered stroke; tilt > 0 lowers the inner end (a frown).
            by = a.eye_y - 0.045 - a.brow_raise
            inner, outer = ex - side * eye_rx, ex + side * eye_rx * 1.2
            brow = np.array([[inner, by + a.brow_tilt * 0.03], [ex, by - 0.008],
                             [outer, by + 0.004]])
            brow_colour = np.minimum(hair, 150) * 0.8 if a.hair_style != "bald" else a.skin * 0.4
            thickness = max(a.brow_thickness, 0.6 * pixel) * np.array([1.0, 0.9, 0.4])
            paint(c.capsule(brow, thickness), brow_colour)

    # Hair in front: a cap over the top of the head down to the hairline, or a fringe.
    if a.hair_style != "bald":
        with c.window(0, 0, max(rx, ry) + a.hair_volume + 0.01):
            cap = c.superellipse(0, 0, rx + a.hair_volume, ry + a.hair_volume, a.face_power)
            hairline = top + a.hairline + 0.04 * (c.x / rx) ** 2
            if a.hair_style == "fringe":
                hairline = hairline + 0.05 + 0.01 * np.sin(c.x * 90)
            cover = np.clip((hairline - c.y) / (2 * c.aa), 0, 1)
            if a.hair_style in ("long", "bob"):
                # Long hair also frames the face: strands down the sides, outside the cheeks.
                sides = np.clip((np.abs(c.x) - rx * 0.88) / (2 * c.aa), 0, 1) * (c.y < 0.12)
                cover = np.maximum(cover, sides)
            # Slightly darker stripes make the hair read as hair.
            strands = 1 - 0.12 * (0.5 + 0.5 * np.sin(c.x * 260 + c.y * 40))[..., None]
            paint(cap * cover, hair * strands)

    # Glasses: two rings and a bridge.
    if a.glasses:
        r = a.eye_rx * 1.5
        with c.window(0, a.eye_y, a.eye_dx + r + 0.02):
            for side in (-1, 1):
                ring = c.ellipse(side * a.eye_dx, a.eye_y, r, r * 0.8)
                ring = ring - c.ellipse(side * a.eye_dx, a.eye_y, r - 0.006, r * 0.8 - 0.006)
                paint(np.clip(ring, 0, 1), a.glasses_colour)
            bridge = np.array([[-a.eye_dx + r, a.eye_y], [a.eye_dx - r, a.eye_y]])
            paint(c.capsule(bridge, 0.003), a.glasses_colour)

    # Lighting on the person: a directional gradient, then a global colour tint.
    light = a.light_strength * (np.cos(a.light_angle) * c.x + np.sin(a.light_angle) * c.y) * 2.5
    rgb = c._rgb * (1 + light * c.person)[..., None] * a.tint

    # Box filter down to the target resolution: exact area averaging, so no aliasing.
    image = rgb.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def synthetic_face(seed: int, index: int, resolution: int) -> np.ndarray:
    """Face ``index`` of the dataset of ``seed``: uint8 (resolution, resolution, 3)."""
    return render_face(sample_attributes(numpy_rng(seed, index)), resolution)
