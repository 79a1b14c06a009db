"""Image files and image tensors: read an image or a mask, resize, convert, stack a dataset.

Every image the package reads passes :func:`read_image` (8-bit RGB) and every mask
:func:`read_mask` (bool); tensors of images are float32 ``(N, 3, H, W)`` in [0, 1].
"""
from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


#: A mask pixel is defective where its value is above this share of the mask's largest value, so
#: 0/255, 0/1 and 0/65535 masks keep exactly their defects, an anti-aliased edge counts where it is
#: at least half covered, and JPEG ringing or export noise of a few grey levels is not a defect.
MASK_THRESHOLD = 0.5
#: A mask that marks more than this share of its pixels and of its border is refused as inverted:
#: the frame of an image is background, and MVTec AD's largest defects (transistor "misplaced")
#: cover 49 % of the image but at most 2 % of its border (measured on the real bottle and
#: transistor masks).
INVERTED_SHARE = 0.5


def _open(path: str | Path) -> Image.Image:
    """Read an image file completely, turned upright by its EXIF orientation, or raise naming it."""
    if not Path(path).is_file():  # reading a FIFO or a device would block or never end
        problem = "not a regular file" if Path(path).exists() else "missing"
        raise OSError(f"cannot read image {path}: it is {problem}. Replace it with an image file or delete it.")
    try:
        with Image.open(path) as image:
            image.load()
            # Cameras store a rotated photo as pixels plus an orientation tag; viewers apply the
            # tag, so a mask drawn on the upright photo only fits after applying it too.
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise OSError(f"cannot read image {path}: {error}. If you trust this file (e.g. a line-scan image), raise "
                      "Pillow's limit first: PIL.Image.MAX_IMAGE_PIXELS = None; or shrink the image.") from error
    except (UnidentifiedImageError, OSError) as error:
        raise OSError(f"cannot read image {path}: {error}. Replace or delete this file.") from error


def _is_16_bit(image: Image.Image) -> bool:
    # Pillow opens 16-bit grayscale PNGs as "I;16" (older versions as "I"); convert("RGB") would
    # clip every value above 255 and give an all-white image.
    return image.mode.startswith("I")


def read_image(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB, upright (EXIF orientation applied).

    Grayscale, palette and alpha images are converted (alpha is dropped); 16-bit images keep
    their high byte, as Pillow itself reads 16-bit RGB PNGs, so 65535 becomes 255.

    Raises
    ------
    OSError
        Naming the file, if it cannot be read, is not a regular file (a FIFO, a folder) or is
        larger than Pillow's decompression-bomb limit (the message says how to raise it).
    """
    image = _open(path)
    if _is_16_bit(image):
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    return image.convert("RGB")


def _mask_values(image: Image.Image) -> np.ndarray:
    """One value per pixel, (H, W): the brightest colour channel, or alpha when only alpha varies."""
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("L", "F") or _is_16_bit(image):
        return np.asarray(image)
    has_alpha = "A" in image.mode or "transparency" in image.info
    values = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))  # palette indices become colours
    colour = values[..., :3].max(axis=-1)
    if has_alpha and colour.min() == colour.max():  # uniform colour: the defect is drawn in alpha
        alpha = values[..., 3]
        return alpha if alpha.min() != alpha.max() else colour
    return colour


def read_mask(path: str | Path, *, refuse_inverted: bool = True) -> np.ndarray:
    """Open a mask file as a bool array (H, W), upright (EXIF orientation applied): True = defective.

    Each pixel's value is its brightest colour channel (palette masks by their colours; 16-bit
    masks as they are), or its alpha where the colour is the same everywhere (a defect drawn only
    in transparency). A pixel is defective where its value is above :data:`MASK_THRESHOLD` (half)
    of the mask's largest value: 0/255, 0/1 and coloured masks keep their defects exactly, an
    anti-aliased edge counts where it is at least half covered, and JPEG artefacts or noise of a
    few grey levels count as background. An all-black mask is empty.

    Parameters
    ----------
    path : str or Path
        The mask file.
    refuse_inverted : bool, default=True
        Refuse a mask that looks inverted (below). False for masks that may rightly cover most of
        the image and its border, such as an ignore mask (:func:`mvtec_tutorial.own_images.load_ignore_mask`).

    Raises
    ------
    OSError
        Naming the file, if it cannot be read (as :func:`read_image`).
    ValueError
        If ``refuse_inverted`` and the mask looks inverted: more than :data:`INVERTED_SHARE` of its pixels and of its
        border are defective (defects must be bright on a black background).

    Examples
    --------
    >>> import numpy as np
    >>> soft = np.zeros((4, 4), np.uint8); soft[1:3, 1:3] = 255; soft[0, 1:3] = 100; soft[3, 3] = 2
    >>> Image.fromarray(soft).save(tmp_path / "mask.png")  # an anti-aliased edge and some noise
    >>> read_mask(tmp_path / "mask.png").astype(int).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    values = _mask_values(_open(path)).astype(np.float64)
    mask = values > MASK_THRESHOLD * values.max()
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    if refuse_inverted and mask.mean() > INVERTED_SHARE and border.mean() > INVERTED_SHARE:
        raise ValueError(f"mask {path} marks {int(mask.sum())} of {mask.size} px as defective, most of its border "
                         "included: it looks inverted (a defect must be bright on a black background). Invert "
                         "it, e.g. PIL.ImageOps.invert(PIL.Image.open(path).convert('L')).save(path)")
    return mask


def check_image_size(image_size: object) -> int | None:
    """Return ``image_size`` (the side images are resized to) as an int or None, or raise naming it.

    A float such as ``64.0`` is refused rather than rounded: sizes are whole pixels.

    Raises
    ------
    TypeError
        If it is neither None nor an integer (``'256'``, ``64.0``, ``True``).
    ValueError
        If it is below 1.
    """
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise TypeError(f"image_size must be a whole number of pixels or None, got {image_size!r} "
                        f"({type(image_size).__name__}); pass an int such as image_size=256")
    if image_size < 1:
        raise ValueError(f"image_size must be at least 1 px, got {image_size}; pass e.g. image_size=256, or None "
                         "to keep each file's size")
    return int(image_size)


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
    ndarray of shape (N, 3, H, W), float in [0, 1]. One image is ``image[None]`` (1, 3, H, W):
    a 3-D array is refused, since (3, H, W) may as well be three grayscale images.

    Raises
    ------
    TypeError
        For file paths, a folder, a DataLoader, a :class:`~mvtec_tutorial.data.Split` or anything
        else that is not images.
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
    # Imported here: splits builds on this module, so a module-level import would be circular.
    from mvtec_tutorial.data.splits import Split

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
