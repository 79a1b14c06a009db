import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvtec_tutorial import data, settings

REPOSITORY = Path(__file__).resolve().parent.parent


def copy_category(synthetic_root, tmp_path, category="bottle"):
    shutil.copytree(synthetic_root / category, tmp_path / category)
    return tmp_path


def test_table_1_totals_match_the_paper():
    infos = [data.category_info(name) for name in data.CATEGORIES]
    assert len(data.CATEGORIES) == 15
    assert sum(i.n_train for i in infos) == 3629
    assert sum(i.n_test_good for i in infos) == 467
    assert sum(i.n_test_defective for i in infos) == 1258
    assert sum(i.n_defect_types for i in infos) == 73
    assert sum(i.n_defect_regions for i in infos) == 1888
    assert {n for n in data.CATEGORIES if data.category_info(n).grayscale} == {"grid", "screw", "zipper"}
    assert len(data.TEXTURES) == 5 and len(data.OBJECTS) == 10


def test_unknown_category_info_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown category 'botle'; known: carpet, grid"):
        data.category_info("botle")


def test_items_have_images_masks_labels(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "bottle", "test", image_size=32)
    item = dataset[len(dataset) - 1]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.bool
    labels = dataset.labels
    assert set(labels) == {0, 1}
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["label"] == int(item["defect_type"] != "good") == labels[index]
        assert bool(item["mask"].any()) == bool(item["label"])  # good images have empty masks


def test_masks_are_matched_by_name_not_position(synthetic_root, tmp_path):
    root = copy_category(synthetic_root, tmp_path)
    defect_dir = root / "bottle" / "test" / "contamination"
    mask_dir = root / "bottle" / "ground_truth" / "contamination"
    # Renaming image 000 -> 900 (and its mask) changes sort order; pairs must follow names.
    (defect_dir / "000.png").rename(defect_dir / "900.png")
    (mask_dir / "000_mask.png").rename(mask_dir / "900_mask.png")
    dataset = data.MVTecAD(root, "bottle", "test", image_size=None, defect_types=["contamination"])
    for image_path, mask_path, _ in dataset.samples:
        assert mask_path.name == image_path.stem + "_mask.png"
    item = next(dataset[i] for i in range(len(dataset)) if dataset[i]["path"].endswith("900.png"))
    expected = np.asarray(Image.open(mask_dir / "900_mask.png")) > 127
    np.testing.assert_array_equal(item["mask"].numpy(), expected)


def test_masks_are_resized_with_nearest_neighbour(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "bottle", "test", image_size=47)
    masks = [dataset[i]["mask"] for i in range(len(dataset))]
    assert all(m.shape == (47, 47) for m in masks)
    mask_file = dataset.samples[0][1]  # a 0/255 mask: nearest neighbour of it, then > 0, is the reference
    expected = np.asarray(Image.open(mask_file).convert("L").resize((47, 47), Image.NEAREST)) > 0
    np.testing.assert_array_equal(masks[0].numpy(), expected)


def test_grayscale_images_come_out_with_three_channels(synthetic_root, tmp_path):
    root = copy_category(synthetic_root, tmp_path)
    path = root / "bottle" / "train" / "good" / "000.png"
    Image.open(path).convert("L").save(path)
    image = data.MVTecAD(root, "bottle", "train", image_size=None)[0]["image"]
    assert image.shape[0] == 3
    torch.testing.assert_close(image[0], image[2])


def test_missing_root_says_how_to_get_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data.*synthetic"):
        data.MVTecAD(tmp_path / "nowhere", "bottle")


def test_unknown_category_lists_what_exists(synthetic_root):
    with pytest.raises(ValueError, match="unknown category 'botle'.*present: bottle, carpet, pill, wood"):
        data.MVTecAD(synthetic_root, "botle")


def test_unknown_split_and_defect_type(synthetic_root):
    with pytest.raises(ValueError, match="unknown split 'val'"):
        data.MVTecAD(synthetic_root, "bottle", "val")
    with pytest.raises(ValueError, match="unknown defect types \\['crack'\\]"):
        data.MVTecAD(synthetic_root, "bottle", "test", defect_types=["crack"])


