"""Tests for mvtec_tutorial.synthetic: layout, exact masks, determinism, difficulty, manifest."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from mvtec_tutorial.synthetic import (
    DEFECT_TYPES,
    MANIFEST_NAME,
    SYNTHETIC_CATEGORIES,
    make_dataset,
    render_sample,
)

TINY = dict(seed=0, image_size=64, n_train=4, n_test_good=2, n_test_per_defect=2, progress=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), **TINY)


def files(folder):
    """Relative path -> bytes for every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load(path):
    return np.asarray(Image.open(path))


def test_layout_is_the_official_mvtec_one(root):
    names = [f"{i:03d}.png" for i in range(2)]
    assert sorted(p.name for p in root.iterdir()) == sorted(SYNTHETIC_CATEGORIES)
    for category, defect_types in DEFECT_TYPES.items():
        folder = root / category
        assert sorted(p.name for p in (folder / "train" / "good").iterdir()) == [f"{i:03d}.png" for i in range(4)]
        assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(["good", *defect_types])
        assert sorted(p.name for p in (folder / "ground_truth").iterdir()) == sorted(defect_types)
        assert sorted(p.name for p in (folder / "test" / "good").iterdir()) == names
        for defect_type in defect_types:
            assert sorted(p.name for p in (folder / "test" / defect_type).iterdir()) == names
            for name in names:
                image = Image.open(folder / "test" / defect_type / name)
                mask = Image.open(folder / "ground_truth" / defect_type / name.replace(".png", "_mask.png"))
                assert (image.mode, image.size, mask.mode, mask.size) == ("RGB", (64, 64), "L", (64, 64))
                values = np.unique(np.asarray(mask))
                assert values.tolist() == [0, 255], f"{category}/{defect_type}/{name}: mask must be 0/255, nonempty"
        readme = (folder / "readme.txt").read_text()
        assert "synthetic" in readme.lower() and "mvtec_tutorial" in readme and "seed=0" in readme


def test_files_are_the_rendered_arrays(root):
    image, mask = render_sample("wood", "scratch", seed=0, index=1, image_size=64)
    assert np.array_equal(load(root / "wood" / "test" / "scratch" / "001.png"), image)
    assert np.array_equal(load(root / "wood" / "ground_truth" / "scratch" / "001_mask.png"), mask * 255)
    train, no_mask = render_sample("wood", seed=0, split="train", index=3, image_size=64)
    assert np.array_equal(load(root / "wood" / "train" / "good" / "003.png"), train) and not no_mask.any()


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_mask_is_exactly_the_pixels_the_defect_changed(category):
    # The same image without the defect (same scene, lighting, noise) is the independent reference:
    # the pixels that differ from it must be exactly the ground-truth mask.
    for defect_type in DEFECT_TYPES[category]:
        for index in range(3):
            image, mask = render_sample(category, defect_type, index=index, image_size=48)
            clean, _ = render_sample(category, defect_type, index=index, image_size=48, plant_defect=False)
            changed = np.any(image != clean, axis=-1)
            assert np.array_equal(changed, mask), f"{category}/{defect_type}/{index}"


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_defects_cover_about_a_fifth_to_five_percent_of_the_image(category):
    for defect_type in DEFECT_TYPES[category]:
        fractions = [render_sample(category, defect_type, index=i, image_size=128)[1].mean() for i in range(4)]
        assert 0.001 < min(fractions) and max(fractions) < 0.06, (defect_type, fractions)


def test_same_seed_gives_identical_files_whatever_else_is_built(root, tmp_path):
    # Only pill, fewer training images: each file has its own generator, so files stay identical.
    alone = make_dataset(tmp_path / "again", "pill", **{**TINY, "n_train": 2})
    expected = files(root / "pill")
    rebuilt = files(alone / "pill")
    assert rebuilt.keys() == expected.keys() - {"train/good/002.png", "train/good/003.png"}
    assert all(rebuilt[name] == expected[name] for name in rebuilt if name != MANIFEST_NAME)


def test_another_seed_gives_other_images(root, tmp_path):
    other = make_dataset(tmp_path, "bottle", **{**TINY, "seed": 1})
    before, after = files(root / "bottle"), files(other / "bottle")
    assert all(before[name] != after[name] for name in before if name.endswith(".png") and "ground_truth" not in name)


def test_good_images_vary_in_pose_and_lighting():
    images = np.stack([render_sample("bottle", split="train", index=i, image_size=64)[0] for i in range(4)])
    assert len({image.tobytes() for image in images}) == 4
    assert np.ptp(images.mean(axis=(1, 2, 3))) > 2  # global brightness differs by more than 2 grey levels


def test_per_pixel_baseline_is_imperfect_but_better_than_chance():
    # Per-pixel mean/std of the training images, z-score, image score = max: fine for aligned
    # objects with strong defects, near chance on textures whose pattern shifts from image to image.
    size, n_train, n_good, n_per_defect = 64, 20, 8, 4
    auroc = {}
    for category, defect_types in DEFECT_TYPES.items():
        train = np.stack([render_sample(category, split="train", index=i, image_size=size)[0] for i in range(n_train)])
        mean, std = train.mean(axis=0), train.std(axis=0) + 1.0
        test = [("good", i) for i in range(n_good)] + [(d, i) for d in defect_types for i in range(n_per_defect)]
        scores = [np.max(np.abs(render_sample(category, d, index=i, image_size=size)[0] - mean) / std) for d, i in test]
        auroc[category] = roc_auc_score([d != "good" for d, _ in test], scores)
    assert np.mean(list(auroc.values())) > 0.65, auroc
    assert auroc["bottle"] > 0.85, auroc
    assert auroc["carpet"] < 0.9, auroc


