"""Tests for mvtec_tutorial.metrics.

Every value is checked against something the module does not share code with: a closed form
worked out by hand on a few pixels, scikit-learn's ``roc_auc_score``, or a slow AU-PRO written
here from the definition (scikit-image's labelling, one threshold at a time).
"""
import numpy as np
import pytest
from skimage.measure import label as skimage_label
from sklearn.metrics import roc_auc_score

from mvtec_tutorial import metrics


# ----------------------------------------------------------------------------- references
def brute_force_pro_curve(masks, maps):
    """PRO curve from the definition: every distinct score is a threshold, pixel >= t is positive.

    Regions come from scikit-image (connectivity=2 is 8-connectivity), not from scipy.
    """
    regions = []
    for i, mask in enumerate(masks):
        labelled = skimage_label(mask, connectivity=2)
        regions += [(i, labelled == k) for k in range(1, labelled.max() + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        positive = maps >= threshold
        fprs.append((positive & normal).sum() / normal.sum())
        pros.append(np.mean([positive[i][region].mean() for i, region in regions]))
    return np.array(fprs + [1.0]), np.array(pros + [1.0])


def brute_force_au_pro(masks, maps, fpr_limit):
    """Trapezoids segment by segment, the last one cut at ``fpr_limit`` by linear interpolation."""
    fprs, pros = brute_force_pro_curve(masks, maps)
    area = 0.0
    for x0, y0, x1, y1 in zip(fprs[:-1], pros[:-1], fprs[1:], pros[1:]):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_limit) / 2
            break
    return area / fpr_limit


def random_case(seed, *, n_images=6, size=16, n_levels=6):
    """Masks with several rectangles per defective image, two all-good images, quantised maps (ties)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, size, size), dtype=bool)
    for i in range(2, n_images):
        for _ in range(rng.integers(1, 5)):
            r, c = rng.integers(0, size - 3, size=2)
            h, w = rng.integers(1, 4, size=2)
            masks[i, r:r + h, c:c + w] = True
    noise = rng.integers(0, n_levels, size=masks.shape)
    maps = (noise + 2 * masks * rng.integers(0, 2, size=masks.shape)).astype(np.float32) / n_levels
    return masks, maps


# ----------------------------------------------------------------------------- AUROC
def test_image_auroc_hand_case():
    # defective 0.35 beats good 0.1 only; defective 0.8 beats both good: 3 of 4 pairs
    assert metrics.image_auroc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_pixel_auroc_counts_ties_as_half():
    masks = np.array([[[True, False, False]]])
    maps = np.array([[[0.5, 0.5, 0.1]]], dtype=np.float32)
    # the defective pixel ties one good pixel (1/2) and beats the other (1): (0.5 + 1) / 2
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", range(4))
def test_auroc_agrees_with_sklearn(seed):
    masks, maps = random_case(seed)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = metrics.image_scores(maps)
    assert metrics.image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_scores_is_per_image_max():
    maps = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(metrics.image_scores(maps), [11.0, 23.0])


def test_constant_map_is_a_chance_detector():
    masks, _ = random_case(0)
    maps = np.zeros(masks.shape, dtype=np.float32)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(0.5)
    # one threshold takes every pixel: the curve is the diagonal (0,0)-(1,1), area fpr_limit / 2
    assert metrics.au_pro(masks, maps, fpr_limit=0.3) == pytest.approx(0.15)
    assert metrics.au_pro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- PRO
def test_pro_curve_hand_case():
    masks = np.array([[[True, True, False, False]]])
    maps = np.array([[[0.9, 0.5, 0.7, 0.1]]])
    fprs, pros = metrics.pro_curve(masks, maps)
    # thresholds 0.9, 0.7, 0.5, 0.1 between the (0,0) and (1,1) anchors
    np.testing.assert_allclose(fprs, [0, 0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(pros, [0, 0.5, 0.5, 1, 1, 1])
    # PRO is 0.5 on [0, 0.5] and 1 after: 0.5 * 0.3 / 0.3 and 0.5 * 0.5 + 0.5 * 1
    assert metrics.au_pro(masks, maps, fpr_limit=0.3) == pytest.approx(0.5)
    assert metrics.au_pro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75)
    # the limit hit exactly at a curve point: area of 0.5 over [0, 0.5]
    assert metrics.au_pro(masks, maps, fpr_limit=0.5) == pytest.approx(0.5)


def test_regions_weigh_equally_in_pro():
    # a 4-pixel region half found and a 1-pixel region fully found at the top threshold: PRO (0.5 + 1) / 2
    masks = np.zeros((1, 5, 5), dtype=bool)
    masks[0, 0:2, 0:2] = True
    masks[0, 4, 4] = True
    maps = np.zeros((1, 5, 5))
    maps[0, 0, 0:2] = 1.0
    maps[0, 4, 4] = 1.0
    fprs, pros = metrics.pro_curve(masks, maps)
    assert (fprs[1], pros[1]) == pytest.approx((0.0, 0.75))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fpr_limit", [0.3, 1.0, 0.05])
def test_au_pro_matches_brute_force(seed, fpr_limit):
    masks, maps = random_case(seed)
    assert metrics.au_pro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(
        brute_force_au_pro(masks, maps, fpr_limit), abs=1e-6
    )


def test_pro_curve_matches_brute_force_points():
    masks, maps = random_case(7)
    for ours, reference in zip(metrics.pro_curve(masks, maps), brute_force_pro_curve(masks, maps)):
        np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_diagonal_pixels_form_one_region():
    # 8-connectivity: two diagonal pixels are a single region, so finding one of them gives PRO 0.5, not 1
    masks = np.zeros((1, 3, 3), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True
    maps = np.zeros((1, 3, 3))
    maps[0, 0, 0] = 1.0
    assert metrics.pro_curve(masks, maps)[1][1] == pytest.approx(0.5)
    assert metrics.label_regions(masks)[1] == 1


def test_perfect_detector_scores_one_and_never_more():
    masks, _ = random_case(3)
    perfect = masks.astype(np.float32)
    assert metrics.au_pro(masks, perfect) == pytest.approx(1.0)
    assert metrics.pixel_auroc(masks, perfect) == pytest.approx(1.0)
    for seed in range(5):
        _, maps = random_case(seed)
        for fpr_limit in (0.01, 0.3, 1.0):
            assert 0.0 <= metrics.au_pro(masks, maps + perfect, fpr_limit=fpr_limit) <= 1.0


# ----------------------------------------------------------------------------- thresholded metrics
def test_region_overlap_weighs_regions_equally():
    masks = np.zeros((2, 6, 6), dtype=bool)
    masks[0, 0:2, 0:2] = True   # 4 pixels
    masks[0, 5, 5] = True       # 1 pixel, not touching the first
    maps = np.zeros((2, 6, 6), dtype=np.float32)
    maps[0, 0, 0] = 1.0         # 1 of 4 found
    maps[0, 5, 5] = 1.0         # 1 of 1 found
    maps[1, 3, 3] = 1.0         # a false positive in a good image changes no overlap
    # (1/4 + 1) / 2 = 0.625; pooling pixels would give 2/5 = 0.4
    assert metrics.region_overlap(masks, maps, threshold=0.5) == pytest.approx(0.625)
    # strictly greater: a pixel equal to the threshold is not anomalous
    assert metrics.region_overlap(masks, maps, threshold=1.0) == 0.0


def test_classification_accuracy_hand_case_and_absent_class():
    labels = np.array([0, 0, 0, 1, 1])
    predictions = np.array([0, 1, 0, 1, 0])
    assert metrics.classification_accuracy(labels, predictions) == pytest.approx((2 / 3, 1 / 2))
    good, defective = metrics.classification_accuracy(np.array([0, 0]), np.array([0, 1]))
    assert good == 0.5 and np.isnan(defective)


def test_evaluate_combines_the_metrics():
    masks, maps = random_case(1)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = metrics.image_scores(maps)
    result = metrics.evaluate(masks, maps, labels, scores)
    assert result == pytest.approx(
        {
            "image_auroc": roc_auc_score(labels, scores),
            "pixel_auroc": roc_auc_score(masks.ravel(), maps.ravel()),
            "au_pro": brute_force_au_pro(masks, maps, 0.3),
        }
    )
    threshold = 0.6
    result = metrics.evaluate(masks, maps, labels, scores, threshold=threshold)
    predicted = (maps.max(axis=(1, 2)) > threshold).astype(int)
    good, defective = np.mean(predicted[labels == 0] == 0), np.mean(predicted[labels == 1] == 1)
    assert result["good_accuracy"] == pytest.approx(good)
    assert result["defective_accuracy"] == pytest.approx(defective)
    assert result["region_overlap"] == pytest.approx(metrics.region_overlap(masks, maps, threshold))


# ----------------------------------------------------------------------------- errors
def test_errors_say_what_is_wrong():
    masks, maps = random_case(0)
    with pytest.raises(ValueError, match="masks has shape .* but maps has shape"):
        metrics.pixel_auroc(masks, maps[:, :8])
    with pytest.raises(ValueError, match="masks must be a boolean array.*masks > 0"):
        metrics.au_pro(masks.astype(np.uint8) * 255, maps)
    with pytest.raises(ValueError, match="maps must have shape \\(N, H, W\\)"):
        metrics.image_scores(maps[0])
    with pytest.raises(ValueError, match="maps contains NaN or infinite"):
        metrics.pixel_auroc(masks, np.where(masks, np.nan, maps))
    with pytest.raises(ValueError, match="fpr_limit must be a real number in \\(0, 1\\]"):
        metrics.au_pro(masks, maps, fpr_limit=0.0)
    with pytest.raises(ValueError, match="labels must contain only 0 .* and 1"):
        metrics.image_auroc(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        metrics.image_auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="defective pixels .* labelled good"):
        metrics.evaluate(masks, maps, np.zeros(len(masks), dtype=int), metrics.image_scores(maps))


def test_undefined_metrics_explain_why():
    good_only = np.zeros((2, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((2, 4, 4))
    with pytest.raises(ValueError, match="AUROC is undefined: no defective pixels"):
        metrics.pixel_auroc(good_only, maps)
    with pytest.raises(ValueError, match="AU-PRO is undefined: masks contain no defect region"):
        metrics.au_pro(good_only, maps)
    with pytest.raises(ValueError, match="region overlap is undefined: masks contain no defect region"):
        metrics.region_overlap(good_only, maps, 0.5)
    with pytest.raises(ValueError, match="AUROC is undefined: no defective images"):
        metrics.image_auroc(np.zeros(3, dtype=int), np.arange(3.0))
    all_defective = np.ones((1, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="AUROC is undefined: no good pixels"):
        metrics.pixel_auroc(all_defective, maps[:1, :2, :2])
    with pytest.raises(ValueError, match="AU-PRO is undefined: masks contain no defect-free pixel"):
        metrics.au_pro(all_defective, maps[:1, :2, :2])


def test_results_are_python_floats():
    masks, maps = random_case(2)
    labels = masks.any(axis=(1, 2)).astype(int)
    result = metrics.evaluate(masks, maps, labels, metrics.image_scores(maps), threshold=0.5)
    assert all(type(value) is float for value in result.values())


def test_classify_ignores_components_smaller_than_the_minimum_area():
    maps = np.zeros((3, 6, 6))
    maps[0, 1, 1] = 1.0                 # one hot pixel
    maps[1, 2:4, 2:4] = 1.0             # a 2 x 2 blob
    maps[2, 0, 0] = maps[2, 1, 1] = 1.0  # two diagonal pixels: one 8-connected component of 2
    np.testing.assert_array_equal(metrics.largest_component_areas(maps, 0.5), [1, 4, 2])
    np.testing.assert_array_equal(metrics.classify(maps, 0.5), [True, True, True])
    np.testing.assert_array_equal(metrics.classify(maps, 0.5, min_defect_area=2), [False, True, True])
    np.testing.assert_array_equal(metrics.classify(maps, 1.0), [False, False, False])  # equal is not above


def test_validation_images_are_classified_good_by_the_min_area_rule():
    from mvtec_tutorial import thresholds

    rng = np.random.default_rng(0)
    validation = rng.random((5, 16, 16))
    threshold = thresholds.min_defect_area_threshold(validation, 4)
    assert not metrics.classify(validation, threshold, min_defect_area=4).any()
    assert metrics.classify(validation, threshold, min_defect_area=1).any()  # max(map) > t would flag some
