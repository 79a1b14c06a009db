"""Evaluation metrics for anomaly maps and image scores, computed as MVTec's evaluation does.

Conventions used throughout:

- ``masks`` ``(N, H, W)`` bool, True on defective pixels; ``maps`` ``(N, H, W)`` real, higher
  means more anomalous; ``labels`` ``(N,)`` int, 1 = defective, 0 = good; ``scores`` ``(N,)``.
- Ground-truth defect *regions* are 8-connected components of a mask, per image
  (:func:`label_regions`), as in the official evaluation code.
- A pixel is called anomalous at threshold ``t`` when its map value is **strictly greater**
  than ``t`` (:func:`binarize`); :mod:`mvtec_tutorial.thresholds` uses the same rule.

Only numpy and scipy are used (and :func:`mvtec_tutorial.checks.check_scalar` for arguments), so every
number can be traced by reading this file.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

from mvtec_tutorial.checks import check_scalar

#: Structuring element for :func:`label_regions`: 8-connectivity within an image, none across
#: images (only the middle plane of the 3x3x3 cube is set). The official code uses
#: ``np.ones((3, 3))`` per image, which is the same thing.
_IN_PLANE_8_CONNECTIVITY = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8_CONNECTIVITY[1] = True

#: Default upper FPR bound for AU-PRO, as in MVTec's evaluation (Bergmann et al., IJCV 2021).
DEFAULT_FPR_LIMIT = 0.3


# ----------------------------------------------------------------------------- validation
def check_maps(maps: np.ndarray, *, name: str = "maps") -> np.ndarray:
    """Return ``maps`` as an array after checking it is a finite, real ``(N, H, W)`` stack.

    Raises
    ------
    ValueError
        Naming ``name``, if the shape, dtype or values are wrong.
    """
    try:
        maps = np.asarray(maps)
    except ValueError as error:  # e.g. a list of maps of different sizes
        raise ValueError(f"{name} must be one array of shape (N, H, W): {error}") from error
    if maps.ndim != 3 or maps.size == 0:
        raise ValueError(f"{name} must have shape (N, H, W) with N, H, W > 0, got shape {maps.shape}; "
                         "stack single maps with np.stack")
    if not (np.issubdtype(maps.dtype, np.floating) or np.issubdtype(maps.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {maps.dtype}")
    if not np.isfinite(maps).all():
        raise ValueError(f"{name} contains NaN or infinite values; fix the method that produced them")
    return maps


def _check_masks(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = check_maps(maps)
    masks = np.asarray(masks)
    if masks.dtype != bool:
        raise ValueError(f"masks must be a boolean array, got dtype {masks.dtype}; "
                         "for 0/255 mask images pass masks > 0")
    if masks.shape != maps.shape:
        raise ValueError(f"masks has shape {masks.shape} but maps has shape {maps.shape}; "
                         "resize the maps to the mask resolution (or the masks to the maps)")
    return masks, maps


def _check_labels(labels: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    labels, values = np.asarray(labels), np.asarray(values)
    if labels.ndim != 1 or values.ndim != 1 or len(labels) != len(values):
        raise ValueError(f"labels and {name} must be 1-D of equal length, got {labels.size} labels but "
                         f"{values.size} {name} (shapes {labels.shape} and {values.shape})")
    if not _is_binary(labels):
        raise ValueError(f"labels must contain only 0 (good) and 1 (defective), got values {np.unique(labels)} "
                         f"(dtype {labels.dtype}); map names to numbers first, e.g. labels == 'defective'")
    return labels.astype(bool), values


def _is_binary(values: np.ndarray) -> bool:
    """Whether ``values`` are booleans or numbers that are all 0 or 1 (never strings such as '1')."""
    return values.dtype == bool or (np.issubdtype(values.dtype, np.number) and bool(np.isin(values, (0, 1)).all()))


def _roc_auc(positive: np.ndarray, values: np.ndarray, what: str) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic (ties count one half)."""
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        missing = "defective" if n_positive == 0 else "good"
        raise ValueError(f"AUROC is undefined: no {missing} {what} (it compares defective with good "
                         f"{what}); evaluate on a set holding both")
    # AUROC = P(score of a random positive > score of a random negative) + P(tie) / 2, which is the
    # rank-sum formula with average ranks for ties (Hanley & McNeil 1982).
    ranks = stats.rankdata(values)
    rank_sum = ranks[positive].sum(dtype=np.float64)
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


