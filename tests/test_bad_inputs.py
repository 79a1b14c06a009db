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
from scipy import ndimage

from mvtec_tutorial import data, metrics, thresholds, training

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


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_metadata_from_numpy_and_paths_loads_as_plain_values(tmp_path):
    model = torch.nn.Linear(2, 1)
    path = training.save_checkpoint(tmp_path / "net.pt", model, loss=np.float32(0.25), epochs=np.int64(3),
                                    history=np.array([1.0, 0.5]), data=tmp_path / "data",
                                    nested={"seen": [np.bool_(True)]})
    metadata = training.load_checkpoint(path, torch.nn.Linear(2, 1))
    assert metadata == {"loss": 0.25, "epochs": 3, "history": [1.0, 0.5], "data": str(tmp_path / "data"),
                        "nested": {"seen": [True]}}
    assert [type(metadata[key]) for key in ("loss", "epochs", "data")] == [float, int, str]


def test_checkpoint_metadata_of_another_type_is_refused_naming_the_key(tmp_path):
    with pytest.raises(TypeError, match="metadata schedule\\['steps'\\] is a set"):
        training.save_checkpoint(tmp_path / "net.pt", torch.nn.Linear(2, 1), schedule={"steps": {1, 2}})
    assert not (tmp_path / "net.pt").exists()


def test_checkpoint_with_numpy_objects_is_not_called_damaged(tmp_path):
    path = tmp_path / "old.pt"  # as an older save_checkpoint wrote it
    torch.save({"architecture": "Linear", "state_dict": torch.nn.Linear(2, 1).state_dict(),
                "metadata": {"loss": np.float64(0.5)}}, path)
    with pytest.raises(ValueError, match="holds a numpy.*scalar object.*weights themselves may well be fine") as error:
        training.load_checkpoint(path, torch.nn.Linear(2, 1))
    assert "delete" not in str(error.value)


def test_damaged_checkpoint_is_called_damaged(tmp_path):
    path = training.save_checkpoint(tmp_path / "net.pt", torch.nn.Linear(2, 1))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="net.pt is damaged or not a PyTorch checkpoint"):
        training.load_checkpoint(path, torch.nn.Linear(2, 1))


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