def test_image_without_mask_names_the_file(synthetic_root, tmp_path):
    root = copy_category(synthetic_root, tmp_path)
    (root / "bottle" / "ground_truth" / "contamination" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match="no ground-truth mask .* for images: .*contamination/001.png"):
        data.MVTecAD(root, "bottle", "test")


def test_mask_without_image_names_the_file(synthetic_root, tmp_path):
    root = copy_category(synthetic_root, tmp_path)
    (root / "bottle" / "test" / "contamination" / "001.png").unlink()
    with pytest.raises(ValueError, match="masks without an image in test/contamination: .*001_mask.png"):
        data.MVTecAD(root, "bottle", "test")


def test_corrupt_png_names_the_file(synthetic_root, tmp_path):
    root = copy_category(synthetic_root, tmp_path)
    broken = root / "bottle" / "train" / "good" / "000.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dataset = data.MVTecAD(root, "bottle", "train")
    with pytest.raises(OSError, match="cannot read image .*000.png"):
        dataset[0]


def test_transform_moves_image_and_mask_together(synthetic_root):
    from torchvision.transforms import v2

    plain = data.MVTecAD(synthetic_root, "bottle", "test", image_size=32)
    flipped = data.MVTecAD(synthetic_root, "bottle", "test", image_size=32, transform=v2.RandomHorizontalFlip(p=1.0))
    index = 0  # a defective image: its mask is not empty
    assert plain[index]["mask"].any()
    torch.testing.assert_close(flipped[index]["image"], plain[index]["image"].flip(-1))
    assert torch.equal(flipped[index]["mask"], plain[index]["mask"].flip(-1))
    assert type(flipped[index]["mask"]) is torch.Tensor


def test_validation_split_is_seeded_and_disjoint(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "bottle", "train", image_size=32)
    train, validation = data.train_validation_split(dataset, validation_fraction=0.25, seed=3)
    again, _ = data.train_validation_split(dataset, validation_fraction=0.25, seed=3)
    assert train.indices == again.indices
    assert set(train.indices).isdisjoint(validation.indices)
    assert len(train) + len(validation) == len(dataset) and len(validation) == 2
    with pytest.raises(ValueError, match="validation_fraction must be in"):
        data.train_validation_split(dataset, validation_fraction=1.0)


def test_stack_returns_arrays_in_order(synthetic_root):
    dataset = data.MVTecAD(synthetic_root, "pill", "test", image_size=32)
    images, masks, labels, defect_types = data.stack(dataset, progress=False)
    assert images.shape == (len(dataset), 3, 32, 32) and masks.shape == (len(dataset), 32, 32)
    np.testing.assert_array_equal(labels, dataset.labels)
    assert defect_types == dataset.defect_types


def _tar_category(source_root, category, archive):
    import tarfile

    with tarfile.open(archive, "w:xz") as tar:
        tar.add(source_root / category, arcname=category)


def test_download_from_a_manual_archive_verifies_and_extracts(synthetic_root, tmp_path):
    archive = tmp_path / "mvtec_anomaly_detection.tar.xz"
    _tar_category(synthetic_root, "bottle", archive)
    root = data.download(tmp_path / "out", ["bottle"], archive=archive, sha256=data.sha256_of(archive))
    assert len(data.MVTecAD(root, "bottle", "test")) == len(data.MVTecAD(synthetic_root, "bottle", "test"))


def test_tampered_archive_is_refused_and_the_users_file_left_as_it_is(synthetic_root, tmp_path):
    archive = tmp_path / "mvtec_anomaly_detection.tar.xz"
    _tar_category(synthetic_root, "bottle", archive)
    content = archive.read_bytes()
    with pytest.raises(ValueError, match="SHA-256 .* expected 0000.*; it is left as it is"):
        data.download(tmp_path / "out", ["bottle"], archive=archive, sha256="0" * 64)
    assert not (tmp_path / "out" / "bottle").exists()
    assert archive.read_bytes() == content and not (tmp_path / "mvtec_anomaly_detection.tar.xz.corrupt").exists()


