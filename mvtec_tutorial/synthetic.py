"""Synthetic stand-in for MVTec AD: procedurally drawn categories with planted defects.

The course must run without the 4.9 GB download, so :func:`make_dataset` draws four MVTec AD
categories (two textures, two objects) and writes them in the official layout::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect_type>/000.png
    <root>/<category>/ground_truth/<defect_type>/000_mask.png

Every image is drawn in the same order: a clean scene (with random pose or texture phase),
then a defect painted on its support, then lighting (gain, gradient, white balance) and
sensor noise. Lighting and noise act pixel by pixel, so the ground-truth mask is exactly the
set of pixels where the defect differs from the clean image drawn with the same randomness
(see :func:`render_sample` with ``plant_defect=False``).

Randomness: each image has its own generator, derived from ``(seed, category, split,
defect_type, index)`` with :class:`numpy.random.SeedSequence`, so a file never depends on which
other categories or how many other images were built.

:func:`demo_folder` writes some of these images as a folder of "your own images" in no
particular layout, for the notebook on your own images.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from mvtec_tutorial.data import MVTecAD, read_image
from mvtec_tutorial.settings import user_path

#: Category name -> kind, using MVTec AD names so notebooks run unchanged on real data.
SYNTHETIC_CATEGORIES: dict[str, str] = {
    "carpet": "texture",
    "wood": "texture",
    "bottle": "object",
    "pill": "object",
}
#: Defect types per category (a subset of each real category's types, same folder names).
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "carpet": ("color", "hole", "thread"),
    "wood": ("color", "hole", "scratch"),
    "bottle": ("broken_large", "broken_small", "contamination"),
    "pill": ("color", "contamination", "crack"),
}
#: Bump when any drawing changes, so stale builds are refused instead of silently reused.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic.json"
#: Smallest side length at which every defect still covers whole pixels.
MIN_IMAGE_SIZE = 32
#: All lengths below are in pixels of a 256-pixel image and scale with ``image_size``.
REFERENCE_SIZE = 256

Scene = dict  # geometry a renderer hands to the defect painters (object centre, body mask)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)`` in pixels, each of shape ``(size, size)``."""
    axis = np.arange(size) + 0.5
    return np.meshgrid(axis, axis, indexing="ij")


@functools.lru_cache(maxsize=64)
def _upsampler(n_cells: int, size: int) -> np.ndarray:
    """Matrix ``(size, n_cells)`` that cubic-spline upsamples a length-``n_cells`` signal to ``size``."""
    return ndimage.zoom(np.eye(n_cells), (size / n_cells, 1), order=3)


def _noise(rng: np.random.Generator, size: int, cells: tuple[int, int]) -> np.ndarray:
    """Smooth zero-mean noise of shape ``(size, size)``: ``cells`` random values per axis, cubic upsampled."""
    # Separable upsampling as two small matrix products: several times faster than a 2-D zoom.
    # Keep cells small (<= 16): larger products go multi-threaded in BLAS and crawl on a busy CPU.
    return _upsampler(cells[0], size) @ rng.standard_normal(cells) @ _upsampler(cells[1], size).T


