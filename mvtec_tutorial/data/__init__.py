"""Data: MVTec AD on disk, the protocol's splits, image files, the download, folders of your own.

One module per concern; their public names are imported here, so ``data.MVTecAD`` and
``from mvtec_tutorial.data import load_split`` work as before:

- :mod:`~mvtec_tutorial.data.mvtec`: the category table (Table 1) and the dataset :class:`MVTecAD`;
- :mod:`~mvtec_tutorial.data.splits`: train / validation / test in memory, labelled splits;
- :mod:`~mvtec_tutorial.data.images`: reading images and masks, resizing, grayscale, stacking;
- :mod:`~mvtec_tutorial.data.archive`: downloading, verifying and extracting the official archive;
- :mod:`~mvtec_tutorial.data.folders`: folders of your own images in any layout, and their masks.
"""
from mvtec_tutorial.data.archive import MVTEC_HOMEPAGE, MVTEC_SHA256, MVTEC_URL, download, sha256_of
from mvtec_tutorial.data.folders import FOLDER_SUFFIXES, read_folder, read_folder_masks
from mvtec_tutorial.data.images import LUMA_WEIGHTS, as_images, read_image, read_mask, stack, to_grayscale
from mvtec_tutorial.data.mvtec import (CATEGORIES, GOOD, IMAGE_SUFFIX, MASK_SUFFIX, OBJECTS, SPLITS, TEXTURES,
                                       Augmentation, CategoryInfo, MVTecAD, category_info)
from mvtec_tutorial.data.splits import Split, labelled_split, load_split, train_validation_split

__all__ = ["CATEGORIES", "FOLDER_SUFFIXES", "GOOD", "IMAGE_SUFFIX", "LUMA_WEIGHTS", "MASK_SUFFIX", "MVTEC_HOMEPAGE",
           "MVTEC_SHA256", "MVTEC_URL", "OBJECTS", "SPLITS", "TEXTURES", "Augmentation", "CategoryInfo", "MVTecAD",
           "Split", "as_images", "category_info", "download", "labelled_split", "load_split", "read_folder",
           "read_folder_masks", "read_image", "read_mask", "sha256_of", "stack", "to_grayscale",
           "train_validation_split"]
