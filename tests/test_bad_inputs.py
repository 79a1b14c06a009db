"""Bad input, one test per case: each is handled correctly or fails naming the file and the fix.

Like torchvision's dataset tests, every data case writes a tiny fake MVTec AD tree into
``tmp_path`` (:func:`fake_tree`, 8 x 8 px) and then damages one file; nothing is downloaded
(the download tests replace ``urllib.request.urlopen``).
"""
import io
import os
import struct
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from mvtec_tutorial import data, metrics, thresholds

SIZE = 8
CATEGORY, DEFECT = "bottle", "crack"
#: The defect every fake mask marks: a 3 x 3 square.
SQUARE = np.zeros((SIZE, SIZE), dtype=bool)
SQUARE[2:5, 3:6] = True


def fake_tree(root: Path, *, n_train: int = 2, n_good: int = 1, n_defective: int = 2) -> Path:
    """Write ``root/bottle/{train/good, test/good, test/crack, ground_truth/crack}`` with random images."""
    rng = np.random.default_rng(0)
    folders = [("train", "good", n_train), ("test", "good", n_good), ("test", DEFECT, n_defective)]
    for split, folder, count in folders:
        for index in range(count):
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            save(image, root / CATEGORY / split / folder / f"{index:03d}.png")
    for index in range(n_defective):
        save(SQUARE.astype(np.uint8) * 255, mask_path(root, index))
    return root


def save(array_or_image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    image.save(path)
    return path


def image_path(root: Path, index: int = 0, folder: str = DEFECT, split: str = "test") -> Path:
    return root / CATEGORY / split / folder / f"{index:03d}.png"


def mask_path(root: Path, index: int = 0) -> Path:
    return root / CATEGORY / "ground_truth" / DEFECT / f"{index:03d}_mask.png"


def write_png_16_bit_rgb(path: Path, values: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): signature, IHDR, IDAT, IEND."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[row].astype(">u2").tobytes() for row in range(height))  # filter 0 per row

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # bit depth 16, colour type 2 = RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def first_item(root: Path, split: str = "train", **kwargs) -> dict:
    return data.MVTecAD(root, CATEGORY, split, **{"image_size": None, **kwargs})[0]


# ----------------------------------------------------------------------------- images
def test_16_bit_grayscale_image_is_scaled_not_white(tmp_path):
    root = fake_tree(tmp_path)
    values = np.linspace(0, 65535, SIZE * SIZE).astype(np.uint16).reshape(SIZE, SIZE)
    save(values, image_path(root, folder="good", split="train"))
    assert Image.open(image_path(root, folder="good", split="train")).mode.startswith("I")
    image = first_item(root)["image"].numpy()
    np.testing.assert_allclose(image, np.broadcast_to(values / 65535, image.shape), atol=1 / 255)


def test_16_bit_rgb_image_is_scaled(tmp_path):
    root = fake_tree(tmp_path)
    values = np.random.default_rng(1).integers(0, 65536, (SIZE, SIZE, 3)).astype(np.uint16)
    write_png_16_bit_rgb(image_path(root, folder="good", split="train"), values)
    image = first_item(root)["image"].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(image, values / 65535, atol=1 / 255)


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA"])
def test_palette_and_alpha_images_keep_their_colours(tmp_path, mode):
    root = fake_tree(tmp_path)
    colours = np.array([[0, 0, 0], [200, 30, 30], [20, 180, 60], [255, 255, 255]], dtype=np.uint8)
    rgb = colours[np.random.default_rng(2).integers(0, 4, (SIZE, SIZE))]
    if mode == "LA":
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)  # gray: every channel equal
    alpha = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
    image = {"P": Image.fromarray(rgb).quantize(colors=4),
             "LA": Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"),
             "RGBA": Image.fromarray(np.dstack([rgb, alpha]), "RGBA")}[mode]
    save(image, image_path(root, folder="good", split="train"))
    assert Image.open(image_path(root, folder="good", split="train")).mode == mode
    loaded = first_item(root)["image"].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.rint(loaded * 255), rgb)  # alpha dropped, colours kept


def test_upper_case_extensions_are_read(tmp_path):
    root = fake_tree(tmp_path)
    image_path(root, 1).rename(image_path(root, 1).with_name("001.PNG"))
    mask_path(root, 1).rename(mask_path(root, 1).with_name("001_mask.PNG"))
    image_path(root, 0, "good", "train").rename(image_path(root, 0, "good", "train").with_name("000.Png"))
    dataset = data.MVTecAD(root, CATEGORY, "test", image_size=None, defect_types=[DEFECT])
    assert [(image.name, mask.name) for image, mask, _ in dataset.samples] == [
        ("000.png", "000_mask.png"), ("001.PNG", "001_mask.PNG")]
    np.testing.assert_array_equal(dataset[1]["mask"].numpy(), SQUARE)
    assert len(data.MVTecAD(root, CATEGORY, "train")) == 2


def test_two_files_differing_in_extension_case_are_refused(tmp_path):
    root = fake_tree(tmp_path)
    duplicate = image_path(root, 0).with_name("000.PNG")
    duplicate.write_bytes(image_path(root, 0).read_bytes())
    with pytest.raises(ValueError, match="000.PNG and .*000.png differ only in the case"):
        data.MVTecAD(root, CATEGORY, "test")


def test_corrupt_png_names_the_file(tmp_path):
    root = fake_tree(tmp_path)
    image_path(root, 0, "good", "train").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(OSError, match="cannot read image .*train/good/000.png.*Replace or delete"):
        first_item(root)


def test_stack_of_images_of_different_sizes_names_the_file(tmp_path):
    root = fake_tree(tmp_path)
    save(np.zeros((SIZE, 2 * SIZE, 3), dtype=np.uint8), image_path(root, 1, "good", "train"))
    dataset = data.MVTecAD(root, CATEGORY, "train", image_size=None)
    with pytest.raises(ValueError, match="train/good/001.png is \\(3, 8, 16\\) but .*000.png is \\(3, 8, 8\\); "
                                         "pass image_size"):
        data.stack(dataset, progress=False)