def _fine_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance noise of shape ``(size, size)`` with detail down to about ``sigma`` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return field / field.std()


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Blend ``a`` to ``b`` by ``t`` (an ``(H, W)`` weight broadcast over colour)."""
    return a + (b - a) * t[..., None]


# ---------------------------------------------------------------- clean scenes (albedo in [0, 1])

# Brightness of the gaps between threads relative to the thread colour (0.35 x 0.56 = about 0.2).
_CARPET_GAP = 0.35


def _carpet(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Scene]:
    """Plain weave: warp and weft threads going over and under, with per-thread width and tone."""
    s = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    period = 10 * s * rng.uniform(0.97, 1.03)
    # A random phase plus a gentle warp: no two carpet images line up pixel for pixel.
    u = (xx + rng.uniform(20, 120) * s + 1.5 * s * _noise(rng, size, (4, 4))) / period
    v = (yy + rng.uniform(20, 120) * s + 1.5 * s * _noise(rng, size, (4, 4))) / period
    i, fu = np.divmod(u, 1)
    j, fv = np.divmod(v, 1)
    i, j = i.astype(int), j.astype(int)
    n = max(i.max(), j.max()) + 1
    colour = np.array([0.60, 0.56, 0.50]) * rng.uniform(0.97, 1.03, 3)
    layers = []
    for across, along, index in ((fu, fv, i), (fv, fu, j)):  # warp (vertical), then weft
        width = rng.uniform(0.62, 0.9, n)[index]
        tone = 1 + rng.normal(0, 0.07, n)[index]
        d = np.abs(across - 0.5) / (width / 2)
        # Cylinder shading across the thread, arching over the crossing thread along it.
        shade = (0.45 + 0.55 * np.sqrt(np.clip(1 - d**2, 0, 1))) * (0.7 + 0.3 * np.sin(np.pi * along))
        layers.append((d < 1, tone * shade))
    (in_warp, warp), (in_weft, weft) = layers
    warp_on_top = (i + j) % 2 == 0
    # Brightness relative to the thread colour: the top thread, else the shadowed lower one, else the gap.
    brightness = np.where(warp_on_top, np.where(in_warp, warp, np.where(in_weft, 0.6 * weft, _CARPET_GAP)),
                          np.where(in_weft, weft, np.where(in_warp, 0.6 * warp, _CARPET_GAP)))
    brightness *= 1 + 0.12 * _fine_noise(rng, size, 0.7 * s)  # fibres
    albedo = colour * brightness[..., None]
    return np.clip(albedo, 0, 1), {"period": period}


def _wood(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Scene]:
    """Vertical grain: warped sinusoidal growth rings, thin dark late-wood lines and fibre streaks."""
    s = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    warp = 12 * s * _noise(rng, size, (2, 2)) + 3 * s * _noise(rng, size, (4, 3))
    period = 22 * s * rng.uniform(0.85, 1.15)
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * (xx + warp) / period + rng.uniform(0, 2 * np.pi))) ** 3
    # Fibre streaks: smooth along y (3 cells), about a pixel wide along x.
    streaks = ndimage.gaussian_filter1d(_upsampler(3, size) @ rng.standard_normal((3, size)), s, axis=1)
    streaks /= streaks.std()
    grain = np.clip(0.25 + 0.5 * rings + 0.15 * streaks, 0, 1)
    light = np.array([0.78, 0.57, 0.37]) * rng.uniform(0.96, 1.04)
    dark = np.array([0.48, 0.30, 0.16])
    return _lerp(light, dark, grain), {}


#: Radial profile of a bottle seen from above (radius / image size -> RGB), eyeballed from MVTec bottle.
_BOTTLE_RADII = np.array([0.0, 0.19, 0.215, 0.235, 0.30, 0.33, 0.355, 0.39, 0.41, 0.432, 0.447, 0.47, 1.0])
_BOTTLE_RGB = np.array([
    [0.09, 0.08, 0.09], [0.13, 0.12, 0.13], [0.32, 0.30, 0.28], [0.17, 0.16, 0.16],
    [0.22, 0.21, 0.22], [0.50, 0.34, 0.20], [0.20, 0.19, 0.20], [0.27, 0.27, 0.29],
    [0.44, 0.44, 0.46], [0.28, 0.28, 0.30], [0.62, 0.62, 0.62], [0.88, 0.88, 0.87], [0.90, 0.90, 0.89],
])
_BOTTLE_RIM = (0.34, 0.43)  # radius band (/ size) where broken glass appears
_BOTTLE_OUTER = 0.445  # outer edge of the glass (/ size)


def _bottle(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Scene]:
    """Round bottle from above: white background, dark glass rim rings, amber ring, dark opening."""
    s = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    centre = size / 2 + np.clip(rng.normal(0, 1.5 * s, 2), -4 * s, 4 * s)
    dy, dx = yy - centre[0], xx - centre[1]
    r = np.hypot(dy, dx) / (size * rng.uniform(0.99, 1.01))
    albedo = np.stack([np.interp(r, _BOTTLE_RADII, _BOTTLE_RGB[:, c]) for c in range(3)], axis=-1)
    # The light comes from one side: a highlight on the amber ring, its angle varies a little.
    angle = np.arctan2(dy, dx) - rng.normal(np.pi / 4, 0.2)
    highlight = 0.35 * np.cos(angle) * np.exp(-(((r - 0.34) / 0.04) ** 2))
    rings = 0.04 * np.sin(2 * np.pi * r * REFERENCE_SIZE / 3) * (r < _BOTTLE_OUTER)
    return np.clip(albedo * (1 + highlight + rings)[..., None], 0, 1), {"centre": centre, "r": r}


def _pill(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Scene]:
    """White capsule with red-brown speckles on a dark background, slightly shifted and rotated."""
    s = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    cy, cx = size / 2 + np.clip(rng.normal(0, 2 * s, 2), -5 * s, 5 * s)
    theta = rng.normal(0, np.deg2rad(2))
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    half_length, radius = 0.40 * size, 0.17 * size
    axis_distance = np.hypot(np.maximum(np.abs(u) - (half_length - radius), 0), v)
    height = np.sqrt(np.clip(1 - (axis_distance / radius) ** 2, 0, 1))  # rounded-capsule shading
    body = np.array([0.90, 0.88, 0.84]) * (0.70 + 0.30 * height)[..., None]
    dots = np.clip((_fine_noise(rng, size, 1.2 * s) - 2.3) * 1.5, 0, 1)
    body = _lerp(body, np.array([0.62, 0.26, 0.22]), 0.8 * dots)
    background = np.array([0.14, 0.14, 0.13]) * (1 + 0.15 * _noise(rng, size, (6, 6)))[..., None]
    cover = np.clip(radius + 0.5 - axis_distance, 0, 1)  # one-pixel anti-aliased edge
    return _lerp(background, body, cover), {"inside": axis_distance < radius - 4 * s, "centre_x": cx}


# ---------------------------------------------------------------- defect shapes

def _area(rng: np.random.Generator, size: int, fraction: tuple[float, float]) -> float:
    """Defect area in pixels, log-uniform in ``fraction`` of the image area."""
    return size**2 * float(np.exp(rng.uniform(*np.log(fraction))))


def _pick(rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """A random pixel centre ``(y, x)`` inside the boolean ``allowed`` region."""
    flat = np.flatnonzero(allowed)
    return np.array(np.unravel_index(flat[rng.integers(flat.size)], allowed.shape)) + 0.5


def _interior(size: int, margin: float = 0.1) -> np.ndarray:
    """Boolean ``(size, size)`` region away from the border, where texture defects are centred."""
    yy, xx = _grid(size)
    return (np.minimum(yy, xx) > margin * size) & (np.maximum(yy, xx) < (1 - margin) * size)


def _blob(rng: np.random.Generator, size: int, centre: np.ndarray, area: float) -> np.ndarray:
    """Irregular elongated blob of about ``area`` pixels around ``centre``; bool ``(size, size)``."""
    yy, xx = _grid(size)
    tilt, stretch = rng.uniform(0, np.pi), rng.uniform(1, 1.8)
    dy, dx = yy - centre[0], xx - centre[1]
    a = (dx * np.cos(tilt) + dy * np.sin(tilt)) / stretch
    b = (-dx * np.sin(tilt) + dy * np.cos(tilt)) * stretch
    angle = np.arctan2(b, a)
    wobble = sum(rng.uniform(0, 0.3 / k) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    return np.hypot(a, b) < np.sqrt(area / np.pi) * (1 + wobble)


def _stroke(rng: np.random.Generator, size: int, start: np.ndarray, *, length: float, width: float,
            wiggle: float, heading: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A curve from ``start`` whose heading (radians from +x; random if None) random-walks by ``wiggle`` per half pixel.

    Returns the support (bool) and a profile in [0, 1] (1 on the centre line), both ``(size, size)``.
    """
    steps = max(int(length / 0.5), 2)
    heading = (rng.uniform(0, 2 * np.pi) if heading is None else heading) + np.cumsum(rng.normal(0, wiggle, steps))
    points = start + np.cumsum(0.5 * np.stack([np.sin(heading), np.cos(heading)], axis=1), axis=0)
    pixels = np.floor(np.vstack([start, points])).astype(int)
    pixels = pixels[np.all((pixels >= 0) & (pixels < size), axis=1)]
    centre_line = np.zeros((size, size), dtype=bool)
    centre_line[pixels[:, 0], pixels[:, 1]] = True
    distance = ndimage.distance_transform_edt(~centre_line)
    half = max(width / 2, 0.5)
    return distance <= width / 2, np.clip(1 - distance / half, 0, 1)


