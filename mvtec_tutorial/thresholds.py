"""Rules that turn anomaly maps of *normal validation images* into one decision threshold.

Every rule here sees only defect-free data, as in the unsupervised setting of MVTec AD: the
threshold is fixed before any defective image is looked at. A pixel is anomalous when its map
value is strictly greater than the threshold (:func:`mvtec_tutorial.metrics.binarize`), and
regions are 8-connected, the same conventions as :mod:`mvtec_tutorial.metrics`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from mvtec_tutorial import metrics

#: Default minimum defect area as a fraction of the image area. The paper fixes a minimum
#: defect area per category but does not publish the values; we chose 0.1 % of the image
#: (66 px at 256 x 256, 810 px at 900 x 900). On real MVTec AD ``bottle`` (68 ground-truth
#: regions, 8-connected, 900 x 900) the smallest region covers 0.024 % of the image, the
#: 1st percentile 0.040 %, the 5th 0.28 % and the median 4.9 %, so this default lies below
#: all but the very smallest annotated defects. Tune it per category.
DEFAULT_RELATIVE_MIN_DEFECT_AREA = 0.001


def min_defect_area_pixels(image_shape: tuple[int, int], *,
                           relative_area: float = DEFAULT_RELATIVE_MIN_DEFECT_AREA) -> int:
    """Turn a minimum defect area given as a fraction of the image into pixels.

    Parameters
    ----------
    image_shape : (int, int)
        ``(H, W)`` of the anomaly maps the threshold will be applied to.
    relative_area : float in (0, 1], keyword-only
        Fraction of the image area; see :data:`DEFAULT_RELATIVE_MIN_DEFECT_AREA` for the default.

    Returns
    -------
    int >= 1
        ``ceil(relative_area * H * W)``.

    Examples
    --------
    >>> min_defect_area_pixels((256, 256))
    66
    """
    if not (np.shape(image_shape) == (2,)
            and all(isinstance(side, (int, np.integer)) and side > 0 for side in image_shape)):
        raise ValueError(f"image_shape must be two positive integers (H, W), got {image_shape}")
    height, width = image_shape
    metrics.check_scalar(relative_area, "relative_area", low=0, high=1, low_open=True,
                         hint=f"the default is {DEFAULT_RELATIVE_MIN_DEFECT_AREA}")
    return max(1, math.ceil(relative_area * height * width))


def min_defect_area_threshold(validation_maps: np.ndarray, min_defect_area: int) -> float:
    """Smallest threshold at which normal validation maps hold no component of the defect size.

    Parameters
    ----------
    validation_maps : ndarray of shape (N, H, W), real
        Anomaly maps of defect-free validation images (not used for training).
    min_defect_area : int in [1, H * W]
        Minimum defect area in pixels (:func:`min_defect_area_pixels` converts a fraction).

    Returns
    -------
    float
        The smallest ``t`` such that every 8-connected component of
        ``validation_maps > t`` has fewer than ``min_defect_area`` pixels. It is always one
        of the values in ``validation_maps``.

    Notes
    -----
    The rule of Bergmann et al. (CVPR 2019, evaluation protocol): define a minimum defect
    area per category, then raise the threshold on normal validation data until no connected
    component of the binarised maps is that large. Anything smaller on a good image is
    accepted as noise, which lets the threshold sit below the largest normal value.

    Exact search. Raising ``t`` shrinks ``{map > t}``, and every component of a subset lies
    inside a component of the superset, so the largest component area never grows with ``t``:
    feasibility is monotone. The binarised maps change only at the values present in the maps,
    so the answer is one of them, and bisection over the sorted distinct values finds it with
    ``log2(#values)`` labellings of the whole validation set (about 22 for a million values).
    The maximum value is always feasible (nothing is above it).

    Effect on the accuracies: with ``min_defect_area=1`` the threshold is the largest normal
    value, so every validation image is classified good. Larger areas give lower thresholds:
    more defects are found (defective accuracy up). Classify test images with the same area
    (:func:`mvtec_tutorial.metrics.classify`), so small hot spots on good images are ignored as
    they were on the validation images; with ``max(map) > t`` instead, good accuracy drops.

    Examples
    --------
    >>> maps = np.zeros((1, 4, 4)); maps[0, 0, 0] = 1.0; maps[0, 1, 1] = 0.5
    >>> float(min_defect_area_threshold(maps, 2))  # the diagonal pair is one 8-connected component
    0.5
    """
    maps = metrics.check_maps(validation_maps, name="validation_maps")
    n_pixels = maps.shape[1] * maps.shape[2]
    metrics.check_scalar(min_defect_area, "min_defect_area", low=1, high=n_pixels, integer=True,
                         hint="the pixels of one map; use min_defect_area_pixels to convert a fraction")
    values = np.unique(maps)
    low, high = 0, len(values) - 1  # values[high] is feasible; find the first feasible index
    while low < high:
        middle = (low + high) // 2
        if metrics.largest_component_areas(maps, values[middle]).max() < min_defect_area:
            high = middle
        else:
            low = middle + 1
    return float(values[low])


def quantile_threshold(validation_maps: np.ndarray, *, q: float = 0.999) -> float:
    """The ``q``-quantile of all validation pixels.

    Parameters
    ----------
    validation_maps : ndarray of shape (N, H, W), real
        Anomaly maps of defect-free validation images.
    q : float in [0, 1], keyword-only
        Fraction of normal pixels to keep below the threshold.

    Returns
    -------
    float
        ``np.quantile`` of the pooled pixels (linear interpolation between order statistics).

    Notes
    -----
    Sets a pixel-level false positive rate of about ``1 - q`` on normal data and ignores
    shape. An image, however, is flagged when *any* of its ``H * W`` pixels exceeds the
    threshold: at 256 x 256 and ``q = 0.999`` a good image has about 66 pixels above it on
    average, so most good images are called defective (good accuracy low, defective accuracy
    high) unless ``q`` is pushed towards ``1 - 1 / (H * W)``. Useful for segmentation, where
    the pixel FPR is what matters.

    Examples
    --------
    >>> float(quantile_threshold(np.arange(100.0).reshape(1, 10, 10), q=0.5))  # halfway between 49 and 50
    49.5
    """
    maps = metrics.check_maps(validation_maps, name="validation_maps")
    metrics.check_scalar(q, "q", low=0, high=1, hint="for a percentile p pass q = p / 100")
    return float(np.quantile(maps, q))


def k_sigma_threshold(values: np.ndarray, *, k: float = 3.0) -> float:
    """Mean plus ``k`` standard deviations of normal validation values.

    Parameters
    ----------
    values : ndarray of any shape, real
        Image scores ``(N,)`` of defect-free validation images (recommended), or their maps
        ``(N, H, W)``; all entries are pooled.
    k : float >= 0, keyword-only
        Number of standard deviations above the mean.

    Returns
    -------
    float
        ``mean(values) + k * std(values)`` with the population standard deviation (ddof=0).

    Notes
    -----
    On image scores, if normal scores were Gaussian, ``k = 3`` would let about 0.13 % of good
    images through as defective. Scores that are maxima of maps are right-skewed, and a
    validation set of a few dozen images estimates the spread loosely, so expect more false
    alarms than that. Larger ``k`` raises good accuracy and lowers defective accuracy. On maps
    it is a pixel rule with the same any-pixel caveat as :func:`quantile_threshold`.

    Examples
    --------
    >>> float(k_sigma_threshold(np.array([1.0, 3.0]), k=2))
    4.0
    """
    metrics.check_scalar(k, "k", low=0, high=math.inf, high_open=True,
                         hint="3 lets about 0.13 % of Gaussian normal scores through")
    values = np.asarray(values)
    if values.size == 0:
        raise ValueError("values must not be empty; pass scores or maps of normal validation images")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise ValueError(f"values must hold real numbers, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError("values contains NaN or infinite values; fix the method that produced them")
    return float(values.mean(dtype=np.float64) + k * values.std(dtype=np.float64))


#: Confidence of the one-sided false-reject bound (:func:`false_reject_threshold`).
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class FalseRejectThreshold:
    """A threshold on a per-image statistic of normal images, and what it promises.

    Attributes
    ----------
    threshold : float
        Flag an image when its statistic is strictly greater.
    n_validation : int
        Normal validation images the threshold was chosen on.
    n_rejected : int
        Validation images above the threshold.
    rate : float
        ``n_rejected / n_validation``, the false-reject rate on the validation images.
    upper_bound : float
        One-sided upper confidence bound on the false-reject rate of new normal images.
    confidence : float
        Confidence of ``upper_bound``.
    reachable_rates : ndarray of shape (n_validation,)
        The validation false-reject rates a threshold can have: ``0, 1/n, ..., (n-1)/n``.
    """

    threshold: float
    n_validation: int
    n_rejected: int
    rate: float
    upper_bound: float
    confidence: float
    reachable_rates: np.ndarray

    def describe(self) -> str:
        """One sentence for a report: the rate on validation and the bound on new images."""
        return (f"{self.n_rejected} of {self.n_validation} validation images above the threshold "
                f"(false-reject rate {self.rate:.1%}); on new normal images the false-reject rate is at most "
                f"{self.upper_bound:.1%} with {self.confidence:.0%} confidence")


def false_reject_bound(n_validation: int, n_rejected: int, *, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Upper confidence bound on the false-reject rate of a threshold at an order statistic.

    Parameters
    ----------
    n_validation : int >= 1
        Normal validation images.
    n_rejected : int in [0, n_validation - 1]
        How many of them lie above the threshold, which is the ``(n_validation - n_rejected)``-th
        smallest validation statistic.
    confidence : float in (0, 1), keyword-only

    Returns
    -------
    float in (0, 1]
        ``Beta(n_rejected + 1, n_validation - n_rejected).ppf(confidence)``.

    Notes
    -----
    If the statistics of normal images are independent draws from one continuous distribution
    ``F`` and ``t`` is the ``k``-th smallest of ``n``, then ``F(t)`` follows ``Beta(k, n - k + 1)``
    (the distribution of a uniform order statistic; David & Nagaraja, *Order Statistics*, 3rd ed.,
    Sec. 2.1), so the false-reject rate ``1 - F(t)`` follows ``Beta(n - k + 1, k)``. Its
    ``confidence``-quantile is exceeded with probability ``1 - confidence`` exactly, whatever ``F``:
    the bound is distribution-free. It equals the Clopper-Pearson upper bound for
    ``n_rejected`` rejections in ``n_validation`` trials. With no rejection it is
    ``1 - (1 - confidence) ** (1 / n)``: 22 % for 12 images, 1 % needs 299 images (at 95 %).
    The bound holds for a threshold chosen by rank (:func:`false_reject_threshold`, and the
    minimum-defect-area rule, whose threshold is the largest per-image threshold); for a
    threshold computed otherwise (k sigma) it is the bound of the rank it happened to land on.

    Examples
    --------
    >>> round(false_reject_bound(12, 0), 3)
    0.221
    """
    metrics.check_scalar(n_validation, "n_validation", low=1, integer=True, hint="count the validation images")
    metrics.check_scalar(n_rejected, "n_rejected", low=0, high=n_validation - 1, integer=True,
                         hint="a threshold below every validation image promises nothing")
    metrics.check_scalar(confidence, "confidence", low=0, high=1, low_open=True, high_open=True,
                         hint=f"e.g. {DEFAULT_CONFIDENCE}")
    return float(stats.beta.ppf(confidence, n_rejected + 1, n_validation - n_rejected))


def false_reject_threshold(values: np.ndarray, *, target_rate: float,
                           confidence: float = DEFAULT_CONFIDENCE) -> FalseRejectThreshold:
    """The lowest threshold whose false-reject rate on normal validation images is at most ``target_rate``.

    Parameters
    ----------
    values : ndarray of shape (N,), real
        A per-image statistic of defect-free validation images, higher = more anomalous: their
        image scores, or the per-image thresholds of :func:`per_image_region_thresholds`.
    target_rate : float in [0, 1), keyword-only
        The share of good parts you accept to reject. With ``N`` images only the rates
        ``j / N`` are reachable; the largest one not above the target is taken.
    confidence : float in (0, 1), keyword-only

    Returns
    -------
    FalseRejectThreshold
        The threshold (the ``(N - j)``-th smallest value, ``j = floor(target_rate * N)``), the
        reachable rates and the bound of :func:`false_reject_bound`.

    Raises
    ------
    ValueError
        For empty or non-finite values or a rate outside [0, 1).

    Notes
    -----
    Tied values cannot be separated: the threshold keeps every value equal to it, so fewer than
    ``j`` images may lie above it; ``n_rejected`` counts what is, and the bound uses that count.

    Examples
    --------
    >>> choice = false_reject_threshold(np.arange(1.0, 21.0), target_rate=0.1)
    >>> choice.threshold, choice.n_rejected, round(choice.upper_bound, 3)
    (18.0, 2, 0.283)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(f"values must be a non-empty 1-D array of finite scores, got shape {values.shape}; "
                         "pass one statistic per normal validation image")
    metrics.check_scalar(target_rate, "target_rate", low=0, high=1, high_open=True,
                         hint="e.g. 0.01 to reject about one good part in a hundred")
    n = values.size
    n_allowed = math.floor(target_rate * n + 1e-9)  # 1e-9: 0.1 * 20 is 2.0000000000000004 in floats
    threshold = float(np.sort(values)[n - 1 - min(n_allowed, n - 1)])
    n_rejected = int((values > threshold).sum())
    return FalseRejectThreshold(threshold=threshold, n_validation=n, n_rejected=n_rejected, rate=n_rejected / n,
                                upper_bound=false_reject_bound(n, n_rejected, confidence=confidence),
                                confidence=confidence, reachable_rates=np.arange(n) / n)


def per_image_region_thresholds(validation_maps: np.ndarray, min_defect_area: int) -> np.ndarray:
    """The minimum-defect-area threshold of each validation map on its own.

    An image is flagged at threshold ``t`` (``metrics.classify`` with ``min_defect_area``) exactly
    when its own value here is greater than ``t``, so these values turn the region rule into a
    per-image statistic, and :func:`min_defect_area_threshold` is their maximum.

    Parameters
    ----------
    validation_maps : ndarray of shape (N, H, W), real
    min_defect_area : int

    Returns
    -------
    ndarray of shape (N,), float64

    Examples
    --------
    >>> maps = np.zeros((2, 4, 4)); maps[0, :2, :2] = 3.0; maps[1, 0, 0] = 5.0
    >>> per_image_region_thresholds(maps, 2).tolist()
    [3.0, 0.0]
    """
    maps = metrics.check_maps(validation_maps, name="validation_maps")
    return np.array([min_defect_area_threshold(one[None], min_defect_area) for one in maps])
