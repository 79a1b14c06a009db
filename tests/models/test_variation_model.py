"""Tests for the variation model: alignment, per-pixel statistics, HALCON's thresholds."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from mvtec_tutorial.data import to_grayscale
from mvtec_tutorial.models import NotFittedError
from mvtec_tutorial.models.variation_model import VariationModel, align_translation, covered

SIZE = 48
NOISE_STD = np.where(np.arange(SIZE) < SIZE // 2, 0.005, 0.02)[None, :].repeat(SIZE, axis=0)  # left calm, right noisy


def pattern(size=SIZE, seed=0):
    """A smooth, non-periodic gray pattern in [0.2, 0.8] that phase correlation can lock on to."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal((size, size)), 3)
    return 0.5 + 0.3 * field / np.abs(field).max()


def as_rgb(gray):
    """Gray images (N, H, W) -> (N, 3, H, W) tensor; the luma weights sum to 1, so to_gray gives them back."""
    return torch.from_numpy(np.repeat(np.clip(gray, 0, 1)[:, None], 3, axis=1).astype(np.float32))


def to_gray(images):
    """Gray values (N, H, W) as the variation model computes them."""
    return to_grayscale(torch.as_tensor(images, dtype=torch.float32))[:, 0].numpy()


@pytest.fixture(scope="module")
def shifted_training_set():
    """40 noisy copies of one pattern, moved by known whole-pixel shifts (the first one unmoved)."""
    rng = np.random.default_rng(1)
    shifts = rng.integers(-3, 4, size=(40, 2))
    shifts[0] = 0
    base = pattern()
    # Noise first, then the move: NOISE_STD describes the object's pixels, wherever they land.
    images = np.stack([np.roll(base + rng.standard_normal(base.shape) * NOISE_STD, tuple(s), axis=(0, 1))
                       for s in shifts])
    return base, shifts, as_rgb(images)


def test_to_gray_matches_pil():
    rgb = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    gray = to_gray(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
    np.testing.assert_allclose(gray, expected, atol=0.5 / 255 + 1e-6)  # PIL rounds to whole gray levels


def test_alignment_recovers_known_shifts():
    reference = pattern()
    whole = np.roll(reference, (3, -5), axis=(0, 1))
    # A sub-pixel shift of a periodic image, done exactly in the Fourier domain.
    sub_pixel = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(reference), (-1.5, 2.3))).real
    aligned, shifts = align_translation(np.stack([whole, sub_pixel]), reference)
    np.testing.assert_allclose(shifts[0], (-3, 5), atol=1e-6)
    np.testing.assert_allclose(shifts[1], (1.5, -2.3), atol=0.1)
    inner = (slice(6, -6), slice(6, -6))  # away from pixels shifted in from outside
    np.testing.assert_allclose(aligned[0][inner], reference[inner], atol=1e-6)


def test_alignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="of the reference's shape"):
        align_translation(np.zeros((2, 10, 10)), np.zeros((12, 12)))


