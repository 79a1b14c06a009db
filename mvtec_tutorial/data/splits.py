"""The evaluation protocol's splits: train / validation / test in memory, and labelled splits.

Unsupervised methods train on normal images and choose a threshold on held-out normal ones
(:func:`load_split`); supervised classifiers need defective examples, pooled from every split
(:func:`labelled_split`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from mvtec_tutorial.data.images import stack
from mvtec_tutorial.data.mvtec import GOOD, SPLITS, MVTecAD


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