# ----------------------------------------------------------------------------- building blocks
def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the 8-connected defect regions of every mask.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
        Ground-truth masks (or any binary maps), True = defective.

    Returns
    -------
    labelled : ndarray of shape (N, H, W), int32
        0 on background, ``1..n_regions`` on regions; numbers are unique across all images and
        regions never cross from one image into another.
    n_regions : int
        Total number of regions over all images.

    Examples
    --------
    >>> masks = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 0, 1], [0, 0, 0], [1, 0, 0]]], bool)
    >>> label_regions(masks)[1]  # a diagonal pair counts once, two apart pixels twice
    3
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got shape {masks.shape}; for one mask pass masks[None]")
    labelled, n_regions = ndimage.label(masks, structure=_IN_PLANE_8_CONNECTIVITY)
    return labelled.astype(np.int32, copy=False), int(n_regions)


def binarize(maps: np.ndarray, threshold: float) -> np.ndarray:
    """Return ``maps > threshold``: the course-wide rule for calling a pixel anomalous.

    Parameters
    ----------
    maps : ndarray of shape (N, H, W)
        Anomaly maps, higher = more anomalous.
    threshold : float
        A pixel whose value equals ``threshold`` is *not* anomalous.

    Returns
    -------
    ndarray of shape (N, H, W), bool

    Raises
    ------
    TypeError, ValueError
        If ``threshold`` is not a real number or is NaN (every pixel would be called good).
    """
    return np.asarray(maps) > check_scalar(threshold, "threshold")


def largest_component_areas(maps: np.ndarray, threshold: float) -> np.ndarray:
    """Area of the largest 8-connected component of ``maps > threshold``, per image.

    Parameters
    ----------
    maps : ndarray of shape (N, H, W), real
    threshold : float

    Returns
    -------
    ndarray of shape (N,), int64
        Pixels in each image's largest anomalous component; 0 where no pixel is above ``threshold``.
    """
    labelled, n_components = label_regions(binarize(check_maps(maps), threshold))
    sizes = np.bincount(labelled.ravel(), minlength=n_components + 1)
    sizes[0] = 0  # background
    return np.array([sizes[image].max() for image in labelled], dtype=np.int64)


def classify(maps: np.ndarray, threshold: float, *, min_defect_area: int = 1) -> np.ndarray:
    """The paper's image decision: defective when a component of ``maps > threshold`` is big enough.

    Parameters
    ----------
    maps : ndarray of shape (N, H, W), real
    threshold : float
    min_defect_area : int, default=1, keyword-only
        Components smaller than this many pixels are ignored, as when the threshold was chosen
        (:func:`mvtec_tutorial.thresholds.min_defect_area_threshold`); 1 means any pixel above.

    Returns
    -------
    ndarray of shape (N,), bool
        True = predicted defective.

    Raises
    ------
    TypeError, ValueError
        If ``threshold`` is NaN or not a number, or ``min_defect_area`` is not an integer in
        [1, H * W] (the same range as the threshold rule; a larger area could never be found).

    Notes
    -----
    With the threshold from the minimum-defect-area rule and the same ``min_defect_area``,
    every normal validation image is classified good by construction, as in the paper.
    """
    maps = check_maps(maps)
    check_scalar(min_defect_area, "min_defect_area", low=1, integer=True,
                 hint="1 calls an image defective when any pixel is above the threshold")
    n_pixels = maps.shape[1] * maps.shape[2]
    if min_defect_area > n_pixels:  # refused, as by thresholds.min_defect_area_threshold: never found otherwise
        raise ValueError(f"min_defect_area={min_defect_area} exceeds the {n_pixels} pixels of one "
                         f"{maps.shape[1]} x {maps.shape[2]} map, so every image would be called good; pass at "
                         "most H * W pixels (thresholds.min_defect_area_pixels converts a fraction of the image)")
    return largest_component_areas(maps, threshold) >= min_defect_area


