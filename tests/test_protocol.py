"""The contract every unsupervised method keeps, run over all of them (as scikit-learn's common tests)."""
import importlib

import numpy as np
import pytest
import sklearn.base
import torch

from mvtec_tutorial import benchmark, data, models
from mvtec_tutorial.models import base

# Tiny settings so each method fits and predicts 8 images of 64 x 64 in a few seconds on a CPU. A
# method without an entry here runs with its own "quick" schedule (for its first kind).
TINY = {
    "ConvAutoencoder": dict(loss="l2", work_size=64, epochs=2, n_views=16, batch_size=8),
    "AnoGAN": dict(work_size=16, base_channels=4, epochs=1, batch_size=4, search_steps=5),
    "FAnoGAN": dict(work_size=16, base_channels=4, epochs=1, batch_size=4, encoder_epochs=1),
    "FeatureDictionary": dict(n_clusters=10, n_fit_patches=1000),
    # Colour patches: the planted magenta square is an ordinary grey in grayscale.
    "GMMTexture": dict(n_levels=3, n_components=2, n_fit_patches=1000, grayscale=False),
    "PaDiM": dict(n_features=32, layers=("block4", "block10")),
    "PatchCore": dict(coreset_ratio=0.1),
}


def contract_methods():
    """Every method class the benchmark knows (each declares itself), name -> factory(seed)."""
    classes = {cls.__name__: cls for cls in benchmark.methods().values()}

    def factory(cls):
        settings = TINY.get(cls.__name__, cls.recommended_settings(cls.kinds()[0], schedule="quick"))
        return lambda seed: cls(**settings, seed=seed)
    return {name: factory(cls) for name, cls in classes.items()}


METHODS = contract_methods()


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


def _learned_state(method):
    """Every learned attribute as comparable numpy values (networks by their weights)."""
    def plain(value):
        if isinstance(value, torch.nn.Module):
            return {k: v.detach().cpu().numpy() for k, v in value.state_dict().items()}
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
        return value
    return {name: plain(value) for name, value in vars(method).items() if name.endswith("_")}


def _assert_same(a, b):
    assert a.keys() == b.keys() if isinstance(a, dict) else True
    if isinstance(a, dict):
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif hasattr(a, "get_params"):  # a nested estimator (e.g. a scikit-learn mixture)
        _assert_same({k: v for k, v in vars(a).items() if k.endswith("_")},
                     {k: v for k, v in vars(b).items() if k.endswith("_")})
    else:
        assert a == b or (a != a and b != b)


def test_predict_leaves_the_detector_unchanged(fitted, bottle):
    method = fitted[1]
    before = _learned_state(method)
    method.predict(bottle[1][:2])
    _assert_same(_learned_state(method), before)


def test_saved_and_loaded_detectors_predict_the_same(fitted, bottle, tmp_path):
    _, method, _, (maps, scores) = fitted
    loaded = models.AnomalyDetector.load(method.save(tmp_path / "detector.pt", note="kept"))
    assert type(loaded) is type(method) and loaded.get_params() == method.get_params()
    assert loaded.metadata_ == {"note": "kept"}
    again_maps, again_scores = loaded.predict(bottle[1])
    np.testing.assert_array_equal(again_maps, maps)
    np.testing.assert_array_equal(again_scores, scores)
    with pytest.raises(ValueError, match="load it with"):
        (models.PaDiM if type(method) is not models.PaDiM else models.MeanImage).load(tmp_path / "detector.pt")


def test_clone_gives_an_unfitted_copy_with_the_same_parameters(fitted):
    method = fitted[1]
    copy = sklearn.base.clone(method)
    assert copy.get_params() == method.get_params() and not _learned_state(copy)
    assert copy.set_params(seed=5).seed == 5


def test_fitting_and_predicting_leave_global_random_state_alone(fitted, bottle):
    make_method = fitted[0]
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    method = make_method(0).fit(bottle[0], progress=False)
    method.predict(bottle[1][:2])
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)


TOY_METHOD = """
import numpy as np
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds


class ToyDistance(AnomalyDetector):
    \"\"\"Distance of each pixel to the mean normal image: the whole method, in one file.\"\"\"

    benchmark_names = {"toy_distance": {}}
    schedules = same_for_kinds(quick={}, cpu={}, paper={})

    def _fit(self, images):
        self.mean_ = images.numpy().mean(axis=0)

    def _predict(self, images):
        return np.abs(images.numpy() - self.mean_).mean(axis=1), None
"""


def test_a_new_method_is_one_file(tmp_path, monkeypatch, bottle):
    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))  # registered for this test only
    (tmp_path / "toy_method.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    toy = importlib.import_module("toy_method")
    assert benchmark.methods()["toy_distance"] is toy.ToyDistance
    assert "toy_distance" in _cli_method_choices(monkeypatch)
    detector = contract_methods()["ToyDistance"](0).fit(bottle[0], progress=False)
    assert isinstance(detector, toy.ToyDistance)
    maps, scores = detector.predict(bottle[1])
    np.testing.assert_array_equal(scores, maps.max(axis=(1, 2)))  # the base class's default image score
    made = benchmark.make_detector("toy_distance", "bottle", schedule="quick")
    assert type(made) is toy.ToyDistance


def _cli_method_choices(monkeypatch):
    """The --methods choices the command line offers, read from its parser."""
    import argparse
    seen = {}
    original = argparse.ArgumentParser.add_argument

    def spy(self, *args, **kwargs):
        if "--methods" in args:
            seen["choices"] = list(kwargs["choices"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", spy)
    with pytest.raises(SystemExit):
        benchmark.main(["--help"])
    return seen["choices"]


def test_fit_sets_no_learned_state_before_fit_returns_and_the_run_flag_is_not_state(bottle):
    seen = {}

    class Watching(models.MeanImage):  # declares no benchmark name: not registered
        def _fit(self, images):
            seen["learned during _fit"] = [name for name in vars(self) if name.endswith("_")]
            super()._fit(images)

    detector = Watching().fit(bottle[0], progress=False)
    assert seen["learned during _fit"] == []
    assert sorted(name for name in vars(detector) if name.endswith("_")) == ["image_shape_", "mean_", "std_"]
    assert "Watching" not in {cls.__name__ for cls in benchmark.methods().values()}
