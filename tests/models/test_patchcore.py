"""Tests for mvtec_tutorial.models.patchcore: coreset, search and reweighting against brute force, and the contract."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from mvtec_tutorial.metrics import image_scores
from mvtec_tutorial.models.base import NotFittedError
from mvtec_tutorial.models.patchcore import PatchCore, greedy_coreset, nearest_neighbors, reweighted_image_scores

SIZE = 64
@pytest.fixture(scope="module")
def fitted(data):
    return PatchCore(coreset_ratio=0.1, seed=0, device="cpu").fit(data[0], progress=False)


def points(seed, n=60, d=5):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)))  # float64: no near-ties from rounding


def coverage_radius(features, chosen):
    """Largest distance from any row to its nearest chosen row (what the coreset minimises)."""
    return cdist(features, features[chosen]).min(axis=1).max()


# ----------------------------------------------------------------------------- coreset
def test_coreset_has_the_requested_size_of_distinct_rows():
    chosen = greedy_coreset(points(0), 17, seed=3)
    assert chosen.dtype == torch.int64 and chosen.shape == (17,)
    assert len(set(chosen.tolist())) == 17 and 0 <= chosen.min() and chosen.max() < 60


def test_coreset_is_deterministic_for_a_seed():
    features = points(1, d=200).float()  # D > 128: the random projection is used
    torch.testing.assert_close(greedy_coreset(features, 20, seed=5), greedy_coreset(features, 20, seed=5))
    assert not torch.equal(greedy_coreset(features, 20, seed=5), greedy_coreset(features, 20, seed=6))


@pytest.mark.parametrize("seed", range(4))
def test_each_choice_is_the_farthest_point_from_those_chosen_before(seed):
    features = points(seed).numpy()
    chosen = greedy_coreset(torch.from_numpy(features), 15, projection_dim=None, seed=seed).tolist()
    expected = [chosen[0]]  # the start is the seeded random row; every later choice is forced
    for _ in range(14):
        expected.append(int(cdist(features, features[expected]).min(axis=1).argmax()))
    assert chosen == expected


def test_projection_to_at_least_the_dimension_changes_nothing():
    features = points(2)
    torch.testing.assert_close(greedy_coreset(features, 10, projection_dim=5, seed=0),
                               greedy_coreset(features, 10, projection_dim=None, seed=0))


def test_coverage_radius_shrinks_as_the_coreset_grows():
    features = points(3, n=200).numpy()
    chosen = greedy_coreset(torch.from_numpy(features), 200, projection_dim=None, seed=0).numpy()
    radii = [coverage_radius(features, chosen[:k]) for k in (1, 5, 20, 50, 100, 200)]
    assert all(later <= earlier for earlier, later in zip(radii, radii[1:]))
    assert radii[-1] == 0 and radii[3] < 0.6 * radii[0]
    # Greedy is a 2-approximation of the best radius, so it beats a random subset of the same size.
    random_subset = np.random.default_rng(0).choice(200, 50, replace=False)
    assert radii[3] < coverage_radius(features, random_subset)


def test_coreset_size_out_of_range_raises():
    with pytest.raises(ValueError, match="n_select must be between 1 and the 60 rows"):
        greedy_coreset(points(0), 61)


# ----------------------------------------------------------------------------- search
@pytest.mark.parametrize("k", [1, 3])
def test_nearest_neighbors_match_brute_force_and_chunking_changes_nothing(k):
    rng = np.random.default_rng(k)
    queries, bank = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(40, 6)).astype(np.float32)
    full = cdist(queries, bank)
    expected_indices = np.argsort(full, axis=1)[:, :k]
    unchunked = nearest_neighbors(torch.from_numpy(queries), torch.from_numpy(bank), k=k, chunk_size=1000)
    chunked = nearest_neighbors(torch.from_numpy(queries), torch.from_numpy(bank), k=k, chunk_size=7)
    for distances, indices in (unchunked, chunked):
        np.testing.assert_array_equal(indices.numpy(), expected_indices)
        np.testing.assert_allclose(distances.numpy(), np.take_along_axis(full, expected_indices, 1), rtol=1e-4)
    torch.testing.assert_close(chunked, unchunked)


def test_nearest_neighbors_reject_k_larger_than_the_bank():
    with pytest.raises(ValueError, match="k must be between 1 and the 2 rows"):
        nearest_neighbors(torch.zeros(3, 2), torch.zeros(2, 2), k=3)


# ----------------------------------------------------------------------------- image score
def test_reweighted_score_on_a_hand_case():
    """Bank 0, 1, 3, 10 on a line; patches at 0.5 and 7.5. The worst patch is 7.5 (s* = 2.5 to m* = 10);
    with b = 2, N_b(m*) = {10, 3} at distances 2.5 and 4.5 from the patch:
    s = (1 - e^2.5 / (e^2.5 + e^4.5)) * 2.5 = 2.5 e^2 / (1 + e^2)."""
    bank = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    patches = torch.tensor([[[0.5], [7.5]]])
    score = reweighted_image_scores(patches, torch.tensor([[0.5, 2.5]]), torch.tensor([[0, 3]]), bank, n_neighbors=2)
    assert score.item() == pytest.approx(2.5 * math.exp(2) / (1 + math.exp(2)))
    # b = 3 adds the bank point 1 (distance 6.5): s = 2.5 (1 - e^2.5 / (e^2.5 + e^4.5 + e^6.5)).
    score = reweighted_image_scores(patches, torch.tensor([[0.5, 2.5]]), torch.tensor([[0, 3]]), bank, n_neighbors=3)
    assert score.item() == pytest.approx(2.5 * (1 - 1 / (1 + math.exp(2) + math.exp(4))))


def test_reweighting_needs_two_neighbors():
    with pytest.raises(ValueError, match="n_neighbors must be between 2 and the 4 rows"):
        reweighted_image_scores(torch.zeros(1, 1, 1), torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.int64),
                                torch.zeros(4, 1), n_neighbors=1)


# ----------------------------------------------------------------------------- method
def test_fit_returns_self_and_keeps_the_coreset_fraction(fitted, data):
    assert fitted.grid_size_ == (SIZE // 8, SIZE // 8)  # default layers: strides 8 and 16
    assert fitted.n_patches_ == 8 * 8 * 8
    assert fitted.memory_bank_.shape == (round(0.1 * fitted.n_patches_), 40 + 112)
    model = PatchCore(coreset_ratio=0.1, device="cpu")
    assert model.fit(data[0][:2], progress=False) is model


def test_patch_features_average_each_layer_over_existing_3x3_neighbours(fitted, data):
    features = fitted.extractor_.extract(data[1][:1], progress=False)["block4"][0].numpy()  # (40, 8, 8)
    expected = np.empty_like(features)
    for row in range(8):
        for col in range(8):
            expected[:, row, col] = features[:, max(row - 1, 0):row + 2, max(col - 1, 0):col + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(fitted._patch_features(data[1][:1])[0, :40].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_full_memory_bank_gives_zero_distance_on_training_images(data):
    model = PatchCore(coreset_ratio=1.0, smoothing_sigma=0, device="cpu").fit(data[0][:3], progress=False)
    assert len(model.memory_bank_) == model.n_patches_
    maps, _ = model.predict(data[0][:3])
    assert np.abs(maps).max() < 1e-2 * np.abs(model.memory_bank_.numpy()).max()


def test_predict_before_fit_raises(data):
    with pytest.raises(NotFittedError, match="call fit first"):
        PatchCore().predict(data[1])


def test_planted_defect_scores_highest_and_is_localised(fitted, data):
    _, test, masks = data
    maps, scores = fitted.predict(test)
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32 and scores.dtype == np.float32
    assert scores.argmax() == 0
    assert roc_auc_score(masks.ravel(), maps.ravel()) > 0.9


def test_image_score_is_the_top_of_the_map_or_the_papers_patch_score(fitted, data):
    maps, scores = fitted.predict(data[1])
    np.testing.assert_allclose(scores, image_scores(maps, 0.05))  # the default, top 5 % of the map
    paper = clone(fitted).set_params(top_k_fraction=None).fit(data[0], progress=False)
    paper_maps, paper_scores = paper.predict(data[1])
    np.testing.assert_array_equal(paper_maps, maps)  # only the image score changes
    with torch.inference_mode():
        patches = paper._patch_features(data[1]).permute(0, 2, 3, 1).reshape(len(data[1]), -1, 152)
    distances, nearest = nearest_neighbors(patches.reshape(-1, 152), paper.memory_bank_)
    expected = reweighted_image_scores(patches, distances.reshape(len(patches), -1),
                                       nearest.reshape(len(patches), -1), paper.memory_bank_)
    np.testing.assert_allclose(paper_scores, expected.numpy(), rtol=1e-5)
    plain_max = clone(paper).set_params(n_reweight_neighbors=None).fit(data[0], progress=False).predict(data[1])[1]
    np.testing.assert_allclose(plain_max, distances.reshape(len(patches), -1).max(dim=1).values.numpy(), rtol=1e-5)


def test_random_coreset_is_a_seeded_subset_of_the_full_bank(data):
    full = PatchCore(coreset_ratio=1.0, device="cpu").fit(data[0], progress=False)
    random = [PatchCore(coreset_ratio=0.1, coreset_method="random", seed=seed, device="cpu").fit(data[0], progress=False)
              for seed in (0, 0, 1)]
    assert len(random[0].memory_bank_) == round(0.1 * full.n_patches_)
    torch.testing.assert_close(random[0].memory_bank_, random[1].memory_bank_)
    assert not torch.equal(random[0].memory_bank_, random[2].memory_bank_)
    is_training_patch = (random[2].memory_bank_[:, None] == full.memory_bank_[None]).all(dim=-1).any(dim=1)
    assert is_training_patch.all()


def test_same_seed_same_output(fitted, data):
    again = PatchCore(coreset_ratio=0.1, seed=0, device="cpu").fit(data[0], progress=False)
    torch.testing.assert_close(again.memory_bank_, fitted.memory_bank_)
    np.testing.assert_array_equal(again.predict(data[1])[1], fitted.predict(data[1])[1])


@pytest.mark.parametrize(("options", "message"), [
    ({"coreset_ratio": 0.0}, r"coreset_ratio must lie in \(0, 1\]"),
    ({"neighborhood_size": 2}, "neighborhood_size must be a positive odd number"),
    ({"n_reweight_neighbors": 1}, "n_reweight_neighbors must be at least 2"),
    ({"coreset_ratio": 1e-4, "top_k_fraction": None}, "the coreset keeps 1 of 512 patches"),
    ({"top_k_fraction": 1.5}, r"top_k_fraction must lie in \(0, 1\]"),
    ({"coreset_method": "kmeans"}, "coreset_method must be one of greedy, random"),
])
def test_invalid_options_raise(data, options, message):
    with pytest.raises(ValueError, match=message):
        PatchCore(device="cpu", **options).fit(data[0], progress=False)


def test_wrong_image_size_raises(fitted, data):
    with pytest.raises(ValueError, match="load test images at the training image_size"):
        fitted.predict(data[1][:, :, :32, :32])