def _colour_shift(rng: np.random.Generator, albedo: np.ndarray, size: int,
                  magnitude: tuple[float, float]) -> np.ndarray:
    """Stain: add a random colour vector, partly faded by smooth noise (alpha in [0.6, 1])."""
    direction = rng.normal(size=3)
    delta = direction / np.linalg.norm(direction) * rng.uniform(*magnitude)
    alpha = 0.6 + 0.4 * np.clip(0.5 + 0.5 * _noise(rng, size, (6, 6)), 0, 1)
    return np.clip(albedo + alpha[..., None] * delta, 0, 1)


# ---------------------------------------------------------------- defect painters
# Each takes (rng, clean albedo, scene, size) and returns (painted albedo, support mask); only the
# support is copied into the image, so the mask is exact by construction.

Painter = Callable[[np.random.Generator, np.ndarray, Scene, int], tuple[np.ndarray, np.ndarray]]


def _stain(fraction: tuple[float, float], magnitude: tuple[float, float], region: str | None) -> Painter:
    """A colour stain of ``fraction`` of the image area, inside ``scene[region]`` if given."""
    def paint(rng, albedo, scene, size):
        allowed = _interior(size) if region is None else scene[region]
        support = _blob(rng, size, _pick(rng, allowed), _area(rng, size, fraction)) & allowed
        return _colour_shift(rng, albedo, size, magnitude), support
    return paint


