"""Tests for the GMM texture model: patch vectors, pyramid, likelihoods of normal vs perturbed texture."""
import numpy as np
import pytest
import torch

from mvtec_tutorial.models import NotFittedError
from mvtec_tutorial.models.gmm_texture import GMMTexture, draw_patch_vectors, patch_vectors, pyramid

SIZE = 48


def stripes(n, *, seed=0, vertical=True):
    """Noisy sinusoidal stripes (period 6 px) with a random phase per image, (n, 3, SIZE, SIZE)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(float)
    axis = xx if vertical else yy
    images = [0.5 + 0.3 * np.sin(2 * np.pi * (axis + rng.uniform(0, 6)) / 6) + rng.normal(0, 0.02, (SIZE, SIZE))
              for _ in range(n)]
    return torch.from_numpy(np.clip(np.stack(images), 0, 1)[:, None].repeat(3, axis=1).astype(np.float32))


@pytest.fixture(scope="module")
def fitted():
    return GMMTexture(n_levels=3, n_components=2, n_fit_patches=1500).fit(stripes(4), progress=False)


def test_patch_vectors_are_the_mirrored_neighbourhoods():
    level = np.random.default_rng(0).random((2, 5, 6))
    vectors = patch_vectors(level, 3)
    padded = np.pad(level, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    for y in range(5):
        for x in range(6):
            np.testing.assert_array_equal(vectors[y * 6 + x], padded[:, y:y + 3, x:x + 3].ravel())


@pytest.mark.parametrize("n_draw", [7, 1000])
def test_drawn_patches_are_the_rows_the_full_patch_matrix_gives(n_draw):
    rng = np.random.default_rng(0)
    levels = [rng.random((2, 5, 6)), rng.random((2, 4, 3)), rng.random((2, 6, 6))]
    every = np.concatenate([patch_vectors(level, 3) for level in levels])  # 78 rows
    expected = every[np.random.default_rng(1).choice(len(every), size=min(n_draw, len(every)), replace=False)]
    np.testing.assert_array_equal(draw_patch_vectors(levels, 3, n_draw, np.random.default_rng(1)), expected)


def test_pyramid_halves_each_level():
    levels = pyramid(np.random.default_rng(0).random((1, 40, 33)), 4)
    assert [level.shape for level in levels] == [(1, 40, 33), (1, 20, 17), (1, 10, 9), (1, 5, 5)]


def test_normal_texture_is_more_likely_than_perturbed_texture(fitted):
    normal = stripes(1, seed=1)
    perturbed = normal.clone()
    perturbed[:, :, 16:32, 16:32] = stripes(1, seed=2, vertical=False)[:, :, 16:32, 16:32]  # stripes turned 90 degrees
    level_maps = fitted.level_maps(torch.cat([normal, perturbed]))
    inside = np.zeros((SIZE, SIZE), dtype=bool)
    inside[20:28, 20:28] = True  # the perturbed square, away from its borders
    for level in range(fitted.n_levels - 1):  # the coarsest level sees 6 x 6 pixels: too few to judge
        assert level_maps[1, level][inside].mean() > level_maps[0, level][inside].mean() + 3
    # The finest level's likelihood directly, from the mixture: patches of the perturbed square are less likely.
    gray = perturbed[0, 0].numpy().astype(float)[None]
    log_likelihood = fitted.mixtures_[0].score_samples(patch_vectors(gray, 7)).reshape(SIZE, SIZE)
    assert log_likelihood[inside].max() < np.median(log_likelihood[~inside])
    maps, scores = fitted.predict(torch.cat([normal, perturbed]))
    assert scores[1] > scores[0]
    assert maps[1][inside].mean() > maps[1][:8, :8].mean() + 3


def test_levels_are_standardised_on_normal_images(fitted):
    level_maps = fitted.level_maps(stripes(2, seed=3))
    # Levels 0 and 1 resolve the 6-pixel stripes; level 2 (a quarter size) aliases them.
    assert np.all(np.abs(np.median(level_maps[:, :2], axis=(0, 2, 3))) < 0.5)


def test_colour_patches_see_a_colour_only_defect():
    normal = stripes(4)
    tinted = normal[:1].clone()
    tinted[:, 0, 16:32, 16:32] = (tinted[:, 0, 16:32, 16:32] + 0.25).clamp(0, 1)  # red up,
    tinted[:, 1, 16:32, 16:32] = (tinted[:, 1, 16:32, 16:32] - 0.25 * 0.299 / 0.587).clamp(0, 1)  # gray unchanged
    colour = GMMTexture(n_levels=1, n_components=2, n_fit_patches=1000, grayscale=False).fit(normal, progress=False)
    gray = GMMTexture(n_levels=1, n_components=2, n_fit_patches=1000).fit(normal, progress=False)
    centre = (0, slice(20, 28), slice(20, 28))
    assert colour.predict(tinted)[0][centre].mean() > gray.predict(tinted)[0][centre].mean() + 3


def test_errors_say_what_to_do():
    with pytest.raises(NotFittedError, match="call fit first"):
        GMMTexture().level_maps(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="patch_size must be odd"):
        GMMTexture(patch_size=6).fit(torch.rand(2, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="use fewer levels or larger images"):
        GMMTexture(n_levels=4).fit(torch.rand(2, 3, 32, 32), progress=False)
