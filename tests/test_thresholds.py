"""Tests for mvtec_tutorial.thresholds against brute force and closed forms."""
import numpy as np
import pytest
from skimage.measure import label as skimage_label

from mvtec_tutorial import thresholds


def largest_component(binary_maps):
    """Largest 8-connected component over all images, by scikit-image (independent of scipy)."""
    areas = [np.bincount(skimage_label(b, connectivity=2).ravel())[1:] for b in binary_maps]
    return max((a.max() for a in areas if a.size), default=0)


def brute_force_min_area_threshold(maps, min_defect_area):
    """Raise the threshold through every distinct value until no component reaches the area."""
    for t in np.unique(maps):
        if largest_component(maps > t) < min_defect_area:
            return t
    raise AssertionError("the maximum value always works")


def quantised_maps(seed, *, n_images=3, size=10, n_levels=12):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_levels, size=(n_images, size, size)).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("min_defect_area", [1, 2, 5, 17, 100])
def test_min_area_threshold_matches_brute_force(seed, min_defect_area):
    maps = quantised_maps(seed)
    assert thresholds.min_defect_area_threshold(maps, min_defect_area) == brute_force_min_area_threshold(
        maps, min_defect_area
    )


@pytest.mark.parametrize("seed", range(3))
def test_min_area_threshold_is_feasible_and_smallest(seed):
    maps = quantised_maps(seed, size=16, n_levels=30) / 7.0
    min_defect_area = 6
    t = thresholds.min_defect_area_threshold(maps, min_defect_area)
    assert largest_component(maps > t) < min_defect_area
    below = np.unique(maps)[np.unique(maps) < t]
    assert below.size and largest_component(maps > below[-1]) >= min_defect_area


def test_min_area_threshold_uses_8_connectivity():
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 0, 0] = maps[0, 1, 1] = 1.0  # a diagonal pair is one component of area 2
    assert thresholds.min_defect_area_threshold(maps, 2) == 1.0  # 4-connectivity would accept 0.0
    maps[0, 1, 1] = 0.5
    assert thresholds.min_defect_area_threshold(maps, 2) == 0.5


def test_min_area_threshold_of_area_one_is_the_maximum():
    maps = quantised_maps(0)
    assert thresholds.min_defect_area_threshold(maps, 1) == maps.max()


def test_min_area_threshold_falls_as_the_area_grows():
    maps = quantised_maps(4, size=16, n_levels=40)
    values = [thresholds.min_defect_area_threshold(maps, area) for area in (1, 2, 4, 8, 16, 64, 256)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] > values[-1]


def test_min_defect_area_pixels():
    assert thresholds.min_defect_area_pixels((256, 256), relative_area=0.001) == 66  # ceil(65.536)
    assert thresholds.min_defect_area_pixels((900, 900)) == 810
    assert thresholds.min_defect_area_pixels((4, 4), relative_area=1e-9) == 1


def test_quantile_threshold_closed_form():
    maps = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    # linear interpolation at position q * (n - 1) = 89.1 between the sorted values 89 and 90
    assert thresholds.quantile_threshold(maps, q=0.9) == pytest.approx(89.1)
    assert np.mean(maps > thresholds.quantile_threshold(maps, q=0.9)) == pytest.approx(0.1)


def test_k_sigma_threshold_closed_form():
    scores = np.array([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, population standard deviation sqrt(1.25)
    assert thresholds.k_sigma_threshold(scores, k=3) == pytest.approx(2.5 + 3 * np.sqrt(1.25))
    maps = scores.reshape(1, 2, 2)
    assert thresholds.k_sigma_threshold(maps, k=0) == pytest.approx(2.5)


def test_errors_for_bad_input():
    empty = np.zeros((0, 8, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="validation_maps must have shape \\(N, H, W\\)"):
        thresholds.min_defect_area_threshold(empty, 4)
    with pytest.raises(ValueError, match="validation_maps must have shape \\(N, H, W\\)"):
        thresholds.quantile_threshold(empty)
    with pytest.raises(ValueError, match="values must not be empty"):
        thresholds.k_sigma_threshold(np.array([]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        thresholds.k_sigma_threshold(np.array([1.0, np.nan]))
    maps = quantised_maps(0)
    with pytest.raises(ValueError, match="min_defect_area must be an integer in \\[1, 100\\]"):
        thresholds.min_defect_area_threshold(maps, 101)
    with pytest.raises(ValueError, match="min_defect_area must be an integer in \\[1, 100\\]"):
        thresholds.min_defect_area_threshold(maps, 0)
    with pytest.raises(ValueError, match="q must be a real number in \\[0, 1\\], got 99.9; .* q = p / 100"):
        thresholds.quantile_threshold(maps, q=99.9)
    with pytest.raises(ValueError, match="relative_area must be a real number in \\(0, 1\\]"):
        thresholds.min_defect_area_pixels((8, 8), relative_area=0.0)
