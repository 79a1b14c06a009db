"""MVTec AD on disk -> a PyTorch dataset: the category table (Table 1) and :class:`MVTecAD`.

The official layout, which any category folder of your own may follow too::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect_type>/000.png
    <root>/<category>/ground_truth/<defect_type>/000_mask.png

Masks are matched to images by file name, never by sort position, and a test image
without its mask (or a mask without its image) is an error that names the file. File
extensions may be in any case (``000.PNG``). A mask pixel is defective where it is brighter than
half of the mask's brightest value (:func:`mvtec_tutorial.data.images.read_mask`), so 0/255, 0/1,
coloured, palette, anti-aliased and JPEG masks all work; a mask must have its image's size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mvtec_tutorial.data.images import check_image_size, read_image, read_mask, resize
from mvtec_tutorial.settings import user_path

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
        A whole number of pixels (``64.0`` or ``'256'`` is refused, see
        :func:`~mvtec_tutorial.data.images.check_image_size`).
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
        self.root = user_path(root)
        self.category = category
        self.split = split
        self.image_size = check_image_size(image_size)
        self.transform = transform
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        _check_category_folder(self.root, category)
        split_dir = self.root / category / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"{split_dir} is missing; expected the MVTec AD layout "
                                    "(see mvtec_tutorial.data.mvtec)")
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
        image = resize(image, self.image_size, Image.BILINEAR)
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
    resized = np.asarray(resize(Image.fromarray(mask), size, Image.NEAREST))
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
        others = sorted(p.name for p in mask_dir.iterdir() if not p.name.lower().endswith(MASK_SUFFIX)) \
            if mask_dir.is_dir() else []
        hint = f" (other files there: {', '.join(others[:5])}; masks must be PNG files named <image>_mask.png)" \
            if others else ""
        raise FileNotFoundError(f"no ground-truth mask in {mask_dir} for images: {', '.join(missing)}{hint}")
    orphans = sorted(str(masks[stem]) for stem in set(masks) - stems)
    if orphans:
        raise ValueError(f"masks without an image in test/{defect_type}: {', '.join(orphans)}")
    return [masks[p.stem] for p in images]