def image_scores(maps: np.ndarray, top_k_fraction: float | None = None) -> np.ndarray:
    """Image scores from anomaly maps: the maximum of each map, or the mean of its highest pixels.

    The one map-to-score function: every detector's default image score
    (:meth:`mvtec_tutorial.models.base.AnomalyDetector.predict`) and the evaluation's.

    Parameters
    ----------
    maps : ndarray of shape (N, H, W)
    top_k_fraction : float in (0, 1] or None, default=None
        None: the maximum. A fraction f: the mean of the ``max(1, round(f * H * W))`` highest
        pixels, which one hot pixel moves less (computed in the maps' dtype).

    Returns
    -------
    ndarray of shape (N,); higher = more anomalous. The maps' dtype for the maximum, float32 for a fraction.

    Notes
    -----
    The official evaluation scores an image by ``np.max`` of its map. For the paper's
    thresholded decision see :func:`classify`.

    Examples
    --------
    >>> maps = np.array([[[0.0, 1.0], [2.0, 9.0]]])
    >>> image_scores(maps).tolist(), image_scores(maps, 0.5).tolist()
    ([9.0], [5.5])
    """
    maps = check_maps(maps)
    if check_top_k_fraction(top_k_fraction) is None:
        return maps.max(axis=(1, 2))
    flat = maps.reshape(len(maps), -1)
    k = max(1, round(top_k_fraction * flat.shape[1]))
    return np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:].mean(axis=1).astype(np.float32)


def check_top_k_fraction(top_k_fraction: float | None) -> float | None:
    """``top_k_fraction`` itself if it is None or in (0, 1]; a ValueError otherwise.

    Detectors call it when fitting, so a bad value is refused before any work, not at the first score.
    """
    if top_k_fraction is not None and not 0 < top_k_fraction <= 1:
        raise ValueError(f"top_k_fraction must lie in (0, 1] or be None for the maximum, got {top_k_fraction}")
    return top_k_fraction