def test_defect_types_given_as_one_string(tmp_path):
    root = fake_tree(tmp_path, n_good=3)
    dataset = data.MVTecAD(root, CATEGORY, "test", defect_types="good")
    assert dataset.defect_types == ["good"] * 3


# ----------------------------------------------------------------------------- masks
MASK_FORMATS = {
    "0/255 gray": lambda square: Image.fromarray(square.astype(np.uint8) * 255),
    "0/1 gray": lambda square: Image.fromarray(square.astype(np.uint8)),
    "red RGB": lambda square: Image.fromarray(np.dstack([square * 255, 0 * square, 0 * square]).astype(np.uint8)),
    "palette": lambda square: Image.fromarray(square.astype(np.uint8), "L").convert("P"),
    "1-bit": lambda square: Image.fromarray(square).convert("1"),
    "16-bit 0/1": lambda square: Image.fromarray(square.astype(np.uint16)),
}


@pytest.mark.parametrize("kind", MASK_FORMATS)
def test_any_non_black_mask_pixel_is_a_defect(tmp_path, kind):
    root = fake_tree(tmp_path)
    save(MASK_FORMATS[kind](SQUARE), mask_path(root, 0))
    np.testing.assert_array_equal(first_item(root, "test")["mask"].numpy(), SQUARE)


def test_palette_mask_whose_colour_zero_is_not_black(tmp_path):
    root = fake_tree(tmp_path)
    mask = Image.fromarray(SQUARE.astype(np.uint8), "P")
    mask.putpalette([0, 0, 0, 255, 255, 0] + [0, 0, 0] * 254)  # index 1 = yellow
    save(mask, mask_path(root, 0))
    np.testing.assert_array_equal(first_item(root, "test")["mask"].numpy(), SQUARE)


def test_mask_of_another_size_names_both_files(tmp_path):
    root = fake_tree(tmp_path)
    save(np.kron(SQUARE, np.ones((2, 2))).astype(np.uint8) * 255, mask_path(root, 0))  # 16 x 16
    with pytest.raises(ValueError, match="mask .*000_mask.png is 16 x 16 px but its image .*crack/000.png is 8 x 8"):
        first_item(root, "test", image_size=4)  # checked before both are resized to 4 x 4


def test_empty_mask_of_a_defective_image_names_the_mask(tmp_path):
    root = fake_tree(tmp_path)
    save(np.zeros((SIZE, SIZE), dtype=np.uint8), mask_path(root, 0))
    with pytest.raises(ValueError, match="mask .*000_mask.png is empty .*move the image to test/good"):
        first_item(root, "test")


def test_mask_emptied_by_resizing_names_the_mask(tmp_path):
    root = fake_tree(tmp_path)
    speck = np.zeros((SIZE, SIZE), dtype=np.uint8)
    speck[0, 0] = 255  # nearest neighbour to 2 x 2 samples pixels (2, 2), (2, 6), (6, 2), (6, 6)
    save(speck, mask_path(root, 0))
    with pytest.raises(ValueError, match="000_mask.png has 1 defect pixels .* none at image_size=2.*larger image_size"):
        first_item(root, "test", image_size=2)


def test_evaluate_refuses_a_defective_label_with_an_empty_mask():
    maps = np.random.default_rng(0).random((3, 4, 4))
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[1, 0, 0] = True
    with pytest.raises(ValueError, match="images \\[2\\] are labelled defective \\(1\\) but their masks are empty"):
        metrics.evaluate(masks, maps, np.array([0, 1, 1]), maps.max(axis=(1, 2)))


# ----------------------------------------------------------------------------- numbers
MAPS = np.random.default_rng(0).random((2, 4, 4))
MASKS = np.zeros((2, 4, 4), dtype=bool)
MASKS[1, :2, :2] = True
LABELS = np.array([0, 1])
NAN_THRESHOLD = {
    "binarize": lambda: metrics.binarize(MAPS, float("nan")),
    "classify": lambda: metrics.classify(MAPS, np.nan),
    "region_overlap": lambda: metrics.region_overlap(MASKS, MAPS, np.float32("nan")),
    "evaluate": lambda: metrics.evaluate(MASKS, MAPS, LABELS, MAPS.max(axis=(1, 2)), threshold=np.nan),
}


@pytest.mark.parametrize("function", NAN_THRESHOLD)
def test_nan_threshold_is_refused(function):
    with pytest.raises(ValueError, match="threshold is NaN; it must be a real number"):
        NAN_THRESHOLD[function]()


@pytest.mark.parametrize("area", [0, -3])
def test_min_defect_area_below_one_is_refused(area):
    with pytest.raises(ValueError, match=f"min_defect_area must be an integer >= 1, got {area}"):
        metrics.classify(MAPS, 0.5, min_defect_area=area)
    with pytest.raises(ValueError, match=f"min_defect_area must be an integer >= 1, got {area}"):
        metrics.evaluate(MASKS, MAPS, LABELS, MAPS.max(axis=(1, 2)), threshold=0.5, min_defect_area=area)


def test_nan_k_of_k_sigma_threshold_is_refused():
    with pytest.raises(ValueError, match="k is NaN; it must be a real number in \\[0, inf\\)"):
        thresholds.k_sigma_threshold(np.array([1.0, 2.0]), k=np.nan)


def test_fpr_limit_as_a_string_is_a_clear_type_error():
    with pytest.raises(TypeError, match="fpr_limit must be a real number in \\(0, 1\\], got '0.3' \\(str\\)"):
        metrics.evaluate(MASKS, MAPS, LABELS, MAPS.max(axis=(1, 2)), fpr_limit="0.3")


# ----------------------------------------------------------------------------- saved estimators
def test_saved_metadata_from_numpy_and_paths_loads_as_plain_values(tmp_path):
    from mvtec_tutorial import models

    path = _fitted_mean_image().save(tmp_path / "det.pt", loss=np.float32(0.25), epochs=np.int64(3),
                                     data=tmp_path / "data", nested={"seen": [np.bool_(True)]})
    metadata = models.AnomalyDetector.load(path).metadata_
    assert metadata == {"loss": 0.25, "epochs": 3, "data": str(tmp_path / "data"), "nested": {"seen": [True]}}
    assert [type(metadata[key]) for key in ("loss", "epochs", "data")] == [float, int, str]