def test_failed_download_keeps_partial_file_and_says_what_to_do(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(OSError, match="partial file .* is kept.*download by hand"):
        data.download(tmp_path, ["bottle"], url="https://example.invalid/mvtec_anomaly_detection.tar.xz")


def test_download_resumes_a_partial_file(synthetic_root, tmp_path, monkeypatch):
    import io

    archive = tmp_path / "source.tar.xz"
    _tar_category(synthetic_root, "bottle", archive)
    payload = archive.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / "mvtec_anomaly_detection.tar.xz.part").write_bytes(payload[:1000])
    requested = {}

    class Response(io.BytesIO):
        status = 206
        headers = {"Content-Length": str(len(payload) - 1000)}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def serve(request, timeout):
        requested["range"] = request.get_header("Range")
        return Response(payload[1000:])

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    data.download(out, ["bottle"], url="https://example.invalid/mvtec_anomaly_detection.tar.xz",
                  sha256=data.sha256_of(archive))
    assert requested["range"] == "bytes=1000-"
    assert (out / "bottle" / "train" / "good").is_dir()


def test_load_split_holds_the_protocol_images(synthetic_root):
    split = data.load_split(synthetic_root, "bottle", image_size=32, validation_fraction=0.25, seed=1, progress=False)
    train, validation = data.train_validation_split(data.MVTecAD(synthetic_root, "bottle", "train", image_size=32),
                                                    validation_fraction=0.25, seed=1)
    torch.testing.assert_close(split.train, data.stack(train, progress=False)[0])
    torch.testing.assert_close(split.validation, data.stack(validation, progress=False)[0])
    test_images, masks, labels, defect_types = data.stack(data.MVTecAD(synthetic_root, "bottle", "test", image_size=32),
                                                          progress=False)
    torch.testing.assert_close(split.test, test_images)
    np.testing.assert_array_equal(split.masks, masks)
    np.testing.assert_array_equal(split.labels, labels)
    assert split.defect_types == defect_types and len(split.test_paths) == len(labels)
    assert "train 6, validation 2" in repr(split)


# ----------------------------------------------------------------------------- paths the user gives
def test_relative_and_home_paths_are_resolved_once_where_they_were_given(synthetic_root, tmp_path, monkeypatch):
    copy_category(synthetic_root, tmp_path / "project" / "data")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setenv(settings.ROOT_ENV, "data")
    root = settings.data_root()
    dataset = data.MVTecAD("data", "bottle", "train")
    monkeypatch.chdir(tmp_path)  # a later change of directory changes neither
    assert root == dataset.root == tmp_path / "project" / "data"
    assert len(dataset[0]["image"]) == 3
    assert data.MVTecAD("~/project/data", "bottle", "train").root == root
    images, paths = data.read_folder("~/project/data/bottle/train", image_size=8)
    assert paths[0].is_absolute() and len(images) == len(dataset)


def test_make_exports_a_relative_mvtec_root_absolute_for_the_notebooks(synthetic_root, tmp_path):
    """`MVTEC_ROOT=data/mvtec_ad make course`: nbconvert starts each kernel in notebooks/, not where make ran."""
    if shutil.which("make") is None:
        pytest.skip("needs GNU make")
    copy_category(synthetic_root, tmp_path / "data" / "mvtec_ad")
    (tmp_path / "notebooks").mkdir()
    kernel = ("from mvtec_tutorial import data, settings; "
              "print(settings.data_root(), len(data.MVTecAD(settings.data_root(), 'bottle', 'train')))")
    # A recipe that starts Python in notebooks/ with make's environment, as `make course` starts each kernel.
    recipe = f'probe: ; cd notebooks && "{sys.executable}" -c "{kernel}"'
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), settings.ROOT_ENV: "data/mvtec_ad"}
    result = subprocess.run(["make", "--no-print-directory", "-s", "-f", str(REPOSITORY / "Makefile"),
                             f"--eval={recipe}", "probe"], cwd=tmp_path, env=environment, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    n_train = len(data.MVTecAD(synthetic_root, "bottle", "train"))
    assert result.stdout.split() == [str(tmp_path / "data" / "mvtec_ad"), str(n_train)]
