"""Your own images as they come: any folder, any aspect ratio, tiles, an ignore mask, streamed in batches.

The command line ``mvtec-inspect`` (:mod:`mvtec_tutorial.inspect_cli`) and notebook 10 are built
from these functions. A detector of :mod:`mvtec_tutorial.models` sees square images of one size;
:class:`Geometry` says how a file of any size becomes one (pad, crop or stretch) and whether the
detector works on tiles of it. :func:`fit_folder` fits a detector on a folder of normal images and
chooses the decision threshold on held-out normal ones (:class:`Inspection`, saved with the
detector); :func:`score_images` then scores any number of files a batch at a time, so memory does
not grow with the number of images.

Conventions: an image is flagged when a connected region (8-connected) of its map above the
threshold has at least ``min_defect_area`` pixels (1 for the rules on image scores); the image score
is the maximum of its map over the pixels that count (padding and the ignore mask excluded), so
"score above the threshold" and "a region of 1 pixel" are the same decision.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mvtec_tutorial import data, metrics, thresholds

#: How an image of another shape becomes a square: ``pad`` keeps all of it (black borders, which
#: do not count), ``crop`` keeps the centre square, ``stretch`` resizes and distorts (the old way).
FITS = ("pad", "crop", "stretch")
#: Sub-folder names (any case) whose images are good when labels come from folders; any other name is defective.
GOOD_FOLDERS = ("good", "ok", "normal", "pass")
#: Threshold rules on held-out normal images (:func:`choose_threshold`).
RULES = ("min-defect-area", "false-reject", "k-sigma")


@dataclass(frozen=True)
class Geometry:
    """How every image file becomes what the detector sees.

    Parameters
    ----------
    image_size : int
        Side in pixels of the square every image becomes.
    fit : {"pad", "crop", "stretch"}
        See :data:`FITS`.
    tile : int, optional
        Side of the square tiles the detector fits and predicts on; must divide ``image_size``.
        ``image_size=1024, tile=256`` scores 16 tiles per image at four times the detail of 256 px.
    """

    image_size: int = 256
    fit: str = "pad"
    tile: int | None = None

    def __post_init__(self) -> None:
        metrics.check_scalar(self.image_size, "image_size", low=1, integer=True, hint="e.g. 256")
        if self.fit not in FITS:
            raise ValueError(f"unknown fit {self.fit!r}; use one of {', '.join(FITS)}")
        if self.tile is not None:
            metrics.check_scalar(self.tile, "tile", low=1, high=self.image_size, integer=True,
                                 hint="a divisor of image_size, e.g. 256 for image_size 1024")
            if self.image_size % self.tile:
                raise ValueError(f"tile {self.tile} does not divide image_size {self.image_size}; "
                                 f"use e.g. image_size {self.image_size // self.tile * self.tile or self.tile}")


def find_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from folders (searched recursively, hidden files left out) and single files, sorted.

    Raises
    ------
    FileNotFoundError
        Naming an input that does not exist, or a folder without any image file.
    """
    paths: list[Path] = []
    for item in (Path(entry).expanduser() for entry in inputs):
        if item.is_file():
            paths.append(item)
        elif item.is_dir():
            found = sorted((p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in data.FOLDER_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(item).parts)),
                           key=lambda p: p.relative_to(item).as_posix())
            if not found:
                raise FileNotFoundError(f"no image file under {item} (looked for {', '.join(data.FOLDER_SUFFIXES)} "
                                        "in any case, hidden files left out); check the folder")
            paths += found
        else:
            raise FileNotFoundError(f"{item} does not exist; pass image files or folders that hold them")
    if not paths:
        raise FileNotFoundError("no images given; pass image files or folders that hold them")
    return paths


def _place(image: Image.Image, geometry: Geometry, resample: int) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The image on the square canvas, and the box (left, top, right, bottom) its pixels cover."""
    side, (width, height) = geometry.image_size, image.size
    if geometry.fit == "stretch":
        return image.resize((side, side), resample), (0, 0, side, side)
    scale = side / (max if geometry.fit == "pad" else min)(width, height)
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image.resize((new_width, new_height), resample)
    left, top = (side - new_width) // 2, (side - new_height) // 2
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(resized, (left, top))  # crop: a negative offset cuts the overhang on both sides
    return canvas, (max(left, 0), max(top, 0), min(left + new_width, side), min(top + new_height, side))


def load_image(path: str | Path, geometry: Geometry, *, size: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Read one file as the detector sees it.

    Parameters
    ----------
    path : str or Path
    geometry : Geometry
    size : (int, int), optional, keyword-only
        ``(width, height)`` the file must have (that of the ignore mask).

    Returns
    -------
    image : ndarray of shape (3, S, S), float32 in [0, 1]
    inside : ndarray of shape (S, S), bool
        False on padding (``fit="pad"``), which never counts towards the score.

    Raises
    ------
    OSError
        Naming the file, if it cannot be read.
    ValueError
        If the file's size is not ``size``.
    """
    image = data.read_image(path)
    if size is not None and image.size != tuple(size):
        raise ValueError(f"{path} is {image.size[0]} x {image.size[1]} px but the ignore mask is {size[0]} x {size[1]} "
                         "px; an ignore mask must have the images' size: resize the image or fit without the mask")
    placed, (left, top, right, bottom) = _place(image, geometry, Image.BILINEAR)
    inside = np.zeros((geometry.image_size,) * 2, dtype=bool)
    inside[top:bottom, left:right] = True
    return np.asarray(placed, dtype=np.float32).transpose(2, 0, 1) / 255.0, inside