def test_saved_metadata_of_another_type_is_refused_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match="cannot save metadata\\['schedule'\\]\\['steps'\\] of type set"):
        _fitted_mean_image().save(tmp_path / "det.pt", schedule={"steps": {1, 2}})
    assert not (tmp_path / "det.pt").exists()


def test_a_file_with_numpy_objects_is_not_called_damaged(tmp_path):
    from mvtec_tutorial import models

    path = tmp_path / "old.pt"  # as a pickle of numpy values would be
    torch.save({"format": "mvtec_tutorial.detector", "metadata": {"loss": np.float64(0.5)}}, path)
    with pytest.raises(ValueError, match="holds a numpy.*object.*weights_only=True.*refuses") as error:
        models.AnomalyDetector.load(path)
    assert "damaged" not in str(error.value) and "delete" not in str(error.value)


def test_a_truncated_saved_file_is_called_damaged(tmp_path):
    from mvtec_tutorial import models

    path = _fitted_mean_image().save(tmp_path / "det.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="det.pt is damaged or not a saved estimator"):
        models.AnomalyDetector.load(path)


# ----------------------------------------------------------------------------- download
URL = "https://example.invalid/mvtec_anomaly_detection.tar.xz"


def fake_archive(tmp_path: Path) -> bytes:
    """An .tar.xz holding ``bottle/train/good/000.png``, like a one-category MVTec AD archive."""
    tree = fake_tree(tmp_path / "tree", n_train=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        tar.add(tree / CATEGORY / "train", arcname=f"{CATEGORY}/train")
    return buffer.getvalue()


class FakeServer:
    """Stands in for ``urllib.request.urlopen``: answers byte ranges of ``content`` like an HTTP server."""

    def __init__(self, content: bytes) -> None:
        self.content, self.requests = content, []

    def __call__(self, request, timeout=None):
        self.requests.append(request)
        start = int(request.get_header("Range", "bytes=0-")[6:-1])
        if start >= len(self.content):
            raise urllib.error.HTTPError(request.full_url, 416, "Range Not Satisfiable", {}, None)
        response = io.BytesIO(self.content[start:])
        response.status = 206 if start else 200
        response.headers = {"Content-Length": str(len(self.content) - start)}
        return response


def sha256(content: bytes) -> str:
    import hashlib

    return hashlib.sha256(content).hexdigest()


def test_download_resumes_a_partial_file(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    server = FakeServer(content)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    root = tmp_path / "data"
    root.mkdir()
    (root / "mvtec_anomaly_detection.tar.xz.part").write_bytes(content[:100])
    data.download(root, "bottle", url=URL, sha256=sha256(content))
    assert server.requests[0].get_header("Range") == "bytes=100-"
    assert (root / "mvtec_anomaly_detection.tar.xz").read_bytes() == content
    assert (root / CATEGORY / "train" / "good" / "000.png").is_file()


def test_download_of_a_complete_part_file_answered_416_is_finished(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    server = FakeServer(content)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    root = tmp_path / "data"
    root.mkdir()
    (root / "mvtec_anomaly_detection.tar.xz.part").write_bytes(content)  # cut after the last block
    data.download(root, ["bottle"], url=URL, sha256=sha256(content))
    assert server.requests[0].get_header("Range") == f"bytes={len(content)}-"
    assert not (root / "mvtec_anomaly_detection.tar.xz.part").exists()
    assert (root / CATEGORY / "train" / "good" / "000.png").is_file()


def test_download_of_a_wrong_part_file_answered_416_fails_its_checksum(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", FakeServer(content))
    root = tmp_path / "data"
    root.mkdir()
    (root / "mvtec_anomaly_detection.tar.xz.part").write_bytes(b"x" * len(content))
    with pytest.raises(ValueError, match="has SHA-256 .* moved it to .*tar.xz.corrupt"):
        data.download(root, ["bottle"], url=URL, sha256=sha256(content))


def test_download_on_a_python_without_extraction_filters_fails_before_fetching(tmp_path, monkeypatch):
    server = FakeServer(b"")
    monkeypatch.setattr(urllib.request, "urlopen", server)
    monkeypatch.delattr(tarfile, "data_filter")
    with pytest.raises(RuntimeError, match="needs Python 3.11.4 or later.*make distclean install"):
        data.download(tmp_path, ["bottle"], url=URL)
    assert server.requests == [] and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- round two: files, environment, CLI, models
def users_files(folder: Path) -> dict[Path, bytes]:
    """A user's own files in ``folder``, as a {path: content} dict to compare with afterwards."""
    files = {folder / "my_model.pt": b"weights", folder / "notes.txt": b"mine", folder / "sub" / "old.pt": b"kept"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def still_there(files: dict[Path, bytes]) -> bool:
    return all(path.is_file() and path.read_bytes() == content for path, content in files.items())


def test_cache_clear_deletes_only_the_fits_it_wrote(tmp_path, monkeypatch):
    from mvtec_tutorial import cache, models

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    mine = users_files(tmp_path)
    record = cache.fit(models.MeanImage(), torch.rand(2, 3, 8, 8), progress=False)
    (tmp_path / f"MeanImage-{'0' * 32}.pt").write_bytes(b"named like a fit, but not the cache's")
    mine[tmp_path / f"MeanImage-{'0' * 32}.pt"] = b"named like a fit, but not the cache's"
    assert cache.clear() == 1
    assert not record.path.exists() and still_there(mine)


@pytest.mark.parametrize("where", ["folder", "home"])
def test_cache_clear_refuses_a_folder_it_did_not_create(tmp_path, monkeypatch, where):
    from mvtec_tutorial import cache

    monkeypatch.setenv("HOME", str(tmp_path))
    mine = users_files(tmp_path)
    with pytest.raises(FileExistsError, match="has no .mvtec_tutorial_cache, so the fit cache did not create it; "
                                              "nothing was deleted"):
        cache.clear(tmp_path if where == "folder" else "~")
    assert still_there(mine)


@pytest.mark.parametrize("value", ["1", "on", "TRUE"])
def test_cache_on_switches_mean_the_default_folder(tmp_path, monkeypatch, value):
    from mvtec_tutorial import cache

    monkeypatch.setenv(cache.CACHE_ENV, value)
    assert cache.cache_dir() == cache.DEFAULT_CACHE_DIR


@pytest.mark.parametrize("value", ["none", "disabled", "OFF", " False "])
def test_cache_off_switches_create_no_folder(tmp_path, monkeypatch, value):
    from mvtec_tutorial import cache, models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(cache.CACHE_ENV, value)
    assert cache.cache_dir() is None
    assert cache.fit(models.MeanImage(), torch.rand(2, 3, 8, 8), progress=False).path is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("Yes", True), ("ON", True),
                                             ("0", False), ("false", False), ("no", False), ("Off", False),
                                             ("", False)])
def test_fast_mode_reads_booleans(monkeypatch, value, expected):
    from mvtec_tutorial import settings

    monkeypatch.setenv(settings.FAST_ENV, value)
    assert settings.fast_mode() is expected


def test_fast_mode_refuses_anything_else_naming_the_variable(monkeypatch):
    from mvtec_tutorial import settings

    monkeypatch.setenv(settings.FAST_ENV, "fast")
    with pytest.raises(ValueError, match="MVTEC_TUTORIAL_FAST='fast' is not an on/off value; set it to one of 1, "
                                         "true, yes, on"):
        settings.fast_mode()


def test_synthetic_overwrite_removes_only_what_the_generator_wrote(tmp_path):
    from mvtec_tutorial import synthetic

    options = dict(image_size=32, n_train=3, n_test_good=1, n_test_per_defect=2, progress=False)
    synthetic.make_dataset(tmp_path, "pill", **options)
    folder = tmp_path / "pill"
    mine = {folder / "my_notes.txt": b"mine", folder / "test" / "my_defect" / "000.png": b"my image",
            folder / "train" / "good" / "my_extra.png": b"my normal image"}
    for path, content in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    synthetic.make_dataset(tmp_path, "pill", **{**options, "seed": 1, "n_train": 2, "n_test_per_defect": 1},
                           overwrite=True)
    assert still_there(mine)
    assert sorted(p.name for p in (folder / "train" / "good").iterdir()) == ["000.png", "001.png", "my_extra.png"]
    assert not (folder / "test" / "crack" / "001.png").exists()
    assert len(data.MVTecAD(tmp_path, "pill", "test", defect_types=["crack"])) == 1


def test_synthetic_overwrite_with_an_unreadable_manifest_deletes_nothing(tmp_path):
    from mvtec_tutorial import synthetic

    options = dict(image_size=32, n_train=1, n_test_good=1, n_test_per_defect=1, progress=False)
    synthetic.make_dataset(tmp_path, "pill", **options)
    (tmp_path / "pill" / synthetic.MANIFEST_NAME).write_text("{damaged")
    before = sorted(p for p in (tmp_path / "pill").rglob("*"))
    with pytest.raises(FileExistsError, match="synthetic.json is unreadable, .*nothing was deleted"):
        synthetic.make_dataset(tmp_path, "pill", **options, overwrite=True)
    assert sorted(p for p in (tmp_path / "pill").rglob("*")) == before


@pytest.mark.parametrize("predictions", [np.array([0.2, 0.9]), np.array(["0", "1"])], ids=["scores", "strings"])
def test_classification_accuracy_refuses_scores_and_strings_as_predictions(predictions):
    with pytest.raises(ValueError, match="predictions must be 0/1 or bool .*for anomaly scores pass scores > threshold"):
        metrics.classification_accuracy(np.array([0, 1]), predictions)


def test_classification_accuracy_refuses_string_labels():
    with pytest.raises(ValueError, match="labels must contain only 0 .* got values \\['defective' 'good'\\].*"
                                         "labels == 'defective'"):
        metrics.classification_accuracy(np.array(["good", "defective"]), np.array([0, 1]))


def test_min_defect_area_above_the_image_area_is_refused_like_the_threshold_rule():
    area = 10**9
    with pytest.raises(ValueError, match=f"min_defect_area={area} exceeds the 16 pixels of one 4 x 4 map, so every "
                                         "image would be called good; pass at most H \\* W pixels"):
        metrics.classify(MAPS, 0.5, min_defect_area=area)
    with pytest.raises(ValueError, match=f"min_defect_area must be an integer in \\[1, 16\\], got {area}"):
        thresholds.min_defect_area_threshold(MAPS, area)
    assert metrics.classify(MAPS, 0.0, min_defect_area=16).all()  # the whole 4 x 4 map above: still found


def register_broken_method(monkeypatch):
    """Declare, for this test only, a benchmark method "broken" whose fit fails (as when memory runs out)."""
    from mvtec_tutorial import models
    from mvtec_tutorial.models import base

    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))

    class Broken(models.MeanImage):
        benchmark_names = {"broken": {}}
        schedules = models.MeanImage.schedules

        def _fit(self, images):
            raise RuntimeError("out of memory")


def test_benchmark_command_exits_non_zero_when_a_cell_failed(synthetic_root, tmp_path, monkeypatch, capsys):
    from mvtec_tutorial import benchmark

    register_broken_method(monkeypatch)
    with pytest.raises(SystemExit, match="1 cell\\(s\\) failed: bottle / broken; .*run again") as exit_:
        benchmark.main(["--root", str(synthetic_root), "--categories", "bottle", "--methods", "broken", "mean_image",
                        "--image-size", "32", "--no-cache", "--out", str(tmp_path)])
    assert exit_.value.code != 0
    assert "| mean_image |" in capsys.readouterr().out  # the cells that worked are measured and shown


def test_benchmark_takes_a_single_category_and_method_name_as_one_item(synthetic_root, tmp_path):
    from mvtec_tutorial import benchmark

    results = benchmark.run(synthetic_root, "bottle", "mean_image", tmp_path, image_size=32, cache=False,
                            progress=False)
    assert set(results["category"]) == {"bottle"} and set(results["method"]) == {"mean_image"}


def test_benchmark_out_expands_the_home_folder(synthetic_root, tmp_path, monkeypatch):
    from mvtec_tutorial import benchmark

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    benchmark.main(["--root", str(synthetic_root), "--categories", "bottle", "--methods", "mean_image",
                    "--image-size", "32", "--no-cache", "--out", "~/res"])
    assert (tmp_path / "home" / "res" / "results.csv").is_file() and not (tmp_path / "~").exists()


def test_benchmark_results_write_that_fails_leaves_no_part_file(synthetic_root, tmp_path, monkeypatch):
    import pandas as pd

    from mvtec_tutorial import benchmark

    def disk_full(self, path, **kwargs):
        Path(path).write_text("category,meth")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(benchmark, "run_cell", lambda *args, **kwargs: pd.DataFrame(columns=benchmark.COLUMNS))
    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError, match="No space left"):
        benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_benchmark_data_fingerprint_takes_a_file_name_that_is_not_utf8(tmp_path):
    from mvtec_tutorial import benchmark

    root = fake_tree(tmp_path)
    before = benchmark.data_fingerprint(root, CATEGORY)
    with open(os.fsencode(root / CATEGORY / "test") + b"/caf\xe9.png", "wb") as file:  # Latin-1, as from old Windows
        file.write(b"x")
    after = benchmark.data_fingerprint(root, CATEGORY)
    assert len(after) == 64 and after != before


def test_benchmark_stale_lock_fails_before_the_cell_is_computed(synthetic_root, tmp_path, monkeypatch):
    from mvtec_tutorial import benchmark

    lock = tmp_path / ".results.lock"
    lock.write_text(str(os.getpid()))  # a live process number, e.g. reused after the writer was killed
    ten_minutes_ago = time.time() - 600
    os.utime(lock, (ten_minutes_ago, ten_minutes_ago))
    calls = []
    monkeypatch.setattr(benchmark, "run_cell", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(RuntimeError, match="has held .*results.lock for 600 s; .*delete the lock if no run"):
        benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, progress=False)
    assert calls == []


def broken_settings():
    """Hyperparameters that used to fit and then give wrong maps, each with the start of its message."""
    from mvtec_tutorial import models

    return {
        "PaDiM regularization=-1": (lambda: models.PaDiM(regularization=-1),
                                    "regularization must be a real number > 0, got -1; the paper adds 0.01"),
        "MeanImage std_floor=0": (lambda: models.MeanImage(std_floor=0),
                                  "std_floor must be a real number > 0, got 0; .*divides by zero"),
        "MeanImage std_floor=-1": (lambda: models.MeanImage(std_floor=-1), "std_floor must be a real number > 0"),
        "MeanImage smoothing_sigma=-2": (lambda: models.MeanImage(smoothing_sigma=-2),
                                         "smoothing_sigma must be a real number >= 0, got -2; .*0 turns it off"),
        "PatchCore projection_dim=0": (lambda: models.PatchCore(projection_dim=0),
                                       "projection_dim must be an integer >= 1, got 0; .*None compares the full"),
        "PatchCore smoothing_sigma=-1": (lambda: models.PatchCore(smoothing_sigma=-1),
                                         "smoothing_sigma must be a real number >= 0"),
        "VariationModel std_floor=0": (lambda: models.VariationModel(std_floor=0), "std_floor must be a real number > 0"),
        "VariationModel upsample_factor=0": (lambda: models.VariationModel(upsample_factor=0),
                                             "upsample_factor must be an integer >= 1"),
        "GMMTexture n_components=0": (lambda: models.GMMTexture(n_components=0), "n_components must be an integer >= 1"),
        "FeatureDictionary n_fit_patches=0": (lambda: models.FeatureDictionary(patch_size=8, n_fit_patches=0),
                                              "n_fit_patches must be an integer >= 1"),
        "ConvAutoencoder epochs=0": (lambda: models.ConvAutoencoder(epochs=0), "epochs must be a positive integer"),
        "ConvAutoencoder learning_rate=-1": (lambda: models.ConvAutoencoder(learning_rate=-1e-3),
                                             "learning_rate must be a real number > 0"),
        "AnoGAN feature_weight=2": (lambda: models.AnoGAN(work_size=16, feature_weight=2),
                                    "feature_weight must be a real number in \\[0, 1\\], got 2"),
        "FAnoGAN kappa=-1": (lambda: models.FAnoGAN(work_size=16, kappa=-1), "kappa must be a real number >= 0"),
    }


@pytest.mark.parametrize("case", list(broken_settings()))
def test_hyperparameter_that_breaks_a_method_is_refused_at_fit(case):
    make, message = broken_settings()[case]
    detector = make()
    with pytest.raises(ValueError, match=message):
        detector.fit(torch.rand(4, 3, 32, 32), progress=False)
    assert not hasattr(detector, "image_shape_")  # nothing learned, nothing half-fitted


def test_seed_none_is_refused_saying_what_to_pass():
    from mvtec_tutorial import models
    from mvtec_tutorial.models import supervised

    with pytest.raises(TypeError, match="seed must be an integer >= 0, got None \\(NoneType\\); .*pass e.g. seed=0"):
        models.MeanImage(seed=None).fit(torch.rand(2, 3, 8, 8), progress=False)
    with pytest.raises(TypeError, match="seed must be an integer >= 0, got None \\(NoneType\\); .*pass e.g. seed=0"):
        supervised.SupervisedClassifier(seed=None).fit(torch.rand(2, 3, 8, 8), np.array([0, 1]), progress=False)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # one distinct patch: the point
def test_gmm_texture_on_uniform_images_is_refused_not_nan():
    from mvtec_tutorial import models

    with pytest.raises(ValueError, match="no texture on pyramid levels \\[0, 1\\].*use MeanImage or VariationModel"):
        models.GMMTexture(n_levels=2, n_fit_patches=500).fit(torch.full((3, 3, 32, 32), 0.5), progress=False)


def test_three_grayscale_images_stacked_as_one_rgb_shape_are_refused():
    from mvtec_tutorial import models

    grayscale = np.random.default_rng(0).random((3, SIZE, SIZE), dtype=np.float32)
    with pytest.raises(ValueError, match="got a 3-D array \\(3, 8, 8\\): one RGB image or 3 grayscale images\\? "
                                         "Pass images as \\(N, 3, H, W\\): one image as image\\[None\\]"):
        models.MeanImage().fit(grayscale, progress=False)
    fitted = models.MeanImage().fit(np.repeat(grayscale[:, None], 3, axis=1), progress=False)  # the fix it names
    assert fitted.mean_.shape == (3, SIZE, SIZE)


def not_images(root: Path) -> dict:
    """What users pass to fit instead of images, with the start of what the error tells them."""
    from torch.utils.data import DataLoader

    dataset = data.MVTecAD(root, CATEGORY, "train", image_size=None)
    paths = sorted((root / CATEGORY / "train" / "good").iterdir())
    return {
        "list of paths": ([str(p) for p in paths], "got file paths .*data.read_folder\\(folder\\)"),
        "folder": (root / CATEGORY / "train", "got file paths .*data.MVTecAD\\(root, category, 'train'\\)"),
        "DataLoader": (DataLoader(dataset, batch_size=2), "got a DataLoader; pass its dataset \\(loader.dataset\\)"),
        "Split": (data.load_split(root, CATEGORY, image_size=None, validation_fraction=0.5, progress=False),
                  "got a whole Split; pass split.train to fit"),
    }


@pytest.mark.parametrize("case", ["list of paths", "folder", "DataLoader", "Split"])
def test_fit_on_something_that_is_not_images_says_how_to_load_them(tmp_path, case):
    from mvtec_tutorial import models

    value, message = not_images(fake_tree(tmp_path))[case]
    with pytest.raises(TypeError, match="fit and predict take images: a Dataset of item dicts \\(MVTecAD\\) or a "
                                        f"tensor/ndarray \\(N, 3, H, W\\) float in \\[0, 1\\], {message}"):
        models.MeanImage().fit(value, progress=False)


def test_one_training_image_says_what_actually_works(tmp_path):
    from mvtec_tutorial import models

    root = fake_tree(tmp_path, n_train=1)
    for fraction in (0.2, 0.01):  # no fraction helps, so the message must not suggest one
        with pytest.raises(ValueError, match="got 1 training image\\(s\\), but at least 2 are needed.*add normal "
                                             "images to train/good, or fit the detector on your images directly"):
            data.load_split(root, CATEGORY, image_size=None, validation_fraction=fraction, progress=False)
    train = data.MVTecAD(root, CATEGORY, "train", image_size=None)
    assert models.MeanImage().fit(train, progress=False).mean_.shape == (3, SIZE, SIZE)  # the fix it names works


def test_validation_fraction_too_large_for_two_images_names_the_largest_that_works(tmp_path):
    root = fake_tree(tmp_path, n_train=2)
    with pytest.raises(ValueError, match="cannot hold out 2 of 2 images; use a validation_fraction below 0.75"):
        data.load_split(root, CATEGORY, image_size=None, validation_fraction=0.8, progress=False)
    split = data.load_split(root, CATEGORY, image_size=None, validation_fraction=0.7, progress=False)
    assert (len(split.train), len(split.validation)) == (1, 1)


# --------------------------------------------------------------------------- round two: images, masks, download
def through_jpeg(values: np.ndarray) -> np.ndarray:
    """``values`` (uint8) after a JPEG round trip: the ringing an export through JPEG leaves."""
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(buffer))


