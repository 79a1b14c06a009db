"""The contract every unsupervised method keeps, run over all of them (as scikit-learn's common tests)."""
import numpy as np
import pytest
import torch

from mvtec_tutorial import data, models

# Tiny settings so each method fits and predicts 8 images of 64 x 64 in a few seconds on a CPU.
METHODS = {
    "MeanImage": lambda seed: models.MeanImage(seed=seed),
    "ConvAutoencoder": lambda seed: models.ConvAutoencoder(loss="l2", resolution=64, epochs=2, n_patches=16,
                                                           batch_size=8, seed=seed),
    "AnoGAN": lambda seed: models.AnoGAN(image_size=16, base_channels=4, epochs=1, batch_size=4, search_steps=5,
                                         seed=seed),
    "FAnoGAN": lambda seed: models.FAnoGAN(image_size=16, base_channels=4, epochs=1, batch_size=4, encoder_epochs=1,
                                           seed=seed),
    "FeatureDictionary": lambda seed: models.FeatureDictionary(n_clusters=10, n_fit_patches=1000, seed=seed),
    # Colour patches: the planted magenta square is an ordinary grey in grayscale.
    "GMMTexture": lambda seed: models.GMMTexture(n_levels=3, n_components=2, n_fit_patches=1000, grayscale=False,
                                                 seed=seed),
    "VariationModel": lambda seed: models.VariationModel(seed=seed),
    "PaDiM": lambda seed: models.PaDiM(n_features=32, layers=("block4", "block10"), seed=seed),
    "PatchCore": lambda seed: models.PatchCore(coreset_ratio=0.1, seed=seed),
}


@pytest.fixture(scope="module")
def bottle(synthetic_root):
    train = data.MVTecAD(synthetic_root, "bottle", "train", image_size=64)
    test_images, masks, labels, _ = data.stack(data.MVTecAD(synthetic_root, "bottle", "test", image_size=64),
                                               progress=False)
    return train, test_images, masks, labels


@pytest.fixture(scope="module", params=sorted(METHODS))
def fitted(request, bottle):
    """One fit per method (seed 3), shared by the tests below: (factory, method, fit's return, predictions)."""
    make_method = METHODS[request.param]
    method = make_method(3)
    returned = method.fit(bottle[0], progress=False)
    return make_method, method, returned, method.predict(bottle[1])


def test_predict_before_fit_says_call_fit_first(fitted):
    with pytest.raises(models.NotFittedError, match="call fit first"):
        fitted[0](0).predict(torch.rand(1, 3, 64, 64))


def test_constructor_only_stores_parameters(fitted):
    method = fitted[0](0)
    assert not [name for name in vars(method) if name.endswith("_")]
    assert method.seed == 0


def test_fit_returns_self_and_predict_keeps_the_contract(fitted, bottle):
    _, method, returned, (maps, scores) = fitted
    _, _, masks, labels = bottle
    assert returned is method
    assert maps.shape == masks.shape and maps.dtype == np.float32
    assert scores.shape == labels.shape and scores.dtype == np.float32
    assert np.isfinite(maps).all() and np.isfinite(scores).all()


def test_same_seed_same_numbers_and_refit_forgets(fitted, bottle):
    make_method, _, _, (maps, scores) = fitted
    train, images, _, _ = bottle
    refit = make_method(3)
    refit.fit(torch.rand(8, 3, 64, 64), progress=False)  # learned state from this must not survive
    refit.fit(train, progress=False)
    again_maps, again_scores = refit.predict(images)
    np.testing.assert_array_equal(again_maps, maps)
    np.testing.assert_array_equal(again_scores, scores)


def test_planted_defect_scores_highest(fitted, bottle):
    method = fitted[1]
    images = bottle[1]
    good = images[:1].clone()
    planted = good.clone()
    planted[:, :, 20:36, 20:36] = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # a magenta square
    maps, scores = method.predict(torch.cat([good, planted]))
    assert scores[1] > scores[0]
    square = np.zeros(maps.shape[1:], dtype=bool)
    square[20:36, 20:36] = True
    assert maps[1][square].mean() > maps[1][~square].mean()


def test_bad_images_get_clear_errors(fitted):
    method = fitted[1]
    with pytest.raises(ValueError, match="expected images of shape \\(N, 3, H, W\\)"):
        method.predict(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="expected values in \\[0, 1\\]"):
        method.predict(torch.rand(2, 3, 64, 64) * 255)