# ----------------------------------------------------------------------------- threshold-free
def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the image-level ROC curve.

    Parameters
    ----------
    labels : ndarray of shape (N,), int
        1 = defective, 0 = good; both must occur.
    scores : ndarray of shape (N,), float
        Higher = more anomalous, e.g. :func:`image_scores`.

    Returns
    -------
    float in [0, 1]; 0.5 is chance, 1 ranks every defective image above every good one.

    Raises
    ------
    ValueError
        On mismatched lengths, labels outside {0, 1}, non-finite scores, or a missing class.

    Examples
    --------
    >>> image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    positive, scores = _check_labels(labels, scores, "scores")
    if not np.isfinite(scores).all():
        raise ValueError("scores contains NaN or infinite values; fix the method that produced them")
    return _roc_auc(positive, scores, "images")


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Area under the pixel-level ROC curve, all pixels of all images pooled.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    maps : ndarray of shape (N, H, W), real; higher = more anomalous.

    Returns
    -------
    float in [0, 1].

    Notes
    -----
    Computed as the Mann-Whitney statistic from the ranks of all pixels (one sort; ties count
    one half), which equals the trapezoid area under the ROC curve with ties merged.
    Large defects dominate this number because every pixel counts once; :func:`au_pro`
    weighs each defect region equally instead.
    """
    masks, maps = _check_masks(masks, maps)
    return _roc_auc(masks.ravel(), maps.ravel(), "pixels")


def pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-region overlap (PRO) against false positive rate, at every distinct map value.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
        Must contain at least one defect region and one defect-free pixel; good images
        (empty masks) belong in the input, their pixels count as defect-free.
    maps : ndarray of shape (N, H, W), real; higher = more anomalous.

    Returns
    -------
    fprs, pros : ndarray of shape (K + 2,), float64, in [0, 1]
        ``K`` is the number of distinct values in ``maps``. Point ``k`` is the threshold at the
        k-th largest value ``v`` (pixels ``>= v`` positive); ``fprs`` is non-decreasing, and the
        curve starts at (0, 0) and ends at (1, 1).

    Notes
    -----
    A transcription of ``compute_pro(anomaly_maps, ground_truth_maps)`` in ``pro_curve_util.py``
    of MVTec's evaluation scripts (as shipped with MVTec 3D-AD; the PRO of Bergmann et al.,
    IJCV 2021), which uses every distinct score as a threshold. Older copies of the MVTec AD
    script sample ``num_thresholds`` equally spaced positions instead, an approximation.
    The steps:

    - regions: 8-connected components of each mask; the PRO at a threshold is the mean over
      all regions of all images of the fraction of the region's pixels that are positive, so
      each region pixel adds ``1 / region_size / n_regions`` when it becomes positive;
    - FPR: positive defect-free pixels over all defect-free pixels of all images;
    - sort scores descending and take cumulative sums; where several pixels share a score
      only the last point of the run is kept (all of them switch at the same threshold);
    - clip to <= 1 against rounding and put (0, 0) in front and (1, 1) at the end.

    One deliberate difference: the official code stores FPRs as float32 to save memory,
    we keep float64, so values agree to float32 precision (about 1e-7), not bit for bit.
    Memory peaks near 50 bytes per pixel (one sort of all pixels plus float64 running sums):
    about 0.3 GB for 83 maps of 256 x 256, 3.7 GB for 83 maps of 900 x 900.

    Examples
    --------
    >>> masks = np.array([[[True, True, False, False]]])
    >>> fprs, pros = pro_curve(masks, np.array([[[0.9, 0.5, 0.7, 0.1]]]))
    >>> fprs.tolist(), pros.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    """
    masks, maps = _check_masks(masks, maps)
    labelled, n_regions = label_regions(masks)
    if n_regions == 0:
        raise ValueError("AU-PRO is undefined: masks contain no defect region (PRO averages over "
                         "regions); include defective test images")
    region_sizes = np.bincount(labelled.ravel())  # region_sizes[0] counts the defect-free pixels
    n_defect_free = int(region_sizes[0])
    if n_defect_free == 0:
        raise ValueError("AU-PRO is undefined: masks contain no defect-free pixel, so the FPR "
                         "has no denominator; include good images or background")

    scores = maps.ravel()
    order = np.argsort(scores)[::-1]
    sorted_labels = labelled.ravel()[order]
    is_defect_free = sorted_labels == 0
    fprs = np.cumsum(is_defect_free, dtype=np.float64) / n_defect_free
    pro_increments = np.where(is_defect_free, 0.0, 1.0 / region_sizes[sorted_labels])
    pros = np.cumsum(pro_increments) / n_regions

    sorted_scores = scores[order]
    last_of_each_value = np.append(np.diff(sorted_scores) != 0, True)
    fprs = np.minimum(fprs[last_of_each_value], 1.0)
    pros = np.minimum(pros[last_of_each_value], 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def _trapezoid_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid rule on ascending ``x`` up to ``x_max``, interpolating ``y`` linearly at ``x_max``.

    Same behaviour as ``trapezoid(x, y, x_max)`` in the official ``generic_util.py``:
    points with ``x <= x_max`` are integrated in their given order (so equal ``x`` values
    form vertical, zero-area steps), and when ``x_max`` is not itself a sample a last
    trapezoid runs from the last sample below it to ``x_max``, with ``y`` interpolated between
    that sample and the next. ``x`` must start at or below ``x_max`` and end at or above it.
    """
    inside = x <= x_max
    area = float(np.sum(0.5 * (y[inside][1:] + y[inside][:-1]) * np.diff(x[inside])))
    if x_max not in x:
        upper = np.searchsorted(x, x_max, side="right")  # first sample beyond x_max
        x0, x1, y0, y1 = x[upper - 1], x[upper], y[upper - 1], y[upper]
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_at_max) * (x_max - x0)
    return area


def au_pro(masks: np.ndarray, maps: np.ndarray, *, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit``.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    maps : ndarray of shape (N, H, W), real; higher = more anomalous.
    fpr_limit : float in (0, 1], keyword-only
        Integrate PRO over FPR in ``[0, fpr_limit]``; 0.3 is MVTec's standard.

    Returns
    -------
    float in [0, 1]
        The area divided by ``fpr_limit``: 1.0 for a perfect detector, ``fpr_limit / 2`` for
        a constant map (the curve is the diagonal).

    Notes
    -----
    Trapezoid integration of :func:`pro_curve`, cut at ``fpr_limit`` with a linearly
    interpolated last point, then divided by ``fpr_limit``, as in the official
    ``calculate_au_pro`` (``generic_util.trapezoid`` + ``pro_curve_util.compute_pro``,
    MVTec AD evaluation, Bergmann et al., IJCV 2021). Dividing by ``fpr_limit`` rather than by
    the largest FPR reached keeps the value <= 1 (anomalib's older AU-PRO divided by the last
    FPR and could exceed 1).

    Examples
    --------
    >>> masks = np.array([[[True, True, False, False]]])
    >>> au_pro(masks, np.array([[[0.9, 0.5, 0.7, 0.1]]]), fpr_limit=1.0)
    0.75
    """
    check_scalar(fpr_limit, "fpr_limit", low=0, high=1, low_open=True, hint="MVTec's standard is 0.3")
    fprs, pros = pro_curve(masks, maps)
    return float(_trapezoid_area(fprs, pros, fpr_limit) / fpr_limit)


# ----------------------------------------------------------------------------- thresholded
def region_overlap(masks: np.ndarray, maps: np.ndarray, threshold: float) -> float:
    """Relative per-region overlap at one threshold.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    maps : ndarray of shape (N, H, W), real; higher = more anomalous.
    threshold : float
        Pixels with ``map > threshold`` are anomalous (:func:`binarize`).

    Returns
    -------
    float in [0, 1]
        For each 8-connected ground-truth region, the fraction of its pixels called anomalous,
        averaged over all regions of all images (a small defect counts as much as a large one).

    Notes
    -----
    The segmentation score of Bergmann et al. (CVPR 2019), Table 3 (top row per category),
    with the threshold chosen on validation data (:mod:`mvtec_tutorial.thresholds`). False
    positives do not lower it; read it beside the good-image accuracy.
    """
    masks, maps = _check_masks(masks, maps)
    labelled, n_regions = label_regions(masks)
    if n_regions == 0:
        raise ValueError("region overlap is undefined: masks contain no defect region; "
                         "include defective test images")
    region_sizes = np.bincount(labelled.ravel(), minlength=n_regions + 1)
    hits = np.bincount(labelled.ravel(), weights=binarize(maps, threshold).ravel(), minlength=n_regions + 1)
    return float(np.mean(hits[1:] / region_sizes[1:]))


def classification_accuracy(labels: np.ndarray, predictions: np.ndarray) -> tuple[float, float]:
    """Accuracy on good and on defective images separately (the paper's Table 2 pair).

    Parameters
    ----------
    labels : ndarray of shape (N,), int
        1 = defective, 0 = good.
    predictions : ndarray of shape (N,), int or bool
        1/True = predicted defective.

    Returns
    -------
    good_accuracy : float
        Fraction of good images predicted good; ``nan`` when there is no good image.
    defective_accuracy : float
        Fraction of defective images predicted defective; ``nan`` when there is none.
    """
    is_defective, predictions = _check_labels(labels, predictions, "predictions")
    if not _is_binary(predictions):
        seen = np.unique(predictions)
        raise ValueError(f"predictions must be 0/1 or bool (1 = predicted defective), got values {seen[:5]}"
                         f"{' ...' if seen.size > 5 else ''} (dtype {predictions.dtype}); for anomaly scores pass "
                         "scores > threshold, for maps metrics.classify(maps, threshold)")
    predicted_defective = predictions.astype(bool)
    good = float(np.mean(~predicted_defective[~is_defective])) if (~is_defective).any() else float("nan")
    defective = float(np.mean(predicted_defective[is_defective])) if is_defective.any() else float("nan")
    return good, defective


def evaluate(masks: np.ndarray, maps: np.ndarray, labels: np.ndarray, scores: np.ndarray, *,
             threshold: float | None = None, min_defect_area: int = 1,
             fpr_limit: float = DEFAULT_FPR_LIMIT) -> dict[str, float]:
    """All metrics for one category's test set.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    maps : ndarray of shape (N, H, W), real; higher = more anomalous.
    labels : ndarray of shape (N,), int; 1 = defective.
    scores : ndarray of shape (N,), float; higher = more anomalous.
    threshold : float, optional, keyword-only
        Validation threshold; when given, adds the thresholded metrics.
    min_defect_area : int, default=1, keyword-only
        Passed to :func:`classify`: use the area the threshold was chosen with.
    fpr_limit : float, keyword-only
        Passed to :func:`au_pro`.

    Returns
    -------
    dict
        ``image_auroc``, ``pixel_auroc``, ``au_pro``; with ``threshold`` also ``good_accuracy``,
        ``defective_accuracy`` (an image is predicted defective when its binarised map has a
        component of at least ``min_defect_area`` pixels, see :func:`classify`) and ``region_overlap``.

    Raises
    ------
    ValueError
        If an image labelled good has defective pixels in its mask, an image labelled
        defective has an empty mask, or any input is invalid.
    TypeError
        If ``threshold``, ``min_defect_area`` or ``fpr_limit`` is not a number.
    """
    masks, maps = _check_masks(masks, maps)
    is_defective, _ = _check_labels(labels, scores, "scores")
    if len(is_defective) != len(masks):
        raise ValueError(f"got {len(is_defective)} labels but {len(masks)} masks; pass one label per image")
    has_defect = masks.any(axis=(1, 2))
    contradicting = np.flatnonzero(has_defect & ~is_defective)
    if contradicting.size:
        raise ValueError(f"images {contradicting.tolist()} have defective pixels in their masks but are "
                         "labelled good (0); labels and masks must describe the same images in the same order")
    unmarked = np.flatnonzero(is_defective & ~has_defect)
    if unmarked.size:
        raise ValueError(f"images {unmarked.tolist()} are labelled defective (1) but their masks are empty; "
                         "MVTec AD masks every defect, so labels and masks must describe the same images in "
                         "the same order (masks shrunk too far can lose small defects: use a larger image size)")
    if threshold is not None:
        check_scalar(threshold, "threshold")
        check_scalar(min_defect_area, "min_defect_area", low=1, integer=True)
    result = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "au_pro": au_pro(masks, maps, fpr_limit=fpr_limit),
    }
    if threshold is not None:
        predictions = classify(maps, threshold, min_defect_area=min_defect_area)
        result["good_accuracy"], result["defective_accuracy"] = classification_accuracy(labels, predictions)
        result["region_overlap"] = region_overlap(masks, maps, threshold)
    return result