def _carpet_hole(rng, albedo, scene, size):
    """Threads torn out: a near-black irregular blob."""
    support = _blob(rng, size, _pick(rng, _interior(size)), _area(rng, size, (0.003, 0.02)))
    # Darker than the gaps between threads (about 0.2), so every pixel of the hole changes.
    return np.clip(0.05 + 0.02 * _noise(rng, size, (16, 16)), 0, 1)[..., None] * np.ones(3), support


def _carpet_thread(rng, albedo, scene, size):
    """A loose thread lying across the weave, much darker or lighter than the carpet."""
    support, profile = _stroke(rng, size, _pick(rng, _interior(size)), length=rng.uniform(0.12, 0.3) * size,
                               width=0.8 * scene["period"], wiggle=0.02)
    tone = np.array([0.60, 0.56, 0.50]) * rng.choice([0.45, 1.5]) * rng.uniform(0.9, 1.1, 3)
    return np.clip(tone * (0.55 + 0.45 * profile)[..., None], 0, 1), support


def _wood_scratch(rng, albedo, scene, size):
    """A long, nearly straight, thin and faint bright line."""
    s = size / REFERENCE_SIZE
    support, profile = _stroke(rng, size, _pick(rng, _interior(size)), length=rng.uniform(0.25, 0.6) * size,
                               width=rng.uniform(2, 4) * s, wiggle=0.005)
    return np.clip(albedo + rng.uniform(0.06, 0.2) * (0.5 + 0.5 * profile)[..., None], 0, 1), support


def _wood_hole(rng, albedo, scene, size):
    """Two to four small round holes, black in the middle with a darkened rim."""
    s = size / REFERENCE_SIZE
    yy, xx = _grid(size)
    depth = np.full((size, size), np.inf)  # distance to the nearest hole centre / its radius
    for _ in range(rng.integers(2, 5)):
        centre, radius = _pick(rng, _interior(size)), max(rng.uniform(4, 9) * s, 1.0)
        depth = np.minimum(depth, np.hypot(yy - centre[0], xx - centre[1]) / radius)
    hole = np.array([0.07, 0.05, 0.04])
    return _lerp(hole, albedo * 0.55, np.clip(depth, 0, 1) ** 2), depth <= 1


def _bottle_broken(fraction: tuple[float, float]) -> Painter:
    """Broken glass on the rim: bright, streaky shards with dark crack lines."""
    def paint(rng, albedo, scene, size):
        rim = (scene["r"] > _BOTTLE_RIM[0]) & (scene["r"] < _BOTTLE_RIM[1])
        support = _blob(rng, size, _pick(rng, rim), _area(rng, size, fraction)) & (scene["r"] < _BOTTLE_OUTER)
        s = size / REFERENCE_SIZE
        shards = 0.72 + 0.12 * _fine_noise(rng, size, 2 * s)
        cracks = np.abs(_fine_noise(rng, size, 6 * s)) < 0.15
        glass = np.where(cracks, 0.25, np.clip(shards, 0, 1))
        return glass[..., None] * np.array([0.95, 1.0, 0.97]), support
    return paint


def _bottle_contamination(rng, albedo, scene, size):
    """Faint light dust with brighter particles in the dark opening."""
    support = _blob(rng, size, _pick(rng, scene["r"] < 0.17), _area(rng, size, (0.003, 0.02)))
    particles = np.clip(_fine_noise(rng, size, 0.8 * size / REFERENCE_SIZE) - 0.5, 0, 1)
    dirt = rng.uniform(0.04, 0.15) * (0.5 + 0.5 * particles)
    return np.clip(albedo + dirt[..., None] * np.array([1.0, 0.9, 0.75]), 0, 1), support


