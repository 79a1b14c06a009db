"""Folders of your own images, in any layout: read the images, then their masks by file name."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mvtec_tutorial.data.images import check_image_size, read_image, read_mask, resize
from mvtec_tutorial.settings import user_path

#: Image files :func:`read_folder` reads, by their ending, compared without regard to case.
FOLDER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _any_case(pattern: str) -> str:
    """``pattern`` with each letter outside ``[...]`` matching either case: ``*.png`` -> ``*.[pP][nN][gG]``."""
    parts, in_class = [], False
    for char in pattern:
        in_class = char == "[" or (in_class and char != "]")
        parts.append(f"[{char.lower()}{char.upper()}]" if char.lower() != char.upper() and not in_class else char)
    return "".join(parts)


def _image_files(folder: Path, pattern: str) -> list[Path]:
    """Image files under ``folder`` matching ``pattern`` in any case, hidden ones left out, sorted by relative path.

    A warning names the files left out that look like images: of a format not read, not regular
    files (a FIFO would block the read), or of a format read here that ``pattern`` left out.
    """
    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(folder).parts)

    matched = [p for p in folder.glob(_any_case(pattern)) if visible(p) and not p.is_dir()]
    paths = sorted((p for p in matched if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES),
                   key=lambda p: p.relative_to(folder).as_posix())
    other_formats = {suffix for suffix, kind in Image.registered_extensions().items()
                     if kind in Image.OPEN} - set(FOLDER_SUFFIXES)  # formats Pillow opens: images, not PDFs
    read_formats = {p.suffix.lower() for p in paths}
    left_out = {
        f"of a format not read (read: {', '.join(FOLDER_SUFFIXES)}; convert them to PNG)":
            [p for p in matched if p.suffix.lower() in other_formats],
        "not regular files": [p for p in matched if not p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES],
        f"not matching pattern {pattern!r} (pass pattern='**/*' to read them)":
            sorted(set(p for p in folder.rglob("*") if visible(p) and p.is_file()
                       and p.suffix.lower() in set(FOLDER_SUFFIXES) - read_formats) - set(matched)),
    }
    reasons = [f"{len(files)} {reason}: {', '.join(p.relative_to(folder).as_posix() for p in files[:3])}"
               f"{', ...' if len(files) > 3 else ''}" for reason, files in left_out.items() if files]
    if reasons:
        warnings.warn(f"left out image files under {folder}: {'; '.join(reasons)}", stacklevel=3)
    return paths


def read_folder(folder: str | Path, *, image_size: int | None = 256, pattern: str = "**/*",
                progress: bool = False) -> tuple[torch.Tensor, list[Path]]:
    """Read every image in a folder of your own, in any layout, into memory.

    Files are found recursively (``pattern`` is a :meth:`pathlib.Path.glob` pattern relative to
    ``folder``, matched without regard to case, so ``"**/*.png"`` finds ``A.PNG``), kept when they
    end in one of :data:`FOLDER_SUFFIXES` in any case (``.PNG``, ``.Jpg``), and sorted by their
    path relative to ``folder``. Hidden files and folders (name starting with ``.``, e.g.
    ``.ipynb_checkpoints``) are left out; a warning names the other image files left out (other
    formats such as ``.gif``, files that are not regular files, and files of a format read here
    that ``pattern`` excludes, e.g. ``.bmp`` files beside ``pattern="**/*.png"``). Images are read
    as :func:`read_image` does (upright by their EXIF orientation, grayscale to RGB, alpha dropped)
    and resized, as :class:`MVTecAD` does.

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
    TypeError, ValueError
        If ``image_size`` is not a whole number >= 1 or None.
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
    folder, image_size = user_path(folder), check_image_size(image_size)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the folder that holds your images")
    paths = _image_files(folder, pattern)
    if not paths:
        raise FileNotFoundError(f"no image file matching {pattern!r} under {folder} (looked for "
                                f"{', '.join(FOLDER_SUFFIXES)} in any case, hidden files left out); "
                                "check the folder and the pattern")
    images = []
    for path in tqdm(paths, desc="reading images", disable=not progress, leave=False):
        image = resize(read_image(path), image_size, Image.BILINEAR)
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
    :data:`FOLDER_SUFFIXES` in any case. A pixel is defective where the mask is brighter than
    half of its brightest value (as :func:`read_mask`); an all-black mask, or none, means a good
    image.

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
        to no image (a misspelt name) or could belong to two (``foo_mask.png`` when the images
        hold ``foo_mask`` and ``foo``); two images with a mask differ only in their ending
        (``a.png``, ``a.jpg``); a mask's size differs from its image's; a mask looks inverted
        (:func:`read_mask`); or a defect vanishes when the mask is resized to ``image_size``.

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
    mask_folder, image_folder = user_path(mask_folder), user_path(image_folder)
    image_size = check_image_size(image_size)
    if not mask_folder.is_dir():
        raise FileNotFoundError(f"mask folder {mask_folder} is not a folder; pass the folder that holds your masks")

    def name(path: Path, folder: Path) -> str:
        return path.relative_to(folder).with_suffix("").as_posix()

    image_paths = [user_path(path) for path in image_paths]
    outside = [str(path) for path in image_paths if not path.is_relative_to(image_folder)]
    if outside:
        raise ValueError(f"images not under image_folder={image_folder}: {', '.join(outside[:3])}; pass the folder "
                         "they were read from")
    names = [name(path, image_folder) for path in image_paths]
    masks: dict[str, Path] = {}
    for path in _image_files(mask_folder, "**/*"):
        key = name(path, mask_folder)
        if key.endswith("_mask") and key[: -len("_mask")] in names:
            if key in names:
                raise ValueError(f"mask {path} could belong to two images, {key} and {key[: -len('_mask')]} (the "
                                 "name without '_mask'); rename the image whose name ends in '_mask' or the mask")
            key = key[: -len("_mask")]
        if key in masks:
            raise ValueError(f"{masks[key]} and {path} are both masks of the image {key}; delete one of them")
        masks[key] = path
    orphans = sorted(str(masks[key]) for key in set(masks) - set(names))
    if orphans:
        raise ValueError(f"masks without an image in {image_folder}: {', '.join(orphans)}; a mask must have its "
                         "image's name (and sub-folder), optionally with '_mask' before the ending")
    claimed: dict[str, Path] = {}
    for path, key in zip(image_paths, names):
        if key in masks and key in claimed:
            raise ValueError(f"images {claimed[key]} and {path} differ only in their ending, so both would take the "
                             f"mask {masks[key]}; rename one of them (and its mask)")
        claimed[key] = path
    result = []
    for image_path, name in zip(image_paths, names):
        width, height = read_image(image_path).size  # upright, as read_folder read it
        if name not in masks:
            result.append(np.zeros((height, width) if image_size is None else (image_size, image_size), dtype=bool))
            continue
        mask = read_mask(masks[name])
        if mask.shape != (height, width):
            raise ValueError(f"mask {masks[name]} is {mask.shape[1]} x {mask.shape[0]} px but its image {image_path} "
                             f"is {width} x {height} px; a mask must have its image's size: fix or replace it")
        resized = np.asarray(resize(Image.fromarray(mask), image_size, Image.NEAREST)).astype(bool)
        if mask.any() and not resized.any():
            raise ValueError(f"mask {masks[name]} has {int(mask.sum())} defect pixels at {width} x {height} px but "
                             f"none at image_size={image_size}; use a larger image_size")
        result.append(resized)
    return np.stack(result)