def test_recovers_known_mean_and_std_after_alignment(shifted_training_set):
    base, shifts, images = shifted_training_set
    # Whole-pixel alignment undoes the whole-pixel shifts exactly, so the statistics are those of the noise.
    model = VariationModel(upsample_factor=1, std_floor=1e-3).fit(images, progress=False)
    np.testing.assert_array_equal(model.fit_shifts_, -shifts)
    inner = (slice(4, -4), slice(4, -4))
    n = len(images)
    # Per pixel, within 5 standard errors (the std of n samples has a relative error of ~1/sqrt(2n) = 11 %).
    assert np.all(np.abs(model.mean_ - base)[inner] < 5 * NOISE_STD[inner] / np.sqrt(n))
    np.testing.assert_allclose(model.std_[inner], NOISE_STD[inner], rtol=5 / np.sqrt(2 * n))
    for half in (slice(4, SIZE // 2), slice(SIZE // 2, -4)):  # and the typical pixel within 5 %
        np.testing.assert_allclose(np.median(model.std_[4:-4, half]), NOISE_STD[0, half][0], rtol=0.05)
    unaligned = VariationModel(align=False, upsample_factor=1, std_floor=1e-3).fit(images, progress=False)
    assert np.median(unaligned.std_[inner]) > 2 * np.median(model.std_[inner])  # moving images blur the statistics


def test_unaligned_statistics_are_numpy_mean_and_std():
    images = torch.rand(6, 3, 16, 16)
    model = VariationModel(align=False, std_floor=0.05).fit(images, progress=False)
    gray = images.numpy().transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(model.mean_, gray.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(model.std_, np.maximum(gray.std(axis=0), 0.05), atol=1e-6)


def test_flags_an_injected_defect_in_a_shifted_image(shifted_training_set):
    base, _, images = shifted_training_set
    model = VariationModel().fit(images, progress=False)
    rng = np.random.default_rng(2)
    good = np.roll(base, (2, -1), axis=(0, 1)) + rng.standard_normal(base.shape) * NOISE_STD
    defective = good.copy()
    defective[20:26, 8:14] += 0.1  # in the calm half: 20 standard deviations
    maps, scores = model.predict(as_rgb(np.stack([good, defective])))
    assert scores[1] > 2 * scores[0]
    assert np.unravel_index(maps[1].argmax(), maps[1].shape) in {(y, x) for y in range(18, 28) for x in range(6, 16)}


def test_covered_marks_pixels_shifted_in_from_outside():
    inside = covered((4, 5), np.array([[1, -2], [0.5, 0]]))
    expected = np.ones((2, 4, 5), dtype=bool)
    expected[0, :1, :] = expected[0, :, -2:] = False  # moved down 1 and left 2
    expected[1, :1, :] = False  # half a pixel down: row 0 interpolates from outside
    np.testing.assert_array_equal(inside, expected)


def test_a_moved_good_image_scores_like_an_unmoved_one(shifted_training_set):
    base, _, images = shifted_training_set
    model, unaligned = (VariationModel(align=align).fit(images, progress=False) for align in (True, False))
    good = base + np.random.default_rng(4).standard_normal(base.shape) * NOISE_STD
    moved = np.roll(good, (9, -7), axis=(0, 1))  # farther than any training shift; wraps around
    scores = model.predict(as_rgb(np.stack([good, moved])))[1]
    assert scores[1] < 1.2 * scores[0]
    assert unaligned.predict(as_rgb(moved[None]))[1][0] > 3 * scores[0]


def test_threshold_is_halcons_absolute_and_relative_rule():
    rng = np.random.default_rng(3)
    train = torch.from_numpy(rng.uniform(0.3, 0.7, (10, 3, 12, 12)).astype(np.float32))
    test = torch.from_numpy(rng.uniform(0, 1, (4, 3, 12, 12)).astype(np.float32))
    model = VariationModel(align=False, std_floor=0.05, smoothing_sigma=0).fit(train, progress=False)
    threshold = 2.5
    maps, _ = model.predict(test)
    # HALCON: accept mean - max(a, b * std) <= g <= mean + max(a, b * std), with b = t and a = t * floor.
    gray, gray_train = to_gray(test), to_gray(train)
    mean, std = gray_train.mean(axis=0), gray_train.std(axis=0)
    tolerance = np.maximum(threshold * 0.05, threshold * std)
    halcon_rejects = np.abs(gray - mean) > tolerance
    np.testing.assert_array_equal(maps > threshold, halcon_rejects)
    lower, upper = model.tolerance_band(threshold)
    np.testing.assert_array_equal((gray < lower) | (gray > upper), halcon_rejects)


def test_errors_say_what_to_do():
    with pytest.raises(NotFittedError, match="call fit first"):
        VariationModel().tolerance_band(3.0)
    model = VariationModel().fit(torch.rand(3, 3, 16, 16), progress=False)
    with pytest.raises(ValueError, match="threshold must be positive"):
        model.tolerance_band(0)
    with pytest.raises(ValueError, match="training image_size"):
        model.predict(torch.rand(1, 3, 20, 20))