def test_existing_build_with_same_parameters_is_reused(tmp_path):
    options = {**TINY, "n_train": 1, "n_test_good": 1, "n_test_per_defect": 1, "image_size": 32}
    make_dataset(tmp_path, "carpet", **options)
    marker = tmp_path / "carpet" / "marker.txt"
    marker.write_text("kept")
    make_dataset(tmp_path, "carpet", **options)
    assert marker.exists()
    manifest = json.loads((tmp_path / "carpet" / MANIFEST_NAME).read_text())
    assert (manifest["seed"], manifest["image_size"], manifest["defect_types"]) == (0, 32, list(DEFECT_TYPES["carpet"]))


def test_other_parameters_need_overwrite(tmp_path):
    options = {**TINY, "n_train": 1, "n_test_good": 1, "n_test_per_defect": 1, "image_size": 32}
    make_dataset(tmp_path, "carpet", **options)
    marker = tmp_path / "carpet" / "marker.txt"
    marker.write_text("the user's: kept by a rebuild")
    with pytest.raises(FileExistsError, match="other parameters.*pass overwrite=True"):
        make_dataset(tmp_path, "carpet", **{**options, "seed": 3})
    assert marker.exists()
    make_dataset(tmp_path, "carpet", **{**options, "seed": 3}, overwrite=True)
    assert marker.exists()
    assert json.loads((tmp_path / "carpet" / MANIFEST_NAME).read_text())["seed"] == 3


def test_folder_not_built_here_is_never_touched(tmp_path):
    real = tmp_path / "bottle" / "train" / "good"
    real.mkdir(parents=True)
    (real / "000.png").write_bytes(b"real data")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="no synthetic.json.*pick another root"):
            make_dataset(tmp_path, "bottle", image_size=32, overwrite=overwrite, progress=False)
    assert (real / "000.png").read_bytes() == b"real data"


def test_leftover_of_a_killed_build_is_removed(tmp_path):
    for name in (".pill.partial", ".pill.partial-999999999"):  # old layout, and a process that no longer runs
        (tmp_path / name).mkdir()
        (tmp_path / name / "junk.png").write_bytes(b"junk")
    make_dataset(tmp_path, "pill", **{**TINY, "n_train": 1, "n_test_good": 1, "n_test_per_defect": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["pill"] and not (tmp_path / "pill" / "junk.png").exists()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def fail_on_the_third_image(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return render_sample(*args, **kwargs)

    monkeypatch.setattr("mvtec_tutorial.synthetic.render_sample", fail_on_the_third_image)
    with pytest.raises(RuntimeError, match="disk full"):
        make_dataset(tmp_path, "pill", **TINY)
    assert list(tmp_path.iterdir()) == []


def test_two_processes_building_one_root_at_once_both_get_the_whole_set(tmp_path):
    # Two notebooks or test workers may build the default root at the same moment; before each
    # process had its own scratch folder, one deleted the other's half-written files.
    script = ("import sys; from mvtec_tutorial.synthetic import make_dataset; "
              "make_dataset(sys.argv[1], seed=0, image_size=32, n_train=6, n_test_good=2, n_test_per_defect=2, "
              "progress=False)")
    workers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(2)]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0]
    alone = make_dataset(tmp_path / "alone", seed=0, image_size=32, n_train=6, n_test_good=2, n_test_per_defect=2,
                         progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*SYNTHETIC_CATEGORIES, "alone"])
    for category in SYNTHETIC_CATEGORIES:
        assert files(tmp_path / category) == files(alone / category)


def test_progress_bar_names_the_category(tmp_path, capsys):
    make_dataset(tmp_path, "wood", **{**TINY, "n_train": 1, "n_test_good": 1, "n_test_per_defect": 1,
                                       "progress": True})
    assert "synthetic wood" in capsys.readouterr().err


@pytest.mark.parametrize(("arguments", "message"), [
    (dict(categories="botle"), r"unknown or no categories \['botle'\]; known: carpet, wood, bottle, pill"),
    (dict(categories=[]), "known: carpet"),
    (dict(image_size=16), "image_size must be an integer >= 32, got 16"),
    (dict(n_train=0), "n_train must be an integer >= 1"),
    (dict(n_test_per_defect=2.5), "n_test_per_defect must be an integer >= 1"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(seed=True), "seed must be an integer >= 0, got True"),
])
def test_bad_arguments_are_rejected_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        make_dataset(tmp_path / "root", **arguments, progress=False)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (dict(category="cable"), "unknown category 'cable'; known: carpet, wood, bottle, pill"),
    (dict(category="pill", split="val"), "unknown split 'val'"),
    (dict(category="pill", defect_type="crack", split="train"), "not available for 'pill' train images; known: good"),
    (dict(category="pill", defect_type="hole"), "known: good, color, contamination, crack"),
    (dict(category="pill", index=-1), "index must be an integer >= 0, got -1"),
    (dict(category="pill", image_size=31), "image_size must be an integer >= 32"),
])
def test_render_sample_rejects_unknown_names(arguments, message):
    with pytest.raises(ValueError, match=message):
        render_sample(**arguments)
