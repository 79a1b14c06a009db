"""Tests for mvtec_tutorial.models.padim: the Gaussian math against scipy, and the method's contract."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from mvtec_tutorial.backbones import local_average
from mvtec_tutorial.models.base import NotFittedError
from mvtec_tutorial.models.padim import PaDiM, fit_gaussians, mahalanobis

SIZE = 64
@pytest.fixture(scope="module")
def fitted(data):
    return PaDiM(n_features=50, seed=0, device="cpu").fit(data[0], progress=False)


# ----------------------------------------------------------------------------- math
@pytest.mark.parametrize("seed", range(3))
def test_mahalanobis_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n_images, n_features, n_positions = 12, 4, 3
    train = rng.normal(size=(n_images, n_features, n_positions)) * rng.uniform(0.5, 2, size=(1, n_features, 1))
    test = rng.normal(size=(5, n_features, n_positions))
    mean, inv_covariance = fit_gaussians(torch.from_numpy(train), regularization=0.01)
    got = mahalanobis(torch.from_numpy(test).float(), mean, inv_covariance)
    for p in range(n_positions):
        samples = train[:, :, p]
        inverse = np.linalg.inv(np.cov(samples, rowvar=False) + 0.01 * np.eye(n_features))
        np.testing.assert_allclose(mean[p].numpy(), samples.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(inv_covariance[p].numpy(), inverse, rtol=1e-4, atol=1e-6)
        expected = [scipy_mahalanobis(x, samples.mean(axis=0), inverse) for x in test[:, :, p]]
        np.testing.assert_allclose(got[:, p].numpy(), expected, rtol=1e-4)


def test_mahalanobis_is_chunk_independent():
    """More images than one chunk (16) give the same distances as scoring them one by one."""
    rng = np.random.default_rng(0)
    mean, inv_covariance = fit_gaussians(torch.from_numpy(rng.normal(size=(10, 3, 5))).float())
    test = torch.from_numpy(rng.normal(size=(37, 3, 5))).float()
    one_by_one = torch.cat([mahalanobis(x[None], mean, inv_covariance) for x in test])
    torch.testing.assert_close(mahalanobis(test, mean, inv_covariance), one_by_one)


def test_fit_gaussians_needs_two_images():
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        fit_gaussians(torch.zeros(1, 3, 4))


# ----------------------------------------------------------------------------- method
@pytest.mark.parametrize("neighborhood_size", [1, 3])
def test_embedding_selects_the_same_channels_as_average_upsample_then_select(data, neighborhood_size):
    """Choosing channels before averaging and upsampling (memory saving) equals choosing them last."""
    model = PaDiM(n_features=50, neighborhood_size=neighborhood_size, device="cpu").fit(data[0], progress=False)
    features = model.extractor_.extract(data[1], progress=False)
    everything = torch.cat([F.interpolate(local_average(features[layer], neighborhood_size), size=model.grid_size_,
                                          mode="bilinear", align_corners=False)
                            for layer in model.extractor_.layers], dim=1)
    torch.testing.assert_close(model._embed(data[1]), everything[:, model.channel_indices_])


def test_image_score_is_the_maximum_or_the_mean_of_the_highest_pixels(data):
    maximum = PaDiM(n_features=50, top_k_fraction=None, device="cpu").fit(data[0], progress=False)
    maps, scores = maximum.predict(data[1])
    np.testing.assert_allclose(scores, maps.reshape(len(maps), -1).max(axis=1))
    top_k_maps, top_k_scores = clone(maximum).set_params(top_k_fraction=0.01).fit(data[0], progress=False).predict(data[1])
    np.testing.assert_array_equal(top_k_maps, maps)  # only the image score changes
    k = round(0.01 * SIZE * SIZE)
    expected = np.sort(maps.reshape(len(maps), -1), axis=1)[:, -k:].mean(axis=1)
    np.testing.assert_allclose(top_k_scores, expected, rtol=1e-5)
    assert (top_k_scores <= scores).all()


@pytest.mark.parametrize(("options", "message"), [
    ({"neighborhood_size": 2}, "neighborhood_size must be a positive odd number"),
    ({"top_k_fraction": 0.0}, r"top_k_fraction must lie in \(0, 1\]"),
])
def test_invalid_options_raise(data, options, message):
    with pytest.raises(ValueError, match=message):
        PaDiM(device="cpu", **options).fit(data[0], progress=False)


def test_fit_returns_self_and_learns_one_gaussian_per_position(data):
    model = PaDiM(n_features=20, device="cpu")
    assert model.fit(data[0], progress=False) is model
    n_positions = model.grid_size_[0] * model.grid_size_[1]
    assert model.grid_size_ == (SIZE // 4, SIZE // 4)  # finest default layer has stride 4
    assert model.mean_.shape == (n_positions, 20) and model.inv_covariance_.shape == (n_positions, 20, 20)
    assert len(set(model.channel_indices_.tolist())) == 20


def test_predict_before_fit_raises(data):
    with pytest.raises(NotFittedError, match="call fit first"):
        PaDiM().predict(data[1])


def test_planted_defect_scores_highest_and_is_localised(fitted, data):
    _, test, masks = data
    maps, scores = fitted.predict(test)
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32 and scores.dtype == np.float32
    assert scores.argmax() == 0
    assert roc_auc_score(masks.ravel(), maps.ravel()) > 0.9


def test_same_seed_same_output_other_seed_other_channels(fitted, data):
    again = PaDiM(n_features=50, seed=0, device="cpu").fit(data[0], progress=False)
    np.testing.assert_array_equal(again.predict(data[1])[0], fitted.predict(data[1])[0])
    other = PaDiM(n_features=50, seed=1, device="cpu").fit(data[0][:4], progress=False)
    assert not torch.equal(other.channel_indices_, fitted.channel_indices_)


def test_wrong_image_size_and_too_many_features_raise(fitted, data):
    with pytest.raises(ValueError, match="load test images at the training image_size"):
        fitted.predict(data[1][:, :, :32, :32])
    with pytest.raises(ValueError, match="n_features must be between 1 and the 176 channels"):
        PaDiM(n_features=500, device="cpu").fit(data[0], progress=False)