def _pill_crack(rng, albedo, scene, size):
    """A thin, dark, slightly jagged line on the pill."""
    s = size / REFERENCE_SIZE
    start = _pick(rng, scene["inside"])
    # Along the pill's long axis towards its middle, so that the crack stays on the pill.
    support, profile = _stroke(rng, size, start, length=rng.uniform(0.15, 0.35) * size, width=rng.uniform(2, 3.5) * s,
                               wiggle=0.06, heading=0.0 if start[1] < scene["centre_x"] else np.pi)
    return albedo * (1 - rng.uniform(0.4, 0.65) * (0.6 + 0.4 * profile))[..., None], support & scene["inside"]


def _pill_contamination(rng, albedo, scene, size):
    """A brown foreign body on the pill."""
    support = _blob(rng, size, _pick(rng, scene["inside"]), _area(rng, size, (0.002, 0.015))) & scene["inside"]
    dirt = np.array([0.36, 0.26, 0.18]) * (1 + 0.25 * _fine_noise(rng, size, 3 * size / REFERENCE_SIZE))[..., None]
    return _lerp(albedo, np.clip(dirt, 0, 1), np.full((size, size), rng.uniform(0.7, 1.0))), support


_RENDERERS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, Scene]]] = {
    "carpet": _carpet, "wood": _wood, "bottle": _bottle, "pill": _pill,
}
_PAINTERS: dict[str, dict[str, Painter]] = {
    "carpet": {"color": _stain((0.004, 0.04), (0.08, 0.25), None), "hole": _carpet_hole,
               "thread": _carpet_thread},
    "wood": {"color": _stain((0.005, 0.05), (0.06, 0.2), None), "hole": _wood_hole, "scratch": _wood_scratch},
    "bottle": {"broken_large": _bottle_broken((0.02, 0.05)), "broken_small": _bottle_broken((0.003, 0.01)),
               "contamination": _bottle_contamination},
    "pill": {"color": _stain((0.003, 0.03), (0.06, 0.2), "inside"), "contamination": _pill_contamination,
             "crack": _pill_crack},
}


# ---------------------------------------------------------------- one image

def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-pixel RGB gain ``(size, size, 3)``: global gain, a linear gradient and white balance."""
    yy, xx = _grid(size)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = ((xx / size - 0.5) * np.cos(direction) + (yy / size - 0.5) * np.sin(direction)) * rng.uniform(0, 0.15)
    return (rng.uniform(0.92, 1.06) * (1 + ramp))[..., None] * rng.normal(1, 0.006, 3)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_sample(category: str, defect_type: str, split: str) -> None:
    if category not in SYNTHETIC_CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {', '.join(SYNTHETIC_CATEGORIES)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; pass 'train' or 'test'")
    known = ("good",) if split == "train" else ("good", *DEFECT_TYPES[category])
    if defect_type not in known:
        raise ValueError(f"defect_type {defect_type!r} is not available for {category!r} {split} images; "
                         f"known: {', '.join(known)}")


def render_sample(category: str, defect_type: str = "good", *, seed: int = 0, split: str = "test",
                  index: int = 0, image_size: int = 256,
                  plant_defect: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of the synthetic dataset and its ground-truth mask, in memory.

    :func:`make_dataset` writes exactly these arrays.

    Parameters
    ----------
    category : str
        One of :data:`SYNTHETIC_CATEGORIES`.
    defect_type : str, default "good"
        ``"good"`` or one of ``DEFECT_TYPES[category]`` (only ``"good"`` for ``split="train"``).
    seed : int, default 0
        Dataset seed (non-negative).
    split : {"train", "test"}, default "test"
    index : int, default 0
        Image number inside ``<split>/<defect_type>``.
    image_size : int, default 256
        Side length in pixels.
    plant_defect : bool, default True
        If False, return the same image (same scene, lighting and noise) without the defect,
        together with the mask of where the defect would be: the clean reference for that image.

    Returns
    -------
    image : ndarray of shape (image_size, image_size, 3), uint8
        RGB image.
    mask : ndarray of shape (image_size, image_size), bool
        True on the defect's pixels; all False for good images.

    Raises
    ------
    ValueError
        If the category, split or defect type is unknown, or seed, index or image_size is not an
        integer (>= 0, >= 0 and >= :data:`MIN_IMAGE_SIZE`).

    Examples
    --------
    >>> image, mask = render_sample("pill", "crack", image_size=64)
    >>> clean, _ = render_sample("pill", "crack", image_size=64, plant_defect=False)
    >>> bool(np.all(image[~mask] == clean[~mask])), image.shape, bool(mask.any())
    (True, (64, 64, 3), True)
    """
    _check_sample(category, defect_type, split)
    for name, value, minimum in (("seed", seed, 0), ("index", index, 0), ("image_size", image_size, MIN_IMAGE_SIZE)):
        _check_int(name, value, minimum)
    key = (zlib.crc32(category.encode()), zlib.crc32(f"{split}/{defect_type}".encode()), index)
    scene_seed, defect_seed, noise_seed = np.random.SeedSequence(seed, spawn_key=key).spawn(3)
    scene_rng = np.random.default_rng(scene_seed)
    albedo, scene = _RENDERERS[category](scene_rng, image_size)
    lighting = _lighting(scene_rng, image_size)
    noise_sigma = scene_rng.uniform(0.006, 0.014)
    mask = np.zeros((image_size, image_size), dtype=bool)
    if defect_type != "good":
        painted, mask = _PAINTERS[category][defect_type](np.random.default_rng(defect_seed), albedo, scene,
                                                         image_size)
        if plant_defect:
            albedo = np.where(mask[..., None], painted, albedo)
    noise = np.random.default_rng(noise_seed).normal(0, noise_sigma, albedo.shape)
    image = np.clip(albedo * lighting + noise, 0, 1)
    return np.round(image * 255).astype(np.uint8), mask


