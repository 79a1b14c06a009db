"""MVTec AD on disk -> PyTorch datasets.

The official layout, which any category folder of your own may follow too::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect_type>/000.png
    <root>/<category>/ground_truth/<defect_type>/000_mask.png

Masks are matched to images by file name, never by sort position, and a test image
without its mask (or a mask without its image) is an error that names the file. File
extensions may be in any case (``000.PNG``). A mask pixel is defective when its colour is not
black, so 0/255, 0/1, coloured and palette masks all work; a mask must have its image's size.
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm.auto import tqdm

GOOD = "good"
SPLITS = ("train", "test")
#: File name endings, compared without regard to case.
IMAGE_SUFFIX = ".png"
MASK_SUFFIX = "_mask.png"


@dataclass(frozen=True)
class Augmentation:
    """Random geometric changes that keep a normal image of a category normal.

    Attributes
    ----------
    rotation : float
        Largest rotation in degrees, drawn uniformly from ``[-rotation, rotation]``; 180 = any angle.
    hflip, vflip : bool
        Mirror left-right / top-bottom with probability 1/2.
    translation : float
        Largest shift of a whole image as a fraction of its side (patches move anywhere inside).
    """

    rotation: float = 0.0
    hflip: bool = False
    vflip: bool = False
    translation: float = 0.0


@dataclass(frozen=True)
class CategoryInfo:
    """Facts about one MVTec AD category, from Table 1 of Bergmann et al. (CVPR 2019).

    Attributes
    ----------
    kind : {"texture", "object"}
    n_train, n_test_good, n_test_defective : int
        Image counts of the official splits.
    n_defect_types, n_defect_regions : int
        Number of defect types and of annotated connected defect regions.
    side_length : int
        Side of the square images in pixels.
    grayscale : bool
        True for the three single-channel categories (grid, screw, zipper).
    augmentation : Augmentation
        The poses a normal image may be shown in without becoming a defect (the comment above the
        table in this module's source); the autoencoders draw their training views with it.
    """

    kind: str
    n_train: int
    n_test_good: int
    n_test_defective: int
    n_defect_types: int
    n_defect_regions: int
    side_length: int
    grayscale: bool = False
    augmentation: Augmentation = Augmentation()


_ANY_POSE = Augmentation(rotation=180.0, hflip=True, vflip=True)
_SHIFT = 0.05  # of the side: objects are centred, so a small shift keeps them whole
# Legal augmentations: Bergmann et al. (CVPR 2019, Sec. 4.1) augment textures by random rotated
# crops and objects by translation, rotation and mirroring "where applicable", without listing
# them; this table is our reading of Table 1's defect types. Never mirror where a mirror image is
# itself a defect or changes printed text (metal_nut has a "flip" defect; capsule and pill carry
# imprints; cable's wire order is a "cable_swap" defect), never rotate where pose is fixed or is
# itself a defect (transistor "misplaced"; wood grain always runs vertically).
_TABLE_1 = {
    "carpet": CategoryInfo("texture", 280, 28, 89, 5, 97, 1024, augmentation=_ANY_POSE),
    "grid": CategoryInfo("texture", 264, 21, 57, 5, 170, 1024, grayscale=True, augmentation=_ANY_POSE),
    "leather": CategoryInfo("texture", 245, 32, 92, 5, 99, 1024, augmentation=_ANY_POSE),
    "tile": CategoryInfo("texture", 230, 33, 84, 5, 86, 840, augmentation=_ANY_POSE),
    "wood": CategoryInfo("texture", 247, 19, 60, 5, 168, 1024, augmentation=Augmentation(hflip=True, vflip=True)),
    "bottle": CategoryInfo("object", 209, 20, 63, 3, 68, 900, augmentation=Augmentation(
        rotation=180.0, hflip=True, vflip=True, translation=_SHIFT)),
    "cable": CategoryInfo("object", 224, 58, 92, 8, 151, 1024, augmentation=Augmentation(translation=_SHIFT)),
    "capsule": CategoryInfo("object", 219, 23, 109, 5, 114, 1000, augmentation=Augmentation(translation=_SHIFT)),
    "hazelnut": CategoryInfo("object", 391, 40, 70, 4, 136, 1024, augmentation=Augmentation(
        rotation=180.0, hflip=True, vflip=True, translation=_SHIFT)),
    "metal_nut": CategoryInfo("object", 220, 22, 93, 4, 132, 700, augmentation=Augmentation(
        rotation=180.0, translation=_SHIFT)),
    "pill": CategoryInfo("object", 267, 26, 141, 7, 245, 800, augmentation=Augmentation(translation=_SHIFT)),
    "screw": CategoryInfo("object", 320, 41, 119, 5, 135, 1024, grayscale=True, augmentation=Augmentation(
        rotation=180.0, translation=_SHIFT)),
    "toothbrush": CategoryInfo("object", 60, 12, 30, 1, 66, 1024, augmentation=Augmentation(
        hflip=True, translation=_SHIFT)),
    "transistor": CategoryInfo("object", 213, 60, 40, 4, 44, 1024, augmentation=Augmentation()),
    "zipper": CategoryInfo("object", 240, 32, 119, 7, 177, 1024, grayscale=True, augmentation=Augmentation(
        hflip=True, vflip=True, translation=_SHIFT)),
}
#: The 15 MVTec AD categories, textures first, as in the paper's tables.
CATEGORIES: tuple[str, ...] = tuple(_TABLE_1)
TEXTURES = tuple(name for name, info in _TABLE_1.items() if info.kind == "texture")
OBJECTS = tuple(name for name, info in _TABLE_1.items() if info.kind == "object")


def category_info(name: str) -> CategoryInfo:
    """Return the paper's facts about category ``name`` (see :class:`CategoryInfo`).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`CATEGORIES`.
    """
    if name not in _TABLE_1:
        raise ValueError(f"unknown category {name!r}; known: {', '.join(CATEGORIES)}")
    return _TABLE_1[name]


def _open(path: str | Path) -> Image.Image:
    """Read an image file completely, or raise :class:`OSError` naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (UnidentifiedImageError, OSError) as error:
        raise OSError(f"cannot read image {path}: {error}. Replace or delete this file.") from error


def _is_16_bit(image: Image.Image) -> bool:
    # Pillow opens 16-bit grayscale PNGs as "I;16" (older versions as "I"); convert("RGB") would
    # clip every value above 255 and give an all-white image.
    return image.mode.startswith("I")


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB at its file size.

    Grayscale, palette and alpha images are converted (alpha is dropped); 16-bit images keep
    their high byte, as Pillow itself reads 16-bit RGB PNGs, so 65535 becomes 255.

    Raises
    ------
    OSError
        Naming the file, if it cannot be read.
    """
    image = _open(path)
    if _is_16_bit(image):
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    return image.convert("RGB")


def read_mask(path: str | Path) -> np.ndarray:
    """Open a mask file as a bool array (H, W) at its file size: True where the colour is not black.

    Any non-zero value in any colour channel counts as defective (alpha is ignored), so
    0/255 and 0/1 grayscale masks, coloured masks and palette masks all work.

    Raises
    ------
    OSError
        Naming the file, if it cannot be read.
    """
    image = _open(path)
    if not (_is_16_bit(image) or image.mode in ("1", "L")):
        image = image.convert("RGB")  # palette indices become colours; alpha is dropped
    values = np.asarray(image)
    return values != 0 if values.ndim == 2 else values.any(axis=-1)


def _resize(image: Image.Image, size: int | None, resample: int) -> Image.Image:
    return image if size is None or image.size == (size, size) else image.resize((size, size), resample)


class MVTecAD(Dataset):
    """One category and split of MVTec AD (or any folder in its layout).

    Parameters
    ----------
    root : str or Path
        Folder holding the category folders, e.g. ``mvtec_anomaly_detection/``.
    category : str
        Category folder name, e.g. ``"bottle"``; need not be one of the 15.
    split : {"train", "test"}
    image_size : int or None, default=256
        Images and masks are resized to ``image_size`` x ``image_size``; None keeps the file size.
    defect_types : str or sequence of str, optional
        Keep only these test folders (``"good"`` included); a single name may be given as a
        string (``defect_types="good"``); default all.
    transform : callable, optional
        Called as ``transform(image, mask)`` and returning both, e.g. a torchvision
        ``transforms.v2`` pipeline (the mask arrives as a ``tv_tensors.Mask``).

    Each item is a dict: ``image`` float32 tensor (3, H, W) in [0, 1] (grayscale copied to three
    channels), ``mask`` bool tensor (H, W) (all False for good images), ``label`` int (0 good,
    1 defective), ``defect_type`` str and ``path`` str.

    Raises
    ------
    FileNotFoundError
        If ``root`` or the split folder is missing, or a test image has no mask.
    ValueError
        If ``category`` or ``split`` is unknown, a mask has no image, or two files differ only
        in the case of their extension. When an item is read: if its mask's size differs from
        its image's, or the mask of a defective image is empty (before or after resizing).

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, n_train=4,
    ...                               progress=False)  # tmp_path: any empty folder
    >>> dataset = MVTecAD(root, "bottle", "test", image_size=64)
    >>> item = dataset[0]; item["image"].shape, item["mask"].shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]))
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        *,
        image_size: int | None = 256,
        defect_types: Sequence[str] | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.category = category
        self.split = split
        self.image_size = image_size
        self.transform = transform
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        _check_category_folder(self.root, category)
        split_dir = self.root / category / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir} is missing; expected the MVTec AD layout (see mvtec_tutorial.data)")
        available = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if isinstance(defect_types, str):
            defect_types = [defect_types]  # one name, not a sequence of letters
        if defect_types is not None:
            unknown = sorted(set(defect_types) - set(available))
            if unknown:
                raise ValueError(f"unknown defect types {unknown} in {split_dir}; available: {', '.join(available)}")
            available = [name for name in available if name in defect_types]
        self.samples: list[tuple[Path, Path | None, str]] = []
        for defect_type in available:
            images = sorted(_files_ending(split_dir / defect_type, IMAGE_SUFFIX).values())
            masks = _match_masks(self.root / category / "ground_truth" / defect_type, images, defect_type)
            self.samples += [(image, mask, defect_type) for image, mask in zip(images, masks)]
        if not self.samples:
            raise FileNotFoundError(f"no {IMAGE_SUFFIX} images under {split_dir}")

    @property
    def labels(self) -> np.ndarray:
        """Labels of all items, (N,) int64, 1 = defective; no image is read."""
        return np.array([int(defect != GOOD) for _, _, defect in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> list[str]:
        """Defect type of every item, in order; no image is read."""
        return [defect for _, _, defect in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        image_path, mask_path, defect_type = self.samples[index]
        image = read_image(image_path)
        mask = None if mask_path is None else _checked_mask(mask_path, image_path, image.size, self.image_size)
        image = _resize(image, self.image_size, Image.BILINEAR)
        image = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mask = torch.zeros(image.shape[1:], dtype=torch.bool) if mask is None else torch.from_numpy(mask)
        if self.transform is not None:
            from torchvision import tv_tensors

            image, mask = self.transform(image, tv_tensors.Mask(mask))
            mask = mask.as_subclass(torch.Tensor)
        return {"image": image, "mask": mask, "label": int(defect_type != GOOD),
                "defect_type": defect_type, "path": str(image_path)}

    def __repr__(self) -> str:
        return f"MVTecAD(root={str(self.root)!r}, category={self.category!r}, split={self.split!r}, n={len(self)})"


def _check_category_folder(root: Path, category: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset root {root} does not exist. Download MVTec AD with `make data` "
            "(mvtec_tutorial.data.download), or build the synthetic stand-in with "
            "mvtec_tutorial.synthetic.make_dataset(root), or unset MVTEC_ROOT to use it."
        )
    if not (root / category).is_dir():
        present = sorted(p.name for p in root.iterdir() if (p / "train").is_dir())
        raise ValueError(
            f"unknown category {category!r} in {root}; present: {', '.join(present) or 'none'}"
            f" (MVTec AD has: {', '.join(CATEGORIES)})"
        )


def _checked_mask(mask_path: Path, image_path: Path, image_size: tuple[int, int], size: int | None) -> np.ndarray:
    """Read a defective image's mask, check it against its image and resize it with nearest neighbour."""
    mask = read_mask(mask_path)
    width, height = image_size
    if mask.shape != (height, width):  # checked at file size: resizing would hide the mismatch
        raise ValueError(f"mask {mask_path} is {mask.shape[1]} x {mask.shape[0]} px but its image {image_path} "
                         f"is {width} x {height} px; a mask must have its image's size: fix or replace it")
    if not mask.any():
        raise ValueError(f"mask {mask_path} is empty (all black) but its image {image_path} is in a defect "
                         "folder; MVTec AD masks of defective images are never empty: fix the mask, or move "
                         f"the image to test/{GOOD} and delete the mask")
    resized = np.asarray(_resize(Image.fromarray(mask), size, Image.NEAREST))
    if not resized.any():
        raise ValueError(f"mask {mask_path} has {int(mask.sum())} defect pixels at {width} x {height} px but none "
                         f"at image_size={size} (nearest-neighbour resizing missed the defect); use a larger "
                         "image_size")
    return resized.astype(bool)


def _files_ending(folder: Path, suffix: str) -> dict[str, Path]:
    """Files in ``folder`` whose name ends in ``suffix`` in any case, keyed by the name without it."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.name.lower().endswith(suffix):
            key = path.name[: -len(suffix)]
            if key in files:
                raise ValueError(f"{files[key]} and {path} differ only in the case of their extension; "
                                 "delete one of them")
            files[key] = path
    return files


def _match_masks(mask_dir: Path, images: list[Path], defect_type: str) -> list[Path | None]:
    """Pair each image with ``<mask_dir>/<stem>_mask.png`` by name; good images have none."""
    if defect_type == GOOD:
        return [None] * len(images)
    masks = _files_ending(mask_dir, MASK_SUFFIX)
    stems = {p.stem for p in images}
    missing = [str(p) for p in images if p.stem not in masks]
    if missing:
        raise FileNotFoundError(f"no ground-truth mask in {mask_dir} for images: {', '.join(missing)}")
    orphans = sorted(str(masks[stem]) for stem in set(masks) - stems)
    if orphans:
        raise ValueError(f"masks without an image in test/{defect_type}: {', '.join(orphans)}")
    return [masks[p.stem] for p in images]


def train_validation_split(dataset: Dataset, *, validation_fraction: float = 0.2,
                           seed: int = 0) -> tuple[Subset, Subset]:
    """Hold out a seeded random fraction of the (normal) training images for validation.

    Thresholds are chosen on the validation part, which the model never trains on.

    Returns
    -------
    train, validation : torch.utils.data.Subset
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if len(dataset) < 2:
        raise ValueError(f"got {len(dataset)} training image(s), but at least 2 are needed: one to train on and "
                         "one held out to choose the threshold; add normal images to train/good, or fit the "
                         "detector on your images directly (detector.fit(images)) without a validation threshold")
    n_validation = max(1, round(len(dataset) * validation_fraction))
    if n_validation >= len(dataset):
        raise ValueError(f"cannot hold out {n_validation} of {len(dataset)} images; use a validation_fraction "
                         f"below {(len(dataset) - 0.5) / len(dataset):.2f}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    return Subset(dataset, sorted(order[n_validation:].tolist())), Subset(dataset, sorted(order[:n_validation].tolist()))


def stack(dataset: Dataset, *, progress: bool = True) -> tuple[torch.Tensor, np.ndarray, np.ndarray, list[str]]:
    """Read a whole dataset into memory.

    Returns
    -------
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
    masks : ndarray of shape (N, H, W), bool
    labels : ndarray of shape (N,), int64, 1 = defective
    defect_types : list of str, length N

    Raises
    ------
    ValueError
        If the dataset is empty, or its images differ in size (the message names the first
        image of another size than the first one).
    """
    items = [dataset[i] for i in tqdm(range(len(dataset)), desc="loading images", disable=not progress, leave=False)]
    if not items:
        raise ValueError("the dataset is empty")
    shapes = [tuple(item["image"].shape) for item in items]
    odd = next((index for index, shape in enumerate(shapes) if shape != shapes[0]), None)
    if odd is not None:
        first, other = (items[index].get("path", f"item {index}") for index in (0, odd))
        raise ValueError(f"images differ in size: {other} is {shapes[odd]} but {first} is {shapes[0]}; "
                         "pass image_size to MVTecAD (e.g. image_size=256) to resize every image to one size")
    images = torch.stack([item["image"] for item in items])
    masks = torch.stack([item["mask"] for item in items]).numpy().astype(bool)
    labels = np.array([item["label"] for item in items], dtype=np.int64)
    return images, masks, labels, [item["defect_type"] for item in items]


@dataclass(frozen=True)
class Split:
    """A category's images as the evaluation protocol uses them, all in memory.

    Attributes
    ----------
    category : str
    train : torch.Tensor of shape (N_train, 3, H, W), float32 in [0, 1]
        Normal training images the method learns from.
    validation : torch.Tensor of shape (N_validation, 3, H, W), float32 in [0, 1]
        Normal training images held out to choose the threshold on; never trained on.
    test : torch.Tensor of shape (N_test, 3, H, W), float32 in [0, 1]
    masks : ndarray of shape (N_test, H, W), bool
        Ground-truth defect pixels of the test images.
    labels : ndarray of shape (N_test,), int64
        1 = defective.
    defect_types : list of str
        Defect type of every test image (``"good"`` for normal ones).
    test_paths : list of str
        File of every test image.
    """

    category: str
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor
    masks: np.ndarray
    labels: np.ndarray
    defect_types: list[str]
    test_paths: list[str]

    def __repr__(self) -> str:
        return (f"Split({self.category!r}: train {len(self.train)}, validation {len(self.validation)}, "
                f"test {len(self.test)} ({int(self.labels.sum())} defective), {tuple(self.test.shape[-2:])} px)")


def load_split(root: str | Path, category: str, *, image_size: int | None = 256, validation_fraction: float = 0.2,
               seed: int = 0, progress: bool = True) -> Split:
    """Read a category's training, validation and test images into memory, the protocol's way.

    The training images are split with :func:`train_validation_split` (seeded), the test split is
    read whole with its masks. Every method in the course is fitted, thresholded and evaluated on
    such a split (:func:`mvtec_tutorial.benchmark.evaluate_method`).

    Parameters
    ----------
    root : str or Path
        Dataset root, e.g. :func:`mvtec_tutorial.settings.data_root`.
    category : str
    image_size : int or None, default=256
        Side images and masks are resized to (see :class:`MVTecAD`).
    validation_fraction : float, default=0.2
        Share of the normal training images held out for the threshold.
    seed : int, default=0
        Seeds the choice of validation images.
    progress : bool, default=True
        Show progress bars while reading.

    Returns
    -------
    Split

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, n_train=10, progress=False)
    >>> load_split(root, "bottle", image_size=64, progress=False)
    Split('bottle': train 8, validation 2, test 28 (18 defective), (64, 64) px)
    """
    train, validation = train_validation_split(MVTecAD(root, category, "train", image_size=image_size),
                                               validation_fraction=validation_fraction, seed=seed)
    test = MVTecAD(root, category, "test", image_size=image_size)
    test_images, masks, labels, defect_types = stack(test, progress=progress)
    return Split(category=category, train=stack(train, progress=progress)[0],
                 validation=stack(validation, progress=progress)[0], test=test_images, masks=masks,
                 labels=labels, defect_types=defect_types, test_paths=[str(path) for path, _, _ in test.samples])


#: ITU-R 601-2 luma weights, as PIL's ``convert("L")``: the paper trains SSIM models and
#: the classical models work on such gray values.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Convert RGB images to luma (the one grayscale conversion of the package).

    Parameters
    ----------
    images : torch.Tensor of shape (N, 3, H, W)

    Returns
    -------
    torch.Tensor of shape (N, 1, H, W), same dtype and device.

    Examples
    --------
    >>> to_grayscale(torch.ones(2, 3, 4, 4)).shape
    torch.Size([2, 1, 4, 4])
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images of shape (N, 3, H, W), got {tuple(images.shape)}")
    weights = torch.tensor(LUMA_WEIGHTS, dtype=images.dtype, device=images.device)
    return torch.einsum("nchw,c->nhw", images, weights).unsqueeze(1)


def as_images(images: Any, *, progress: bool = False) -> torch.Tensor:
    """Convert a dataset, tensor or array of images to a float32 tensor (N, 3, H, W) in [0, 1].

    Accepts a Dataset of item dicts (as :class:`mvtec_tutorial.data.MVTecAD` gives), a tensor or
    ndarray of shape (N, 3, H, W), float in [0, 1]. One image is ``image[None]`` (1, 3, H, W):
    a 3-D array is refused, since (3, H, W) may as well be three grayscale images.

    Raises
    ------
    TypeError
        For file paths, a folder, a DataLoader, a :class:`Split` or anything else that is not images.
    ValueError
        If the shape is not (N, 3, H, W), the values leave [0, 1] or are not finite.
    """
    _check_image_container(images)
    if isinstance(images, Dataset):
        images = stack(images, progress=progress)[0]
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if images.ndim == 3:
        raise ValueError(f"got a 3-D array {tuple(images.shape)}: one RGB image or {images.shape[0]} grayscale "
                         "images? Pass images as (N, 3, H, W): one image as image[None], grayscale images "
                         "(N, H, W) as images[:, None].repeat(1, 3, 1, 1) (np.repeat(images[:, None], 3, axis=1))")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}; "
                         "copy grayscale images to three channels")
    if images.shape[0] == 0:
        raise ValueError("got no images")
    images = images.float()
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"expected values in [0, 1], got [{images.min():.3g}, {images.max():.3g}]; "
                         "pass images as loaded by MVTecAD (not normalised)")
    return images


def _check_image_container(images: Any) -> None:
    """Refuse, with what to do instead, the things users pass where images are expected."""
    expected = ("fit and predict take images: a Dataset of item dicts (MVTecAD) or a tensor/ndarray "
                "(N, 3, H, W) float in [0, 1]")
    first = images[0] if isinstance(images, (list, tuple)) and len(images) else None
    if isinstance(images, (str, Path)) or isinstance(first, (str, Path)):
        raise TypeError(f"{expected}, got file paths ({images if first is None else first!s} ...); read them "
                        "first: images, paths = data.read_folder(folder) for a folder of your own, or "
                        "data.MVTecAD(root, category, 'train') for an MVTec AD category")
    if isinstance(images, DataLoader):
        raise TypeError(f"{expected}, got a DataLoader; pass its dataset (loader.dataset) instead")
    if isinstance(images, Split):
        raise TypeError(f"{expected}, got a whole Split; pass split.train to fit, split.validation or "
                        "split.test to predict")
    if not isinstance(images, (Dataset, torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"{expected}, got {type(images).__name__}")


# The official archive (all 15 categories, 4.9 GiB). Mirrors have moved before: when this URL
# rots, download by hand from MVTEC_HOMEPAGE and pass archive=<path>.
MVTEC_URL = ("https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/"
             "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz")
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_HOMEPAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
_CHUNK = 1 << 20


def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(root: str | Path, categories: Sequence[str] | None = None, *, archive: str | Path | None = None,
             url: str = MVTEC_URL, sha256: str = MVTEC_SHA256) -> Path:
    """Download (or take) the official MVTec AD archive, verify it and extract categories.

    Parameters
    ----------
    root : str or Path
        Destination; categories end up in ``<root>/<category>``.
    categories : str or sequence of str, optional
        Extract only these (one name may be a string); default all 15.
    archive : str or Path, optional
        A ``mvtec_anomaly_detection.tar.xz`` you downloaded by hand; nothing is fetched.
    url, sha256 : str
        Where to fetch from and the digest the archive must have.

    Returns
    -------
    Path
        ``root``.

    Raises
    ------
    ValueError
        If the archive's SHA-256 differs (the file is kept aside as ``*.corrupt`` and
        nothing is extracted) or a category is unknown.
    OSError
        If the download fails; the message says how to download by hand. A partial
        download is kept and resumed on the next call.
    RuntimeError
        Before anything is fetched, if this Python lacks ``tarfile``'s extraction filters
        (Python 3.11.4 or later has them), which keep the archive from writing outside ``root``.
    """
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError(f"download needs Python 3.11.4 or later to extract the archive safely "
                           f"(tarfile's filter='data'); this is Python {sys.version.split()[0]}. "
                           "Install a newer Python, then rebuild the environment: make distclean install")
    root = Path(root).expanduser()
    if isinstance(categories, str):
        categories = [categories]  # one name, not a sequence of letters
    categories = list(CATEGORIES if categories is None else categories)
    for name in categories:
        category_info(name)
    root.mkdir(parents=True, exist_ok=True)
    if archive is None:
        archive = root / Path(url).name
        if not archive.exists():
            _fetch(url, archive)
    archive = Path(archive)
    actual = sha256_of(archive)
    if actual != sha256:
        corrupt = archive.with_name(archive.name + ".corrupt")
        archive.replace(corrupt)
        raise ValueError(f"{archive} has SHA-256 {actual}, expected {sha256}; moved it to {corrupt}. "
                         f"Delete it and download again, or fetch it by hand from {MVTEC_HOMEPAGE}.")
    _extract(archive, root, categories)
    return root


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` via a ``.part`` file that a later call resumes."""
    partial = destination.with_name(destination.name + ".part")
    start = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            if start and response.status != 206:  # the server ignored the range: start over
                start = 0
            total = int(response.headers.get("Content-Length", 0)) + start
            with open(partial, "ab" if start else "wb") as file, tqdm(
                total=total or None, initial=start, unit="B", unit_scale=True, desc=destination.name
            ) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    file.write(block)
                    bar.update(len(block))
    except OSError as error:
        # 416 Range Not Satisfiable: the .part already holds every byte (the previous call was cut
        # after the last block). Take it as complete; download() then checks its SHA-256.
        complete = start and isinstance(error, urllib.error.HTTPError) and error.code == 416
        if not complete:
            raise OSError(
                f"downloading {url} failed ({error}). The partial file {partial} is kept and the next call "
                f"resumes it. To download by hand, get mvtec_anomaly_detection.tar.xz from {MVTEC_HOMEPAGE} "
                "and call download(root, archive='path/to/mvtec_anomaly_detection.tar.xz')."
            ) from error
    partial.replace(destination)


def _extract(archive: Path, root: Path, categories: Sequence[str]) -> None:
    wanted = tuple(categories)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if Path(m.name).parts and Path(m.name).parts[0] in wanted]
        for member in tqdm(members, desc="extracting", unit="file"):
            tar.extract(member, root, filter="data")
    missing = [name for name in wanted if not (root / name / "train").is_dir()]
    if missing:
        raise FileNotFoundError(f"{archive} held no folder for {', '.join(missing)}; is it the MVTec AD archive?")



# ----------------------------------------------------------------------------- your own images
#: Image files :func:`read_folder` reads, by their ending, compared without regard to case.
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _image_files(folder: Path, pattern: str) -> list[Path]:
    """Image files under ``folder`` matching ``pattern``, hidden ones left out, sorted by relative path."""
    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(folder).parts)

    paths = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES and visible(p)]
    return sorted(paths, key=lambda p: p.relative_to(folder).as_posix())


def read_folder(folder: str | Path, *, image_size: int | None = 256, pattern: str = "**/*",
                progress: bool = False) -> tuple[torch.Tensor, list[Path]]:
    """Read every image in a folder of your own, in any layout, into memory.

    Files are found recursively (``pattern`` is a :meth:`pathlib.Path.glob` pattern relative to
    ``folder``), kept when they end in one of :data:`FOLDER_SUFFIXES` in any case (``.PNG``,
    ``.Jpg``), and sorted by their path relative to ``folder``. Hidden files and folders (name
    starting with ``.``, e.g. ``.ipynb_checkpoints``) are left out. Images are read as
    :func:`read_image` does (grayscale to RGB, alpha dropped) and resized, as :class:`MVTecAD` does.

    Parameters
    ----------
    folder : str or Path
    image_size : int or None, default=256, keyword-only
        Images are resized to ``image_size`` x ``image_size`` (bilinear; non-square images are
        stretched, so crop them first if their aspect ratio matters); None keeps the file size,
        which must then be the same for every image.
    pattern : str, default="**/*", keyword-only
        Which files to look at, e.g. ``"*"`` (this folder only) or ``"camera_1/**/*"``.
    progress : bool, default=False, keyword-only

    Returns
    -------
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
    paths : list of Path, length N
        The file of every image, in order.

    Raises
    ------
    FileNotFoundError
        If ``folder`` is not a folder or holds no image file matching ``pattern``.
    OSError
        Naming the file, if an image cannot be read.
    ValueError
        With ``image_size=None``, if the images differ in size (the message names one of each).

    Examples
    --------
    >>> from PIL import Image
    >>> (tmp_path / "day_2").mkdir()
    >>> Image.new("RGB", (40, 30), "white").save(tmp_path / "day_2" / "b.JPG")
    >>> Image.new("L", (40, 30)).save(tmp_path / "a.png")
    >>> images, paths = read_folder(tmp_path, image_size=32)
    >>> tuple(images.shape), [path.relative_to(tmp_path).as_posix() for path in paths]
    ((2, 3, 32, 32), ['a.png', 'day_2/b.JPG'])
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the folder that holds your images")
    paths = _image_files(folder, pattern)
    if not paths:
        raise FileNotFoundError(f"no image file matching {pattern!r} under {folder} (looked for "
                                f"{', '.join(FOLDER_SUFFIXES)} in any case, hidden files left out); "
                                "check the folder and the pattern")
    images = []
    for path in tqdm(paths, desc="reading images", disable=not progress, leave=False):
        image = _resize(read_image(path), image_size, Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1))
    odd = next((index for index, image in enumerate(images) if image.shape != images[0].shape), None)
    if odd is not None:
        raise ValueError(f"images differ in size: {paths[odd]} is {tuple(images[odd].shape[1:])} px but {paths[0]} "
                         f"is {tuple(images[0].shape[1:])} px; pass image_size (e.g. 256) to resize every image to one "
                         "size")
    return torch.stack(images), paths


def read_folder_masks(mask_folder: str | Path, image_paths: Sequence[str | Path], *, image_folder: str | Path,
                      image_size: int | None = 256) -> np.ndarray:
    """Masks of images read with :func:`read_folder`, matched by path; an image without a mask is good.

    The mask of ``<image_folder>/<sub/folders>/<name>.<ext>`` is
    ``<mask_folder>/<sub/folders>/<name>.<ext2>`` or ``<name>_mask.<ext2>``, any ending of
    :data:`FOLDER_SUFFIXES` in any case. A pixel is defective where the mask is not black (as
    :func:`read_mask`); an all-black mask, or none, means a good image.

    Parameters
    ----------
    mask_folder : str or Path
    image_paths : sequence of str or Path, length N
        The images' files, as :func:`read_folder` returns them.
    image_folder : str or Path, keyword-only
        The folder the images were read from (:func:`read_folder`'s ``folder``).
    image_size : int or None, default=256, keyword-only
        As given to :func:`read_folder`; masks are resized with nearest neighbour.

    Returns
    -------
    ndarray of shape (N, H, W), bool
        True = defective pixel.

    Raises
    ------
    FileNotFoundError
        If ``mask_folder`` is not a folder.
    ValueError
        If an image is not under ``image_folder``; two masks belong to one image; a mask belongs
        to no image (a misspelt name); a mask's size differs from its image's; or a defect
        vanishes when the mask is resized to ``image_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from PIL import Image
    >>> for name in ("images", "masks"): (tmp_path / name).mkdir()
    >>> for name in ("a.png", "b.png"): Image.new("RGB", (8, 8)).save(tmp_path / "images" / name)
    >>> mask = np.zeros((8, 8), np.uint8); mask[2:4, 2:4] = 255
    >>> Image.fromarray(mask).save(tmp_path / "masks" / "b_mask.png")
    >>> images, paths = read_folder(tmp_path / "images", image_size=None)
    >>> masks = read_folder_masks(tmp_path / "masks", paths, image_folder=tmp_path / "images", image_size=None)
    >>> masks.shape, masks.sum(axis=(1, 2)).tolist()
    ((2, 8, 8), [0, 4])
    """
    mask_folder, image_folder = Path(mask_folder).expanduser(), Path(image_folder).expanduser()
    if not mask_folder.is_dir():
        raise FileNotFoundError(f"mask folder {mask_folder} is not a folder; pass the folder that holds your masks")

    def key(path: Path, folder: Path, *, strip_mask: bool) -> str:
        name = path.relative_to(folder).with_suffix("").as_posix()
        return name[: -len("_mask")] if strip_mask and name.endswith("_mask") else name

    masks: dict[str, Path] = {}
    for path in _image_files(mask_folder, "**/*"):
        name = key(path, mask_folder, strip_mask=True)
        if name in masks:
            raise ValueError(f"{masks[name]} and {path} are both masks of the image {name}; delete one of them")
        masks[name] = path
    image_paths = [Path(path) for path in image_paths]
    outside = [str(path) for path in image_paths if not path.is_relative_to(image_folder)]
    if outside:
        raise ValueError(f"images not under image_folder={image_folder}: {', '.join(outside[:3])}; pass the folder "
                         "they were read from")
    names = [key(path, image_folder, strip_mask=False) for path in image_paths]
    orphans = sorted(str(masks[name]) for name in set(masks) - set(names))
    if orphans:
        raise ValueError(f"masks without an image in {image_folder}: {', '.join(orphans)}; a mask must have its "
                         "image's name (and sub-folder), optionally with '_mask' before the ending")
    result = []
    for image_path, name in zip(image_paths, names):
        with Image.open(image_path) as image:
            width, height = image.size
        if name not in masks:
            result.append(np.zeros((height, width) if image_size is None else (image_size, image_size), dtype=bool))
            continue
        mask = read_mask(masks[name])
        if mask.shape != (height, width):
            raise ValueError(f"mask {masks[name]} is {mask.shape[1]} x {mask.shape[0]} px but its image {image_path} "
                             f"is {width} x {height} px; a mask must have its image's size: fix or replace it")
        resized = np.asarray(_resize(Image.fromarray(mask), image_size, Image.NEAREST)).astype(bool)
        if mask.any() and not resized.any():
            raise ValueError(f"mask {masks[name]} has {int(mask.sum())} defect pixels at {width} x {height} px but "
                             f"none at image_size={image_size}; use a larger image_size")
        result.append(resized)
    return np.stack(result)


def demo_folder(destination: str | Path, *, category: str = "bottle", image_size: int = 256, n_normal: int = 40,
                n_new_good: int = 10, n_new_per_defect: int = 2, seed: int = 0) -> Path:
    """Write a small folder of "your own images" (not in the MVTec AD layout), drawn synthetically.

    For the notebook on your own images and its test: a stand-in for the folder a reader brings.
    The images come from :func:`mvtec_tutorial.synthetic.make_dataset` (``category``, ``seed``)::

        <destination>/normal/line_a/part_000.png     normal images in two sub-folders, named
        <destination>/normal/line_b/part_001.PNG     .png, .PNG and .bmp in turn
        <destination>/new/image_000.png              images to score: good and defective, shuffled
        <destination>/masks/image_003.png            masks of the defective new images only

    Parameters
    ----------
    destination : str or Path
        Created if missing; must be empty.
    category : str, default="bottle", keyword-only
        One of :data:`mvtec_tutorial.synthetic.SYNTHETIC_CATEGORIES`.
    image_size : int, default=256, keyword-only
    n_normal, n_new_good, n_new_per_defect : int, keyword-only
        Normal images; good new images; defective new images of each of the category's defect types.
    seed : int, default=0, keyword-only
        Seeds the images and the order of the new ones.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    FileExistsError
        If ``destination`` holds files (nothing is overwritten).

    Examples
    --------
    >>> folder = demo_folder(tmp_path / "parts", image_size=64, n_normal=4)
    >>> sorted(p.relative_to(folder / "normal").as_posix() for p in (folder / "normal").rglob("*.*"))
    ['line_a/part_000.png', 'line_a/part_002.bmp', 'line_b/part_001.PNG', 'line_b/part_003.png']
    """
    from mvtec_tutorial import synthetic  # deferred: data does not depend on the synthetic set

    destination = Path(destination).expanduser()
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty; pass a new or empty folder")
    suffixes = (".png", ".PNG", ".bmp")  # every case and format read_folder accepts, in turn
    with tempfile.TemporaryDirectory() as scratch:
        root = synthetic.make_dataset(scratch, categories=[category], seed=seed, image_size=image_size,
                                      n_train=n_normal, n_test_good=n_new_good, n_test_per_defect=n_new_per_defect,
                                      progress=False)
        normal = MVTecAD(root, category, "train", image_size=None).samples
        for index, (path, _, _) in enumerate(normal):
            target = destination / "normal" / ("line_a", "line_b")[index % 2] / f"part_{index:03d}{suffixes[index % 3]}"
            target.parent.mkdir(parents=True, exist_ok=True)
            read_image(path).save(target)
        new = MVTecAD(root, category, "test", image_size=None).samples
        (destination / "new").mkdir()
        (destination / "masks").mkdir()
        for index, position in enumerate(np.random.default_rng(seed).permutation(len(new))):
            path, mask, _ = new[position]
            shutil.copyfile(path, destination / "new" / f"image_{index:03d}.png")
            if mask is not None:
                shutil.copyfile(mask, destination / "masks" / f"image_{index:03d}.png")
    return destination


def labelled_split(root: str | Path, category: str, *, image_size: int | None = 256,
                   evaluation_fraction: float = 0.3, held_out_defect_type: str | None = None,
                   seed: int = 0) -> tuple[Subset, Subset]:
    """Labelled train and evaluation sets from all of a category's images, split by image.

    MVTec AD trains on good images only, so the defective examples a classifier needs come from the
    test split. All images (train good, test good, test defective) are pooled and each defect type
    (``"good"`` included) is split separately with one seeded permutation, so every type appears on
    both sides in the same proportion. Every image lands on exactly one side: nothing the
    classifier trains on is evaluated.

    Parameters
    ----------
    root : str or Path
        Dataset root, e.g. :func:`mvtec_tutorial.settings.data_root`.
    category : str
    image_size : int or None, default=256
        Side images are resized to (see :class:`MVTecAD`).
    evaluation_fraction : float, default=0.3
        Share of each type's images held out for evaluation (at least one per type).
    held_out_defect_type : str, optional
        A defect type removed from training entirely: all its images go to evaluation. Every
        other type is split exactly as without it (the same permutations are drawn), so the
        runs with and without a held-out type differ only in that type.
    seed : int, default=0

    Returns
    -------
    train, evaluation : torch.utils.data.Subset
        Subsets of one pooled dataset of item dicts (label 1 = defective); their ``indices`` are disjoint.

    Raises
    ------
    ValueError
        For a fraction outside (0, 1), a type with too few images to split, or an unknown held-out type.

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, progress=False)
    >>> train, evaluation = labelled_split(root, "bottle", held_out_defect_type="contamination")
    >>> len(train), len(evaluation), set(train.indices) & set(evaluation.indices)
    (57, 31, set())
    """
    if not 0.0 < evaluation_fraction < 1.0:
        raise ValueError(f"evaluation_fraction must be in (0, 1), got {evaluation_fraction}")
    parts = [MVTecAD(root, category, split, image_size=image_size) for split in SPLITS]
    types = np.array([name for part in parts for name in part.defect_types])
    defect_types = sorted(set(types) - {GOOD})
    if held_out_defect_type is not None and held_out_defect_type not in defect_types:
        raise ValueError(f"held_out_defect_type {held_out_defect_type!r} is not a defect type of {category}; "
                         f"use one of {', '.join(defect_types)} or None")
    rng = np.random.default_rng(seed)
    train, evaluation = [], []
    for name in sorted(set(types)):
        indices = rng.permutation(np.flatnonzero(types == name))
        if name == held_out_defect_type:
            evaluation += indices.tolist()
            continue
        n_evaluation = max(1, round(len(indices) * evaluation_fraction))
        if n_evaluation >= len(indices):
            raise ValueError(f"{category}/{name} has {len(indices)} images, too few to split with "
                             f"evaluation_fraction={evaluation_fraction}")
        evaluation += indices[:n_evaluation].tolist()
        train += indices[n_evaluation:].tolist()
    pooled = ConcatDataset(parts)
    return Subset(pooled, sorted(train)), Subset(pooled, sorted(evaluation))
