"""Image files and image tensors: read an image or a mask, resize, convert, stack a dataset.

Every image the package reads passes :func:`read_image` (8-bit RGB) and every mask
:func:`read_mask` (bool); tensors of images are float32 ``(N, 3, H, W)`` in [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm.auto import tqdm


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


def resize(image: Image.Image, size: int | None, resample: int) -> Image.Image:
    """Resize ``image`` to ``size`` x ``size`` with ``resample`` (a PIL filter); None keeps it as it is."""
    return image if size is None or image.size == (size, size) else image.resize((size, size), resample)


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
    ndarray of shape (N, 3, H, W) or (3, H, W), float in [0, 1].

    Raises
    ------
    ValueError
        If the shape is not (N, 3, H, W), the values leave [0, 1] or are not finite.
    """
    if isinstance(images, Dataset):
        images = stack(images, progress=progress)[0]
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if images.ndim == 3:
        images = images.unsqueeze(0)
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