def load_ignore_mask(path: str | Path) -> np.ndarray:
    """An ignore mask file: non-black where the map is ignored (a label, a fixture), at the images' size.

    Returns
    -------
    ndarray of shape (H, W), bool
        True where the map is ignored, at the file's size (:func:`batches` places it as the images).

    Raises
    ------
    ValueError
        If the mask ignores every pixel.
    """
    ignored = data.read_mask(path, refuse_inverted=False)  # ignoring a frame covers the border
    if ignored.all():
        raise ValueError(f"ignore mask {path} ignores every pixel; paint black what should be inspected")
    return ignored


def folder_labels(paths: Sequence[Path], folder: str | Path) -> np.ndarray:
    """OK / NG labels from sub-folder names: 0 under a :data:`GOOD_FOLDERS` folder, else 1.

    The label of ``<folder>/<first>/.../<name>`` comes from ``<first>`` alone (any case):
    ``good/``, ``ok/``, ``normal/`` or ``pass/`` hold good images, any other sub-folder defective ones.

    Returns
    -------
    ndarray of shape (N,), int64
        1 = defective.

    Raises
    ------
    ValueError
        Naming an image that lies directly in ``folder`` (it has no label) or outside it.
    """
    folder = Path(folder).expanduser()
    labels = []
    for path in paths:
        parts = path.relative_to(folder).parts if path.is_relative_to(folder) else ()
        if len(parts) < 2:
            raise ValueError(f"{path} is not in a sub-folder of {folder}, so it has no label; move it into "
                             f"{'/'.join(GOOD_FOLDERS[:2])}/ (good) or a folder named after the defect")
        labels.append(int(parts[0].lower() not in GOOD_FOLDERS))
    return np.array(labels, dtype=np.int64)


def _tiles(images: torch.Tensor, tile: int) -> torch.Tensor:
    """(B, C, S, S) -> (B * k * k, C, T, T), row by row, k = S / T."""
    b, c, side, _ = images.shape
    k = side // tile
    return images.reshape(b, c, k, tile, k, tile).permute(0, 2, 4, 1, 3, 5).reshape(b * k * k, c, tile, tile)


def _untile(maps: np.ndarray, side: int) -> np.ndarray:
    """(B * k * k, T, T) -> (B, S, S), the inverse of :func:`_tiles`."""
    tile = maps.shape[-1]
    k = side // tile
    return maps.reshape(-1, k, k, tile, tile).transpose(0, 1, 3, 2, 4).reshape(-1, side, side)