def soft_square() -> np.ndarray:
    """SQUARE drawn anti-aliased: a ring of pixels a third covered around it."""
    values = SQUARE.astype(np.uint8) * 255
    values[ndimage.binary_dilation(SQUARE) & ~SQUARE] = 85
    return values


SOFT_MASKS = {
    "anti-aliased": soft_square,
    "JPEG artefacts": lambda: through_jpeg(SQUARE.astype(np.uint8) * 255),
    "export noise of 1-2 levels": lambda: (SQUARE * 255 + ~SQUARE * np.random.default_rng(4).integers(
        0, 3, SQUARE.shape)).astype(np.uint8),
}


@pytest.mark.parametrize("kind", SOFT_MASKS)
def test_soft_mask_is_binarised_at_half_its_brightest_value(tmp_path, kind):
    root = fake_tree(tmp_path)
    values = SOFT_MASKS[kind]()
    assert np.count_nonzero(values) > SQUARE.sum()  # any non-zero pixel would grow the defect
    save(values, mask_path(root, 0))
    np.testing.assert_array_equal(first_item(root, "test")["mask"].numpy(), SQUARE)


def test_inverted_mask_is_refused_naming_the_file(tmp_path):
    root = fake_tree(tmp_path)
    save((~SQUARE).astype(np.uint8) * 255, mask_path(root, 0))
    with pytest.raises(ValueError, match="mask .*000_mask.png marks 55 of 64 px .*looks inverted.*Invert it"):
        first_item(root, "test")