# ---------------------------------------------------------------- the dataset on disk

def _categories(categories: str | Sequence[str] | None) -> list[str]:
    names = list(SYNTHETIC_CATEGORIES) if categories is None else (
        [categories] if isinstance(categories, str) else list(categories))
    unknown = [name for name in names if name not in SYNTHETIC_CATEGORIES]
    if unknown or not names:
        raise ValueError(f"unknown or no categories {unknown or names}; known: "
                         f"{', '.join(SYNTHETIC_CATEGORIES)}; pass some of these or None for all")
    return list(dict.fromkeys(names))


def _process_is_running(pid: int) -> bool:
    """Whether a process of this id runs (POSIX; elsewhere every process counts as running)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _write_category(root: Path, category: str, manifest: dict, *, overwrite: bool, progress: bool) -> None:
    """Build one category in a scratch folder and move it into place, so no half build remains.

    Each process builds in its own scratch folder (``.<category>.partial-<pid>``), so two processes
    building the same root at once (two notebooks, two workers) never write into each other's
    files; the first to finish puts its build in place and the other discards its identical copy.
    Scratch folders of processes that no longer run (a killed build) are removed.
    """
    for leftover in root.glob(f".{category}.partial*"):
        pid = leftover.name.rpartition("-")[2]
        if not (pid.isdigit() and _process_is_running(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)
    scratch = root / f".{category}.partial-{os.getpid()}"
    try:
        jobs = [("train", "good", i) for i in range(manifest["n_train"])]
        jobs += [("test", "good", i) for i in range(manifest["n_test_good"])]
        jobs += [("test", d, i) for d in DEFECT_TYPES[category] for i in range(manifest["n_test_per_defect"])]
        for split, defect_type, index in tqdm(jobs, desc=f"synthetic {category}", disable=not progress):
            image, mask = render_sample(category, defect_type, seed=manifest["seed"], split=split, index=index,
                                        image_size=manifest["image_size"])
            folder = scratch / split / defect_type
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:03d}.png")
            if defect_type != "good":
                mask_folder = scratch / "ground_truth" / defect_type
                mask_folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(mask_folder / f"{index:03d}_mask.png")
        (scratch / "readme.txt").write_text(
            f"Synthetic stand-in for the MVTec AD category '{category}', generated by mvtec_tutorial "
            f"(mvtec_tutorial.synthetic.make_dataset, seed={manifest['seed']}, "
            f"image_size={manifest['image_size']}, generator version {GENERATOR_VERSION}).\n"
            "Procedurally drawn images, not MVTec AD data. Layout as MVTec AD: train/good, test/<defect>, "
            "ground_truth/<defect>/<id>_mask.png (0 = normal, 255 = defect).\n")
        (scratch / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        target = root / category
        if not overwrite and _read_manifest(target) == manifest:
            return  # another process finished the same build first; ours is removed below
        if target.exists():
            _replace_build(target, scratch, manifest)
        else:
            scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _written_files(manifest: dict) -> set[str]:
    """Paths (relative, POSIX) of every file :func:`make_dataset` wrote for ``manifest``.

    A manifest of a replacement cut short (``{"replacing": [old, new]}``) covers both builds.
    """
    if "replacing" in manifest:
        return set().union(*(_written_files(each) for each in manifest["replacing"]))
    names = {"readme.txt", MANIFEST_NAME}
    names |= {f"train/good/{i:03d}.png" for i in range(manifest["n_train"])}
    names |= {f"test/good/{i:03d}.png" for i in range(manifest["n_test_good"])}
    for defect_type in manifest["defect_types"]:
        for i in range(manifest["n_test_per_defect"]):
            names |= {f"test/{defect_type}/{i:03d}.png", f"ground_truth/{defect_type}/{i:03d}_mask.png"}
    return names


def _files_built_in(folder: Path) -> set[str]:
    """:func:`_written_files` of the build in ``folder``; FileExistsError when its manifest does not say."""
    try:
        return _written_files(_read_manifest(folder))
    except (TypeError, KeyError, AttributeError) as error:
        raise FileExistsError(f"{folder / MANIFEST_NAME} is unreadable, so which files make_dataset wrote there is "
                              "unknown and nothing was deleted; move the folder away (or delete it yourself) or "
                              "pick another root") from error


def _replace_build(target: Path, scratch: Path, manifest: dict) -> None:
    """Swap the files of an earlier build in ``target`` for the new build in ``scratch``.

    Only files the earlier build wrote (its manifest says which) are deleted, and folders only
    when that leaves them empty: a user's notes or extra defect folder inside a category survive.
    The manifest first records both builds, so a replacement cut short is cleaned up by the next.
    """
    old = _read_manifest(target)
    stale = _files_built_in(target) - _written_files(manifest)
    (target / MANIFEST_NAME).write_text(json.dumps({"replacing": [old, manifest]}) + "\n")
    for name in sorted(stale):
        (target / name).unlink(missing_ok=True)
    for name in sorted(_written_files(manifest) - {MANIFEST_NAME}):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (scratch / name).replace(target / name)
    (scratch / MANIFEST_NAME).replace(target / MANIFEST_NAME)
    for folder in sorted({(target / name).parent for name in stale}, key=lambda f: -len(f.parts)):
        for empty in (folder, folder.parent):
            if empty != target and empty.is_dir() and not any(empty.iterdir()):
                empty.rmdir()


def _read_manifest(folder: Path) -> dict | None:
    """The manifest of a category folder make_dataset wrote; None when it has none or it is unreadable."""
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def make_dataset(root: str | Path, categories: str | Sequence[str] | None = None, *, seed: int = 0,
                 image_size: int = 256, n_train: int = 60, n_test_good: int = 10, n_test_per_defect: int = 6,
                 overwrite: bool = False, progress: bool = True) -> Path:
    """Write a small synthetic dataset in the MVTec AD layout and return its root.

    Each category folder gets ``train/good/NNN.png``, ``test/good/NNN.png``,
    ``test/<defect_type>/NNN.png`` and ``ground_truth/<defect_type>/NNN_mask.png`` (uint8,
    0 = normal, 255 = defect, same size as the image), plus ``readme.txt`` and a
    ``synthetic.json`` manifest of the parameters. A category already built with the same
    parameters is reused, so calling this again is cheap.

    Parameters
    ----------
    root : str or Path
        Folder that receives one sub-folder per category (created if missing).
    categories : str or sequence of str, optional
        Names from :data:`SYNTHETIC_CATEGORIES`; None builds all four.
    seed : int, default 0
        Same seed, byte-identical files (on the same NumPy/SciPy/Pillow versions).
    image_size : int, default 256
        Side length of the square RGB images, at least :data:`MIN_IMAGE_SIZE`.
    n_train, n_test_good, n_test_per_defect : int, default 60, 10, 6
        Images in ``train/good``, ``test/good`` and each ``test/<defect_type>``.
    overwrite : bool, default False
        Rebuild categories that exist. Only files this function wrote (as their manifest lists
        them) are replaced or deleted; anything else in a category folder stays.
    progress : bool, default True
        Show a progress bar per category.

    Returns
    -------
    Path
        ``root``, ready for :class:`mvtec_tutorial.data.MVTecAD`.

    Raises
    ------
    ValueError
        On an unknown category or a count/size/seed that is not a big enough integer.
    FileExistsError
        If a category folder exists with other parameters and ``overwrite`` is False, or it
        was not written by this function, or its manifest is unreadable (then nothing in it is
        deleted).

    Notes
    -----
    Defects cover about 0.2-5 % of the image; some are low-contrast (faint stains, shallow
    scratches), so that per-pixel statistics alone do not separate all of them.

    Examples
    --------
    >>> import tempfile
    >>> root = make_dataset(tempfile.mkdtemp(), "pill", image_size=32, n_train=2, n_test_good=1,
    ...                     n_test_per_defect=1, progress=False)
    >>> sorted(p.name for p in (root / "pill" / "test").iterdir())
    ['color', 'contamination', 'crack', 'good']
    """
    names = _categories(categories)
    _check_int("seed", seed, 0)
    _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    for name, value in (("n_train", n_train), ("n_test_good", n_test_good), ("n_test_per_defect", n_test_per_defect)):
        _check_int(name, value, 1)
    root = user_path(root)
    root.mkdir(parents=True, exist_ok=True)
    for category in names:
        manifest = {"generator": "mvtec_tutorial.synthetic", "generator_version": GENERATOR_VERSION,
                    "category": category, "seed": int(seed), "image_size": int(image_size),
                    "n_train": int(n_train), "n_test_good": int(n_test_good),
                    "n_test_per_defect": int(n_test_per_defect), "defect_types": list(DEFECT_TYPES[category])}
        folder = root / category
        if folder.exists():
            if not (folder / MANIFEST_NAME).is_file():
                raise FileExistsError(f"{folder} exists but has no {MANIFEST_NAME}, so it was not written by "
                                      "make_dataset (it may be real MVTec AD data) and will not be touched; "
                                      "pick another root")
            existing = _read_manifest(folder)  # None when unreadable: treated as a different build
            if existing == manifest and not overwrite:
                continue
            if not overwrite:
                raise FileExistsError(f"{folder} was built with other parameters ({existing}) than requested "
                                      f"({manifest}); pass overwrite=True to rebuild it or pick another root")
            _files_built_in(folder)  # refuse an unreadable manifest before building
        _write_category(root, category, manifest, overwrite=overwrite, progress=progress)
    return root


def demo_folder(destination: str | Path, *, category: str = "bottle", image_size: int = 256, n_normal: int = 40,
                n_new_good: int = 10, n_new_per_defect: int = 2, seed: int = 0) -> Path:
    """Write a small folder of "your own images" (not in the MVTec AD layout), drawn synthetically.

    For the notebook on your own images and its test: a stand-in for the folder a reader brings.
    The images come from :func:`make_dataset` (``category``, ``seed``)::

        <destination>/normal/line_a/part_000.png     normal images in two sub-folders, named
        <destination>/normal/line_b/part_001.PNG     .png, .PNG and .bmp in turn
        <destination>/new/image_000.png              images to score: good and defective, shuffled
        <destination>/masks/image_003.png            masks of the defective new images only

    Parameters
    ----------
    destination : str or Path
        Created if missing; must be empty.
    category : str, default="bottle", keyword-only
        One of :data:`SYNTHETIC_CATEGORIES`.
    image_size : int, default=256, keyword-only
    n_normal, n_new_good, n_new_per_defect : int, keyword-only
        Normal images; good new images; defective new images of each of the category's defect types.
    seed : int, default=0, keyword-only
        Seeds the images and the order of the new ones.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    FileExistsError
        If ``destination`` holds files (nothing is overwritten).

    Examples
    --------
    >>> folder = demo_folder(tmp_path / "parts", image_size=64, n_normal=4)
    >>> sorted(p.relative_to(folder / "normal").as_posix() for p in (folder / "normal").rglob("*.*"))
    ['line_a/part_000.png', 'line_a/part_002.bmp', 'line_b/part_001.PNG', 'line_b/part_003.png']
    """
    destination = user_path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty; pass a new or empty folder")
    suffixes = (".png", ".PNG", ".bmp")  # every case and format read_folder accepts, in turn
    with tempfile.TemporaryDirectory() as scratch:
        root = make_dataset(scratch, categories=[category], seed=seed, image_size=image_size, n_train=n_normal,
                            n_test_good=n_new_good, n_test_per_defect=n_new_per_defect, progress=False)
        normal = MVTecAD(root, category, "train", image_size=None).samples
        for index, (path, _, _) in enumerate(normal):
            target = destination / "normal" / ("line_a", "line_b")[index % 2] / f"part_{index:03d}{suffixes[index % 3]}"
            target.parent.mkdir(parents=True, exist_ok=True)
            read_image(path).save(target)
        new = MVTecAD(root, category, "test", image_size=None).samples
        (destination / "new").mkdir()
        (destination / "masks").mkdir()
        for index, position in enumerate(np.random.default_rng(seed).permutation(len(new))):
            path, mask, _ = new[position]
            shutil.copyfile(path, destination / "new" / f"image_{index:03d}.png")
            if mask is not None:
                shutil.copyfile(mask, destination / "masks" / f"image_{index:03d}.png")
    return destination
