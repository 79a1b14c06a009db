"""Folders of one's own images: data.read_folder, data.read_folder_masks, synthetic.demo_folder."""
import numpy as np
import pytest
import torch
from PIL import Image

from mvtec_tutorial import data, synthetic


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def solid(value, size=(6, 8)):
    return np.full((*size, 3), value, dtype=np.uint8)


def test_reads_every_image_recursively_in_any_case_sorted_by_path(tmp_path):
    save(tmp_path / "b" / "x.PNG", solid((255, 0, 51)))
    save(tmp_path / "a.bmp", solid((0, 255, 0)))
    save(tmp_path / "b" / "c" / "y.JpG", solid(255))
    save(tmp_path / "gray.png", np.full((6, 8), 102))  # single channel: copied to three
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".ipynb_checkpoints" / "z.png", solid(0))
    save(tmp_path / ".hidden.png", solid(0))
    images, paths = data.read_folder(tmp_path, image_size=None)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["a.bmp", "b/c/y.JpG", "b/x.PNG", "gray.png"]
    assert images.shape == (4, 3, 6, 8) and images.dtype == torch.float32
    np.testing.assert_allclose(images[0, :, 0, 0], [0, 1, 0])
    np.testing.assert_allclose(images[2, :, 0, 0], [1, 0, 0.2])
    np.testing.assert_allclose(images[3, :, 0, 0], [0.4, 0.4, 0.4])
    assert torch.allclose(images[1], torch.ones(3, 6, 8), atol=2 / 255)  # JPEG is lossy, white stays near white