def predict(detector: Any, images: torch.Tensor, counted: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Maps and scores of images placed by :func:`load_image`, tiled if ``geometry`` says so.

    Parameters
    ----------
    detector : fitted AnomalyDetector
    images : torch.Tensor of shape (B, 3, S, S), float32 in [0, 1]
    counted : ndarray of shape (B, S, S), bool
        Pixels that count; the others (padding, ignore mask) get the lowest counted value of their map.
    geometry : Geometry

    Returns
    -------
    maps : ndarray of shape (B, S, S), float32
    scores : ndarray of shape (B,), float32
        Maximum of each map over the counted pixels.
    """
    if geometry.tile:
        maps = _untile(detector.predict(_tiles(images, geometry.tile))[0], geometry.image_size)
    else:
        maps = detector.predict(images)[0]
    floors = np.where(counted, maps, np.inf).min(axis=(1, 2))
    maps = np.where(counted, maps, floors[:, None, None]).astype(np.float32)
    return maps, maps.max(axis=(1, 2))


def batches(paths: Sequence[Path], geometry: Geometry, *, batch_size: int, ignored: np.ndarray | None = None,
            progress: bool = True, desc: str = "scoring") -> Iterator[tuple[list[Path], torch.Tensor, np.ndarray]]:
    """Read ``paths`` a batch at a time: ``(paths, images (B, 3, S, S), counted (B, S, S))``.

    ``ignored`` is :func:`load_ignore_mask`'s mask at the images' size; every image must have that size.
    """
    metrics.check_scalar(batch_size, "batch_size", low=1, integer=True, hint="e.g. 16")
    size = None if ignored is None else (ignored.shape[1], ignored.shape[0])
    if ignored is not None:  # placed once: every image has the mask's size
        ignored = np.asarray(_place(Image.fromarray(ignored), geometry, Image.NEAREST)[0], dtype=bool)
        if ignored.all():
            raise ValueError(f"the ignore mask covers all of the image as the detector sees it ({geometry.image_size} px, {geometry.fit}); "
                             "paint black what should be inspected or use --fit pad")
    with tqdm(total=len(paths), desc=desc, unit="image", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start:start + batch_size])
            loaded = [load_image(path, geometry, size=size) for path in chunk]
            counted = np.stack([inside for _, inside in loaded])
            if ignored is not None:
                counted &= ~ignored
            yield chunk, torch.from_numpy(np.stack([image for image, _ in loaded])), counted
            bar.update(len(chunk))


@dataclass
class Inspection:
    """How a detector's maps become decisions: saved with the detector (``detector.save(path, **asdict(...))``).

    Attributes
    ----------
    rule : str
        One of :data:`RULES`; ``rule_text`` says in words how the threshold was chosen.
    threshold : float
        A pixel is above it when its map value is strictly greater.
    min_defect_area : int
        An image is flagged when a region above the threshold has at least this many pixels.
    image_size, fit, tile
        The :class:`Geometry`.
    ignored : ndarray of shape (H, W), bool, or None
        The ignore mask at the images' file size (:func:`load_ignore_mask`).
    n_validation, n_rejected, false_reject_bound, confidence
        Held-out normal images, how many of them the rule flags, and the one-sided bound
        (:func:`mvtec_tutorial.thresholds.false_reject_bound`) on the false-reject rate.
    validation_scores : ndarray of shape (n_validation,), float32
    map_low : float
        The 1st percentile of the validation maps, the bottom of the report's colour scale.
    """

    rule: str
    rule_text: str
    threshold: float
    min_defect_area: int
    image_size: int
    fit: str
    tile: int | None
    ignored: np.ndarray | None
    n_validation: int
    n_rejected: int
    false_reject_bound: float
    confidence: float
    validation_scores: np.ndarray
    map_low: float

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.image_size, self.fit, self.tile)

    @classmethod
    def of(cls, detector: Any) -> "Inspection":
        """The inspection saved with a loaded detector, or a ValueError saying how to make one."""
        saved = getattr(detector, "metadata_", {}) or {}
        missing = [name for name in cls.__dataclass_fields__ if name not in saved]
        if missing:
            raise ValueError(f"the detector file holds no inspection settings (missing {', '.join(missing[:3])}); "
                             "fit it with `mvtec-inspect fit` or own_images.fit_folder and save it with them")
        return cls(**{name: saved[name] for name in cls.__dataclass_fields__})

    def decide(self, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(largest region in pixels (N,), flagged (N,) bool)`` for maps of :func:`predict`."""
        largest = metrics.largest_component_areas(maps, self.threshold)
        return largest, largest >= self.min_defect_area


def choose_threshold(maps: np.ndarray, scores: np.ndarray, rule: str, *, target_rate: float = 0.01,
                     confidence: float = thresholds.DEFAULT_CONFIDENCE, k: float = 3.0,
                     relative_min_defect_area: float = thresholds.DEFAULT_RELATIVE_MIN_DEFECT_AREA
                     ) -> tuple[float, int, str, thresholds.FalseRejectThreshold]:
    """Threshold, minimum region area, a sentence and the false-reject bound of a rule on validation maps.

    ``min-defect-area``: the paper's rule (regions of ``relative_min_defect_area`` of the image);
    ``false-reject``: the image-score threshold with validation false-reject rate at most
    ``target_rate``; ``k-sigma``: mean + ``k`` standard deviations of the image scores.
    Every rule's bound counts the validation images it flags (:func:`thresholds.false_reject_bound`).
    """
    if rule == "min-defect-area":
        area = thresholds.min_defect_area_pixels(maps.shape[1:], relative_area=relative_min_defect_area)
        statistic = thresholds.per_image_region_thresholds(maps, area)
        threshold = float(statistic.max())
        text = (f"minimum defect area: the lowest threshold at which no held-out normal map has a region of "
                f"{area} px ({relative_min_defect_area:.2%} of the image) above it")
    elif rule == "false-reject":
        area, statistic = 1, scores
        threshold = thresholds.false_reject_threshold(scores, target_rate=target_rate).threshold
        text = f"false-reject rate: the lowest image-score threshold that rejects at most {target_rate:.1%} of held-out normal images"
    elif rule == "k-sigma":
        area, statistic = 1, scores
        threshold = thresholds.k_sigma_threshold(scores, k=k)
        text = f"k sigma: mean + {k:g} standard deviations of the held-out normal images' scores"
    else:
        raise ValueError(f"unknown rule {rule!r}; use one of {', '.join(RULES)}")
    n_rejected = int((np.asarray(statistic) > threshold).sum())
    bound = thresholds.false_reject_bound(len(scores), min(n_rejected, len(scores) - 1), confidence=confidence)
    return threshold, area, text, thresholds.FalseRejectThreshold(
        threshold, len(scores), n_rejected, n_rejected / len(scores), bound, confidence, np.arange(len(scores)) / len(scores))


def fit_folder(detector: Any, paths: Sequence[Path], geometry: Geometry, *, rule: str = "min-defect-area",
               ignored: np.ndarray | None = None, validation_fraction: float = 0.2, seed: int = 0,
               batch_size: int = 16, progress: bool = True, **rule_options: Any) -> tuple[Any, Inspection]:
    """Fit ``detector`` on normal images and choose its threshold on a held-out part of them.

    Parameters
    ----------
    detector : unfitted AnomalyDetector
    paths : sequence of Path
        Normal images only (:func:`find_images`).
    geometry : Geometry
    rule : str, default="min-defect-area", keyword-only
        One of :data:`RULES`; ``rule_options`` go to :func:`choose_threshold`.
    ignored : ndarray of shape (H, W), bool, optional
        :func:`load_ignore_mask`'s mask; every image must then have its size.
    validation_fraction, seed : keyword-only
        The held-out share, drawn with :func:`mvtec_tutorial.data.train_validation_split`.

    Returns
    -------
    detector, Inspection
        The fitted detector (all training images are in memory while it fits) and its decision rule.
    """
    train, validation = data.train_validation_split(list(paths), validation_fraction=validation_fraction, seed=seed)
    train_paths, validation_paths = [paths[i] for i in train.indices], [paths[i] for i in validation.indices]
    size = None if ignored is None else (ignored.shape[1], ignored.shape[0])
    images = torch.from_numpy(np.stack([load_image(path, geometry, size=size)[0] for path in
                                        tqdm(train_paths, desc="reading normal images", disable=not progress)]))
    detector.fit(_tiles(images, geometry.tile) if geometry.tile else images, progress=progress)
    del images
    results = [predict(detector, batch, counted, geometry) for _, batch, counted in
               batches(validation_paths, geometry, batch_size=batch_size, ignored=ignored, progress=progress,
                       desc="scoring held-out normal images")]
    maps, scores = np.concatenate([m for m, _ in results]), np.concatenate([s for _, s in results])
    threshold, area, text, bound = choose_threshold(maps, scores, rule, **rule_options)
    return detector, Inspection(rule=rule, rule_text=text, threshold=threshold, min_defect_area=area,
                                image_size=geometry.image_size, fit=geometry.fit, tile=geometry.tile,
                                ignored=ignored, n_validation=len(scores), n_rejected=bound.n_rejected,
                                false_reject_bound=bound.upper_bound, confidence=bound.confidence,
                                validation_scores=scores, map_low=float(np.percentile(maps, 1)))


@dataclass
class Scored:
    """One batch of scored images: files, images, maps, scores, largest regions (px) and decisions."""

    paths: list[Path]
    images: np.ndarray
    maps: np.ndarray
    scores: np.ndarray
    largest_regions: np.ndarray
    flagged: np.ndarray


def score_images(detector: Any, paths: Sequence[Path], inspection: Inspection, *, batch_size: int = 16,
                 progress: bool = True) -> Iterator[Scored]:
    """Score files with a fitted detector a batch at a time; memory stays at one batch.

    Examples
    --------
    >>> from mvtec_tutorial import models
    >>> for i, shade in enumerate([0.5] * 6 + [0.9]):
    ...     Image.new("RGB", (48, 32), (int(255 * shade),) * 3).save(tmp_path / f"{i}.png")
    >>> paths = find_images([tmp_path])
    >>> detector, inspection = fit_folder(models.MeanImage(), paths[:6], Geometry(32), progress=False)
    >>> [bool(flag) for batch in score_images(detector, paths[5:], inspection, progress=False) for flag in batch.flagged]
    [False, True]
    """
    geometry = inspection.geometry
    for chunk, images, counted in batches(paths, geometry, batch_size=batch_size, ignored=inspection.ignored,
                                          progress=progress):
        maps, scores = predict(detector, images, counted, geometry)
        largest, flagged = inspection.decide(maps)
        yield Scored(chunk, images.numpy(), maps, scores, largest, flagged)