def test_rgba_mask_with_the_defect_only_in_alpha(tmp_path):
    root = fake_tree(tmp_path)
    transparent_black = np.dstack([np.zeros((SIZE, SIZE, 3), np.uint8), SQUARE.astype(np.uint8) * 255])
    save(Image.fromarray(transparent_black, "RGBA"), mask_path(root, 0))
    np.testing.assert_array_equal(first_item(root, "test")["mask"].numpy(), SQUARE)


def own_folder(root: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """``root/images/<name>`` and ``root/masks/<name>``, as a folder of one's own (read_folder's layout)."""
    for folder, files in (("images", images), ("masks", masks)):
        for name, values in files.items():
            save(values, root / folder / name)
    return root / "images", root / "masks"


def folder_masks(images: Path, masks: Path, **kwargs) -> np.ndarray:
    _, paths = data.read_folder(images, image_size=None)
    return data.read_folder_masks(masks, paths, image_folder=images, image_size=None, **kwargs)


def test_tif_mask_is_found(tmp_path):
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    images, masks = own_folder(tmp_path, {"a.png": image, "b.png": image}, {"b.tif": SQUARE.astype(np.uint8) * 255})
    np.testing.assert_array_equal(folder_masks(images, masks)[1], SQUARE)
    root = fake_tree(tmp_path / "mvtec")  # the MVTec layout wants <name>_mask.png and says so
    save(SQUARE.astype(np.uint8) * 255, mask_path(root, 0).with_suffix(".tif"))
    mask_path(root, 0).unlink()
    with pytest.raises(FileNotFoundError, match="no ground-truth mask .*crack/000.png \\(other files there: "
                                                "000_mask.tif; masks must be PNG"):
        data.MVTecAD(root, CATEGORY, "test")


def test_two_images_differing_only_in_their_ending_cannot_share_a_mask(tmp_path):
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    images, masks = own_folder(tmp_path, {"a.png": image, "a.jpg": image}, {"a_mask.png": SQUARE.astype(np.uint8)})
    with pytest.raises(ValueError, match="images .*a.jpg and .*a.png differ only in their ending, so both would "
                                         "take the mask .*a_mask.png; rename one"):
        folder_masks(images, masks)


def test_mask_named_like_an_image_is_not_given_to_another_image(tmp_path):
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    images, masks = own_folder(tmp_path, {"foo.png": image, "foo_mask.png": image},
                               {"foo_mask.png": SQUARE.astype(np.uint8)})
    with pytest.raises(ValueError, match="mask .*foo_mask.png could belong to two images, foo_mask and foo"):
        folder_masks(images, masks)


def save_rotated_by_exif(values: np.ndarray, path: Path) -> None:
    """Store ``values`` (upright) as a camera does: pixels turned, EXIF orientation 6 (turn clockwise to view)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rot90(values, k=1).copy()).save(path, exif=exif)


def test_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path):
    root = fake_tree(tmp_path)
    upright = np.random.default_rng(5).integers(0, 256, (SIZE, 2 * SIZE, 3), dtype=np.uint8)  # 16 wide, 8 high
    mask = np.zeros((SIZE, 2 * SIZE), dtype=bool)
    mask[1:4, 10:14] = True  # off the diagonal: any wrong turn moves it
    save_rotated_by_exif(upright, image_path(root, 0))
    save_rotated_by_exif(mask.astype(np.uint8) * 255, mask_path(root, 0))
    item = first_item(root, "test")
    np.testing.assert_array_equal(np.rint(item["image"].permute(1, 2, 0).numpy() * 255), upright)
    np.testing.assert_array_equal(item["mask"].numpy(), mask)
    images, paths = data.read_folder(image_path(root, 0).parent, image_size=None, pattern="000.png")
    assert tuple(images.shape) == (1, 3, SIZE, 2 * SIZE)


def test_read_folder_pattern_ignores_case_and_names_the_files_it_left_out(tmp_path):
    for name in ("a.png", "B.PNG", "c.bmp", "d.gif"):
        save(np.zeros((SIZE, SIZE, 3), np.uint8), tmp_path / name)
    with pytest.warns(UserWarning, match="left out image files .*: 1 not matching pattern '\\*\\*/\\*.png' "
                                         "\\(pass pattern='\\*\\*/\\*' to read them\\): c.bmp$"):
        _, paths = data.read_folder(tmp_path, image_size=None, pattern="**/*.png")
    assert [path.name for path in paths] == ["B.PNG", "a.png"]
    with pytest.warns(UserWarning, match="left out image files .*: 1 of a format not read \\(read: .png, .*convert "
                                         "them to PNG\\): d.gif$"):
        _, paths = data.read_folder(tmp_path, image_size=None)
    assert [path.name for path in paths] == ["B.PNG", "a.png", "c.bmp"]


def test_fifo_named_like_an_image_is_refused_not_read(tmp_path):
    import signal

    root = fake_tree(tmp_path)
    image_path(root, 0, "good", "train").unlink()
    os.mkfifo(image_path(root, 0, "good", "train"))  # opening it for reading would wait for a writer forever

    def hang(*_):
        raise TimeoutError("reading the FIFO blocked")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(10)
    try:
        with pytest.raises(OSError, match="cannot read image .*train/good/000.png: it is not a regular file"):
            first_item(root)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_image_over_the_decompression_bomb_limit_names_the_file_and_the_fix(tmp_path, monkeypatch):
    root = fake_tree(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", SIZE * SIZE // 4)  # Pillow refuses images over twice this
    with pytest.raises(OSError, match="cannot read image .*train/good/000.png: .*MAX_IMAGE_PIXELS = None"):
        first_item(root)


@pytest.mark.parametrize("image_size, error, message", [
    (0, ValueError, "image_size must be at least 1 px, got 0"),
    ("256", TypeError, "image_size must be a whole number of pixels or None, got '256' \\(str\\)"),
    (64.0, TypeError, "image_size must be a whole number of pixels or None, got 64.0 \\(float\\)"),
])
def test_image_size_that_is_not_a_whole_number_of_pixels_is_refused(tmp_path, image_size, error, message):
    root = fake_tree(tmp_path)
    with pytest.raises(error, match=message):
        data.MVTecAD(root, CATEGORY, "train", image_size=image_size)
    with pytest.raises(error, match=message):
        data.read_folder(root, image_size=image_size)


def test_download_of_no_categories_is_refused_before_fetching(tmp_path, monkeypatch):
    server = FakeServer(b"")
    monkeypatch.setattr(urllib.request, "urlopen", server)
    with pytest.raises(ValueError, match="categories is empty, so there is nothing to extract; pass None"):
        data.download(tmp_path, [], url=URL)
    assert server.requests == [] and list(tmp_path.iterdir()) == []


def test_download_interrupted_while_extracting_leaves_no_partial_category(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    archive = tmp_path / "mvtec_anomaly_detection.tar.xz"
    archive.write_bytes(content)
    extract, calls = tarfile.TarFile.extract, []

    def interrupted(self, member, *args, **kwargs):
        calls.append(member)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C
        return extract(self, member, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extract", interrupted)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        data.download(root, ["bottle"], archive=archive, sha256=sha256(content))
    assert list(root.iterdir()) == []  # neither the category nor the scratch folder
    with pytest.raises(ValueError, match="unknown category 'bottle'"):
        data.MVTecAD(root, CATEGORY, "train")
    monkeypatch.setattr(tarfile.TarFile, "extract", extract)
    data.download(root, ["bottle"], archive=archive, sha256=sha256(content))  # the next run completes it
    assert len(data.MVTecAD(root, CATEGORY, "train")) == 1


def test_download_accepts_an_upper_case_sha256_and_a_home_path(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    (tmp_path / "mvtec_anomaly_detection.tar.xz").write_bytes(content)
    monkeypatch.setenv("HOME", str(tmp_path))
    data.download("~/data", ["bottle"], archive="~/mvtec_anomaly_detection.tar.xz", sha256=sha256(content).upper())
    assert (tmp_path / "data" / CATEGORY / "train" / "good" / "000.png").is_file()


def test_download_never_renames_an_archive_it_did_not_write(tmp_path, monkeypatch):
    content = fake_archive(tmp_path)
    server = FakeServer(content)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    root = tmp_path / "data"
    root.mkdir()
    users = root / "mvtec_anomaly_detection.tar.xz"  # put there by hand, under the name download() looks for
    users.write_bytes(content[:-1])
    with pytest.raises(ValueError, match="has SHA-256 .*; it is left as it is. Delete it and download again"):
        data.download(root, ["bottle"], url=URL, sha256=sha256(content))
    assert users.read_bytes() == content[:-1] and sorted(p.name for p in root.iterdir()) == [users.name]
    assert server.requests == []


# --------------------------------------------------------------------------- round two: persistence and image size
def _fitted_mean_image(size=16):
    from mvtec_tutorial import models

    return models.MeanImage().fit(torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(0)),
                                  progress=False)


@pytest.mark.parametrize("name", ["MeanImage", "PaDiM", "PatchCore"])
def test_predicting_at_another_image_size_than_the_fit_is_refused(name):
    # PaDiM and PatchCore checked only the feature grid: 63 px after a 64 px fit gave the same grid.
    from mvtec_tutorial import models

    settings = {"PaDiM": dict(n_features=8, layers=("block4",)), "PatchCore": dict(coreset_ratio=0.5)}.get(name, {})
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    detector = getattr(models, name)(**settings).fit(images, progress=False)
    with pytest.raises(ValueError, match=r"images are \(63, 63\) px but this .* was fitted on \(64, 64\) px images; "
                                         "load test images at the training image_size"):
        detector.predict(torch.rand(1, 3, 63, 63), progress=False)


def test_save_to_a_path_with_a_tilde_writes_into_the_home_folder(tmp_path, monkeypatch):
    from mvtec_tutorial import models

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    path = _fitted_mean_image().save("~/detectors/det.pt")
    assert path == tmp_path / "home" / "detectors" / "det.pt" and path.is_file()
    assert not (tmp_path / "~").exists()
    assert isinstance(models.AnomalyDetector.load("~/detectors/det.pt"), models.MeanImage)


def test_saving_into_a_read_only_folder_names_the_path(tmp_path, monkeypatch):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root may write anywhere: fail as torch does in a read-only folder
            def refuse(obj, file, *args, **kwargs):
                raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")
            monkeypatch.setattr(torch, "save", refuse)
        with pytest.raises(OSError, match=f"cannot write the MeanImage to {folder / 'det.pt'}.*a folder you can write"):
            _fitted_mean_image().save(folder / "det.pt")
    finally:
        folder.chmod(0o700)


def test_a_subclass_defined_outside_the_package_is_refused_when_saving(tmp_path):
    from mvtec_tutorial import models

    class MyMeanImage(models.MeanImage):
        pass

    detector = MyMeanImage().fit(torch.rand(2, 3, 8, 8), progress=False)
    with pytest.raises(TypeError, match="defined outside mvtec_tutorial and scikit-learn.*could not be loaded"):
        detector.save(tmp_path / "mine.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["params", "state", "metadata", "class"])
def test_a_tampered_saved_detector_gives_a_clear_error_naming_the_file(tmp_path, damage):
    from mvtec_tutorial import models

    path = _fitted_mean_image().save(tmp_path / "det.pt")
    payload = torch.load(path, weights_only=True)
    if damage == "class":
        payload["class"] = 7
    else:
        del payload[damage]
    torch.save(payload, path)
    with pytest.raises(ValueError, match=f"{path} .*(damaged|may not name).*"):
        models.AnomalyDetector.load(path)


def test_a_saved_detector_loads_whatever_package_version_or_source_wrote_it(tmp_path):
    # The format version decides, not the package version or the source hash (which are informative).
    from mvtec_tutorial import models

    detector = _fitted_mean_image()
    path = detector.save(tmp_path / "det.pt")
    payload = torch.load(path, weights_only=True)
    payload.update(package_version="0.0.1", source_hash="0" * 64)
    torch.save(payload, path)
    images = torch.rand(2, 3, 16, 16)
    np.testing.assert_array_equal(models.AnomalyDetector.load(path).predict(images, progress=False)[0],
                                  detector.predict(images, progress=False)[0])


def test_a_file_of_the_previous_format_version_is_refused_with_the_reason(tmp_path):
    from mvtec_tutorial import models
    from mvtec_tutorial.models import base

    path = _fitted_mean_image().save(tmp_path / "det.pt")
    payload = torch.load(path, weights_only=True)
    # What format version 1 wrote: the version inside the format string, the run flag as learned state.
    del payload["format_version"]
    payload["format"] = "mvtec_tutorial.detector/1"
    payload["state"]["progress_"] = False
    torch.save(payload, path)
    assert base.FILE_VERSION == 2
    with pytest.raises(ValueError, match="format version 1 .*reads version 2 .*progress_.*fit again and save"):
        models.AnomalyDetector.load(path)