def test_resizes_like_pillow_bilinear(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3))
    save(tmp_path / "a.png", pixels)
    images, _ = data.read_folder(tmp_path, image_size=16)
    expected = np.asarray(Image.fromarray(pixels.astype(np.uint8)).resize((16, 16), Image.BILINEAR)) / 255.0
    np.testing.assert_allclose(images[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_pattern_selects_files(tmp_path):
    save(tmp_path / "top.png", solid(0))
    save(tmp_path / "camera_1" / "deep.png", solid(0))
    _, paths = data.read_folder(tmp_path, image_size=8, pattern="*")
    assert [p.name for p in paths] == ["top.png"]
    _, paths = data.read_folder(tmp_path, image_size=8, pattern="camera_1/**/*")
    assert [p.name for p in paths] == ["deep.png"]


def test_missing_or_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder; pass the folder that holds your images"):
        data.read_folder(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"no image file matching '\*\*/\*' under .*\.png, \.jpg"):
        data.read_folder(tmp_path)


def test_unreadable_file_is_named(tmp_path):
    save(tmp_path / "good.png", solid(0))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"cannot read image .*broken\.png.*Replace or delete this file"):
        data.read_folder(tmp_path)


def test_sizes_must_agree_without_image_size(tmp_path):
    save(tmp_path / "a.png", solid(0, size=(6, 8)))
    save(tmp_path / "b.png", solid(0, size=(7, 8)))
    with pytest.raises(ValueError, match=r"b\.png is \(7, 8\) px but .*a\.png is \(6, 8\) px; pass image_size"):
        data.read_folder(tmp_path, image_size=None)


@pytest.fixture
def images_and_masks(tmp_path):
    """Three images in two sub-folders; masks for two of them, one named with '_mask'."""
    for name in ("a.png", "line/b.jpg", "line/c.PNG"):
        save(tmp_path / "images" / name, solid(0, size=(10, 10)))
    mask_b = np.zeros((10, 10)); mask_b[2:5, 3:9] = 255
    mask_c = np.zeros((10, 10)); mask_c[7, 7] = 1  # 0/1 masks count too
    save(tmp_path / "masks" / "line" / "b.png", mask_b)
    save(tmp_path / "masks" / "line" / "c_mask.bmp", mask_c)
    return tmp_path, mask_b > 0, mask_c > 0


def test_masks_are_matched_by_sub_folder_and_name(images_and_masks):
    root, mask_b, mask_c = images_and_masks
    _, paths = data.read_folder(root / "images", image_size=None)
    masks = data.read_folder_masks(root / "masks", paths, image_folder=root / "images", image_size=None)
    assert masks.dtype == bool and masks.shape == (3, 10, 10)
    assert not masks[0].any()  # a.png has no mask: a good image
    np.testing.assert_array_equal(masks[1], mask_b)
    np.testing.assert_array_equal(masks[2], mask_c)


def test_masks_are_resized_with_nearest_neighbour(images_and_masks):
    root, mask_b, _ = images_and_masks
    _, paths = data.read_folder(root / "images", image_size=5)
    masks = data.read_folder_masks(root / "masks", paths, image_folder=root / "images", image_size=5)
    expected = np.asarray(Image.fromarray(mask_b).resize((5, 5), Image.NEAREST))
    assert masks.shape == (3, 5, 5)
    np.testing.assert_array_equal(masks[1], expected)


def test_mask_errors_name_the_file_and_the_fix(images_and_masks):
    root, _, _ = images_and_masks
    _, paths = data.read_folder(root / "images", image_size=None)
    read = lambda size=None: data.read_folder_masks(root / "masks", paths, image_folder=root / "images",
                                                    image_size=size)
    with pytest.raises(ValueError, match=r"b\.png has 18 defect pixels at 10 x 10 px but none at image_size=3"):
        read(3)
    save(root / "masks" / "line" / "c.png", np.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"c\.png and .*c_mask\.bmp are both masks of the image line/c"):
        read()
    (root / "masks" / "line" / "c.png").unlink()
    save(root / "masks" / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"mask .*a\.png is 4 x 4 px but its image .*a\.png is 10 x 10 px"):
        read()
    (root / "masks" / "a.png").rename(root / "masks" / "d.png")
    with pytest.raises(ValueError, match=r"masks without an image in .*images: .*d\.png; a mask must have"):
        read()
    with pytest.raises(ValueError, match="images not under image_folder"):
        data.read_folder_masks(root / "masks", paths, image_folder=root / "masks")
    with pytest.raises(FileNotFoundError, match="mask folder .* is not a folder"):
        data.read_folder_masks(root / "nowhere", paths, image_folder=root / "images")


def test_demo_folder_holds_the_synthetic_images_with_their_masks(tmp_path):
    sizes = dict(image_size=64, n_normal=5, n_new_good=2, n_new_per_defect=1, seed=3)
    folder = synthetic.demo_folder(tmp_path / "parts", **sizes)
    normal, normal_paths = data.read_folder(folder / "normal", image_size=None)
    new, new_paths = data.read_folder(folder / "new", image_size=None)
    masks = data.read_folder_masks(folder / "masks", new_paths, image_folder=folder / "new", image_size=None)
    assert {p.parent.name for p in normal_paths} == {"line_a", "line_b"}
    assert {p.suffix for p in normal_paths} == {".png", ".PNG", ".bmp"}
    # An independent copy of the same synthetic category: every file must come from it, each mask with its image.
    source = synthetic.make_dataset(tmp_path / "source", categories=["bottle"], seed=3, image_size=64, n_train=5,
                                    n_test_good=2, n_test_per_defect=1, progress=False)
    train = data.stack(data.MVTecAD(source, "bottle", "train", image_size=None), progress=False)[0]
    test, test_masks, test_labels, _ = data.stack(data.MVTecAD(source, "bottle", "test", image_size=None),
                                                  progress=False)
    assert torch.equal(normal[torch.argsort(torch.tensor([int(p.stem[-3:]) for p in normal_paths]))], train)
    assert len(new) == len(test) and masks.any(axis=(1, 2)).sum() == test_labels.sum() == 3
    for image, mask in zip(new, masks):
        match = [i for i in range(len(test)) if torch.equal(test[i], image)]
        assert len(match) == 1 and np.array_equal(test_masks[match[0]], mask)


def test_demo_folder_never_overwrites(tmp_path):
    (tmp_path / "mine.png").write_bytes(b"")
    with pytest.raises(FileExistsError, match="is not empty; pass a new or empty folder"):
        synthetic.demo_folder(tmp_path, image_size=64, n_normal=2)
