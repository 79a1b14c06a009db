"""The contract every unsupervised method keeps, run over all of them (as scikit-learn's common tests)."""
import numpy as np
import pytest
import torch

from mvtec_tutorial import data, models

# Tiny settings so each method fits and predicts 8 images of 64 x 64 in a few seconds on a CPU.
METHODS = {
    "MeanImage": lambda seed: models.MeanImage(seed=seed),
    "PaDiM": lambda seed: models.PaDiM(n_features=32, layers=("block4", "block10"), seed=seed),
    "PatchCore": lambda seed: models.PatchCore(coreset_ratio=0.1, seed=seed),
}


@pytest.fixture(scope="module")
def bottle(synthetic_root):
    train = data.MVTecAD(synthetic_root, "bottle", "train", image_size=64)
    test_images, masks, labels, _ = data.stack(data.MVTecAD(synthetic_root, "bottle", "test", image_size=64),
                                               progress=False)
    return train, test_images, masks, labels


@pytest.fixture(params=sorted(METHODS))
def make_method(request):
    return METHODS[request.param]


def test_predict_before_fit_says_call_fit_first(make_method):
    with pytest.raises(models.NotFittedError, match="call fit first"):
        make_method(0).predict(torch.rand(1, 3, 64, 64))


def test_constructor_only_stores_parameters(make_method):
    method = make_method(0)
    assert not [name for name in vars(method) if name.endswith("_")]
    assert method.seed == 0


def test_fit_returns_self_and_predict_keeps_the_contract(make_method, bottle):
    train, images, masks, labels = bottle
    method = make_method(0)
    assert method.fit(train, progress=False) is method
    maps, scores = method.predict(images)
    assert maps.shape == masks.shape and maps.dtype == np.float32
    assert scores.shape == labels.shape and scores.dtype == np.float32
    assert np.isfinite(maps).all() and np.isfinite(scores).all()


def test_same_seed_same_numbers_and_refit_forgets(make_method, bottle):
    train, images, _, _ = bottle
    first = make_method(3).fit(train, progress=False).predict(images)
    second = make_method(3).fit(train, progress=False).predict(images)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    refit = make_method(3)
    refit.fit(torch.rand(8, 3, 64, 64), progress=False)
    refit.fit(train, progress=False)
    np.testing.assert_array_equal(refit.predict(images)[1], first[1])


def test_planted_defect_scores_highest(make_method, bottle):
    train, images, _, _ = bottle
    method = make_method(0).fit(train, progress=False)
    good = images[:1].clone()
    planted = good.clone()
    planted[:, :, 20:36, 20:36] = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # a magenta square
    maps, scores = method.predict(torch.cat([good, planted]))
    assert scores[1] > scores[0]
    square = np.zeros(maps.shape[1:], dtype=bool)
    square[20:36, 20:36] = True
    assert maps[1][square].mean() > maps[1][~square].mean()


def test_bad_images_get_clear_errors(make_method, bottle):
    train = bottle[0]
    method = make_method(0).fit(train, progress=False)
    with pytest.raises(ValueError, match="expected images of shape \\(N, 3, H, W\\)"):
        method.predict(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="expected values in \\[0, 1\\]"):
        method.predict(torch.rand(2, 3, 64, 64) * 255)
