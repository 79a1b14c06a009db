"""Bad input, one test per case: each is handled correctly or fails naming the file and the fix.

Like torchvision's dataset tests, every data case writes a tiny fake MVTec AD tree into
``tmp_path`` (:func:`fake_tree`, 8 x 8 px) and then damages one file; nothing is downloaded
(the download tests replace ``urllib.request.urlopen``).
"""
import io
import os
import struct
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
