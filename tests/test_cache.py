"""The fit cache: a hit gives the identical fit, and anything that changes a fit misses."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mvtec_tutorial import cache, models, settings


@pytest.fixture
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.4


def test_a_hit_restores_exactly_what_fitting_learned(images, tmp_path):
    first = models.MeanImage(smoothing_sigma=1.0)
    record = cache.fit(first, images, directory=tmp_path, progress=False)
    assert not record.hit and record.path.is_file() and record.fit_seconds >= 0
    second = models.MeanImage(smoothing_sigma=1.0)
    again = cache.fit(second, images, directory=tmp_path, progress=False)
    assert again.hit and again.key == record.key and again.fit_seconds == record.fit_seconds
    np.testing.assert_array_equal(second.mean_, first.mean_)
    np.testing.assert_array_equal(second.predict(images)[0], first.predict(images)[0])


@pytest.mark.parametrize("change", ["setting", "seed", "images", "code"])
def test_anything_that_changes_a_fit_misses(images, tmp_path, monkeypatch, change):
    cache.fit(models.PaDiM(n_features=8, layers=("block4",), seed=0), images, directory=tmp_path, progress=False)
    detector, train = models.PaDiM(n_features=8, layers=("block4",), seed=0), images
    if change == "setting":
        detector.set_params(regularization=0.1)
    elif change == "seed":
        detector.set_params(seed=1)
    elif change == "images":
        train = images.clone()
        train[0, 0, 0, 0] += 0.01
    else:
        monkeypatch.setattr(cache, "source_hash", lambda: "edited code")
    assert not cache.fit(detector, train, directory=tmp_path, progress=False).hit
    assert len(list(tmp_path.glob("*.pt"))) == 2


GAN = dict(work_size=16, base_channels=4, epochs=1, batch_size=4, sample_every=1)


def test_a_detector_built_on_a_fitted_detector_is_cached_by_what_that_one_learned(images, tmp_path, capsys):
    gan = models.AnoGAN(**GAN).fit(images, progress=False)
    first = models.FAnoGAN(pretrained=gan, encoder_epochs=1, **GAN)
    record = cache.fit(first, images, directory=tmp_path, progress=False)
    again = models.FAnoGAN(pretrained=gan, encoder_epochs=1, **GAN)
    assert cache.fit(again, images, directory=tmp_path, progress=False).hit  # read back, not refused
    assert "ignoring" not in capsys.readouterr().out
    for name, tensor in first.encoder_.state_dict().items():
        torch.testing.assert_close(again.encoder_.state_dict()[name], tensor)
    # Same settings, trained on other images: another GAN, so another key.
    other_gan = models.AnoGAN(**GAN).fit(images.flip(-1), progress=False)
    other = models.FAnoGAN(pretrained=other_gan, encoder_epochs=1, **GAN)
    assert cache.fit_key(other, images) != record.key


def test_off_and_the_environment_choose_the_folder(images, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, "off")
    assert cache.cache_dir() is None
    record = cache.fit(models.MeanImage(), images, progress=False)
    assert record.path is None and not record.hit
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "fits"))
    assert cache.fit(models.MeanImage(), images, progress=False).path.parent == tmp_path / "fits"
    assert cache.fit(models.MeanImage(), images, progress=False).hit
    assert cache.clear() == 1 and [p.name for p in (tmp_path / "fits").iterdir()] == [cache.MANIFEST_NAME]


def test_a_damaged_entry_is_refitted_not_served(images, tmp_path, capsys):
    record = cache.fit(models.MeanImage(), images, directory=tmp_path, progress=False)
    record.path.write_bytes(b"not a torch file")
    again = cache.fit(models.MeanImage(), images, directory=tmp_path, progress=False)
    assert not again.hit and "ignoring the unreadable cached fit" in capsys.readouterr().out
    assert cache.fit(models.MeanImage(), images, directory=tmp_path, progress=False).hit


@pytest.mark.skipif(torch.cuda.is_available(), reason="device=None means CUDA here")
def test_the_key_ignores_how_the_cpu_is_named(images):
    assert cache.fit_key(models.MeanImage(device=None), images) == cache.fit_key(models.MeanImage(device="cpu"), images)


def _hash_of_copy(package: Path) -> str:
    spec = importlib.util.spec_from_file_location("copied_settings", package / "settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_hash()


def test_source_hash_follows_the_fitting_code_only(tmp_path):
    package = tmp_path / "mvtec_tutorial"
    shutil.copytree(Path(settings.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    original = _hash_of_copy(package)
    assert original == settings.source_hash() and len(original) == 64
    with open(package / "viz.py", "a") as file:
        file.write("# a plotting fix\n")
    assert _hash_of_copy(package) == original
    with open(package / "models" / "mean_image.py", "a") as file:
        file.write("# a model change\n")
    assert _hash_of_copy(package) != original


def test_fitting_never_imports_the_modules_the_hash_leaves_out():
    code = ("import sys, torch; from mvtec_tutorial import models; "
            "models.MeanImage().fit(torch.rand(2, 3, 8, 8), progress=False); "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('mvtec_tutorial'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    left_out = {f"mvtec_tutorial.{name.removesuffix('.py')}" for name in settings.NOT_RUN_BY_FIT}
    assert "mvtec_tutorial.models.mean_image" in loaded and not left_out & set(loaded)


def test_a_slow_prediction_is_kept_with_its_fit_and_served_exactly(tmp_path, monkeypatch):
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    make = lambda: models.AnoGAN(work_size=16, base_channels=4, epochs=1, batch_size=4, search_steps=3)
    first = make()
    fitted = cache.fit(first, images, directory=tmp_path, progress=False)
    computed = cache.predict(first, images[:3], fitted=fitted, directory=tmp_path, progress=False)
    second = make()
    refitted = cache.fit(second, images, directory=tmp_path, progress=False)
    monkeypatch.setattr(models.AnoGAN, "predict", lambda *args, **kwargs: pytest.fail("searched again"))
    served = cache.predict(second, images[:3], fitted=refitted, directory=tmp_path, progress=False)
    assert (computed.hit, served.hit) == (False, True) and served.seconds == computed.seconds
    np.testing.assert_array_equal(served.maps, computed.maps)
    np.testing.assert_array_equal(served.scores, computed.scores)
    monkeypatch.undo()
    other = cache.predict(second, images[3:], fitted=refitted, directory=tmp_path, progress=False)
    assert not other.hit  # other images, another entry
    assert len(list(tmp_path.glob("AnoGAN-*-predictions-*.pt"))) == 2


def test_fast_predictions_are_not_kept(images, tmp_path):
    detector = models.MeanImage()
    fitted = cache.fit(detector, images, directory=tmp_path, progress=False)
    assert not cache.predict(detector, images, fitted=fitted, directory=tmp_path, progress=False).hit
    assert not cache.predict(detector, images, fitted=fitted, directory=tmp_path, progress=False).hit
    assert sorted(path.name for path in tmp_path.iterdir()) == [cache.MANIFEST_NAME, fitted.path.name]


def test_clear_removes_the_kept_predictions_it_wrote(images, tmp_path, monkeypatch):
    monkeypatch.setattr(models.MeanImage, "cache_predictions", True)
    detector = models.MeanImage()
    fitted = cache.fit(detector, images, directory=tmp_path, progress=False)
    cache.predict(detector, images, fitted=fitted, directory=tmp_path, progress=False)
    assert len(list(tmp_path.glob("MeanImage-*-predictions-*.pt"))) == 1
    (tmp_path / "mine.pt").write_bytes(b"the user's")
    assert cache.clear(tmp_path) == 2
    assert sorted(path.name for path in tmp_path.iterdir()) == [cache.MANIFEST_NAME, "mine.pt"]
