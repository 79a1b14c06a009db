"""Supervised good-vs-defective experiments on one category, with the study deck's numbers beside ours.

The supervised counterpart of :mod:`mvtec_tutorial.benchmark`: :func:`load_labelled_set` reads a
category's every image once and splits it by image (:func:`mvtec_tutorial.data.labelled_split`),
:func:`evaluate_classifier` fits a :class:`~mvtec_tutorial.models.supervised.SupervisedClassifier`
on the training part and measures it on the evaluation part, :func:`held_out_evaluations` repeats
that with each defect type removed from training, and :func:`compare_with_deck` sets the study
deck's reported accuracies beside ours. Notebook 02 calls these; so does the command line, which
prints a Markdown table of accuracy, image ROC AUC and recalls with wall times::

    python -m mvtec_tutorial.supervised_benchmark --root /path/to/mvtec_ad --category bottle
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix
from torch.utils.data import ConcatDataset
from tqdm.auto import tqdm

from mvtec_tutorial import cache as fit_cache
from mvtec_tutorial import data, metrics
from mvtec_tutorial.models import base
from mvtec_tutorial.models.supervised import SupervisedClassifier

#: The course's supervised models: name -> :class:`SupervisedClassifier` keyword arguments, with
#: schedules that fit a 2-core CPU. "convnet_deck" is the deck's recipe (plain SGD at the CIFAR-10
#: tutorial's step size, which the deck does not state, and no class weights); the others use
#: class weights, and Adam except VGG16, which gets its paper's SGD with momentum. The deeper
#: networks run at 64 px, where a convolution costs a twelfth of 224 px; VGG16 still costs ten
#: times ResNet-18 per epoch, hence its few epochs and large batches. "resnet18_imagenet" needs
#: torchvision's cached weights (see :func:`mvtec_tutorial.backbones.resnet18`); offline,
#: "lite0_imagenet" is the pretrained stand-in, fine-tuned the same way.
MODELS: dict[str, dict[str, Any]] = {
    "convnet_deck": dict(architecture="convnet", work_size=224, epochs=20, optimizer="sgd", learning_rate=1e-3,
                         class_weight=None),
    "convnet": dict(architecture="convnet", work_size=224, epochs=12),
    "resnet18_scratch": dict(architecture="resnet18", work_size=64, epochs=10),
    "vgg16_scratch": dict(architecture="vgg16", work_size=64, epochs=4, batch_size=32, optimizer="sgd",
                          learning_rate=1e-2, momentum=0.9),
    "resnet18_imagenet": dict(architecture="resnet18", pretrained=True, work_size=64, epochs=10, learning_rate=1e-4),
    "lite0_imagenet": dict(architecture="efficientnet_lite0", pretrained=True, work_size=64, epochs=10,
                           learning_rate=1e-4),
    "lite0_imagenet_frozen": dict(architecture="efficientnet_lite0", pretrained=True, freeze_backbone=True,
                                  work_size=224, epochs=30),
}

#: The study deck's reported evaluation accuracies ("Supervised - Classification"), as
#: (deck's model, epoch, accuracy). The deck gives neither the category, the split, the image
#: size nor the learning rate; its VGG16 is listed under "after pretraining".
DECK_ACCURACY = (
    ("ConvNet, SGD", 1, 0.7886), ("ConvNet, SGD", 20, 0.7703),
    ("ConvNet, SGD, augmented copies saved before the split", 1, 0.4936),
    ("ConvNet, SGD, augmented copies saved before the split", 10, 0.8115),
    ("ConvNet, SGD, augmented copies saved before the split", 20, 0.8414),
    ("ResNet-18 from scratch", 1, 0.6485), ("ResNet-18 from scratch", 10, 0.8560),
    ("ResNet-18 from scratch", 20, 0.8633), ("ResNet-18 from scratch", 50, 0.9085),
    ("ResNet-18 ImageNet", 10, 0.9475),
    ("VGG16", 10, 0.8206),
)
#: Our model closest to each of the deck's (none for the leaking augmented copies).
DECK_COUNTERPARTS = {
    "ConvNet, SGD": ("convnet_deck",),
    "ConvNet, SGD, augmented copies saved before the split": (),
    "ResNet-18 from scratch": ("resnet18_scratch",),
    "ResNet-18 ImageNet": ("resnet18_imagenet", "lite0_imagenet"),
    "VGG16": ("vgg16_scratch",),
}

#: The course's schedules (:data:`mvtec_tutorial.models.base.SCHEDULES`) that apply to the classifiers:
#: "cpu" is each model's schedule in :data:`MODELS`; "quick" trains one epoch, a smoke test whose
#: numbers mean nothing (tests, fast notebooks). The paper trains no classifier: no "paper" schedule.
SCHEDULES = tuple(name for name in base.SCHEDULES if name != "paper")

#: What notebook 02 runs, and the command line by default.
NOTEBOOK_MODELS = ("convnet_deck", "convnet", "resnet18_scratch", "vgg16_scratch", "lite0_imagenet",
                   "lite0_imagenet_frozen")
NOTEBOOK_AUGMENTED_MODELS = ("convnet",)
NOTEBOOK_HELD_OUT_MODELS = ("lite0_imagenet_frozen",)


@dataclass(frozen=True)
class LabelledSet:
    """Every image of a category in memory, split by image into labelled training and evaluation parts.

    Attributes
    ----------
    category : str
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
        Training good images and the whole test split, in :func:`mvtec_tutorial.data.labelled_split`'s order.
    masks : ndarray of shape (N, H, W), bool
    labels : ndarray of shape (N,), int64
        1 = defective.
    defect_types : ndarray of shape (N,), str
    paths : list of str
        File of every image.
    train, evaluation : ndarray of int
        Disjoint indices into the arrays above.
    held_out_defect_type : str or None
        The defect type that is in ``evaluation`` only.
    root : Path
    image_size : int or None
    evaluation_fraction : float
    seed : int
        The split's settings, which :func:`hold_out` reuses.
    """

    category: str
    images: torch.Tensor
    masks: np.ndarray
    labels: np.ndarray
    defect_types: np.ndarray
    paths: list[str]
    train: np.ndarray
    evaluation: np.ndarray
    held_out_defect_type: str | None
    root: Path
    image_size: int | None
    evaluation_fraction: float
    seed: int

    def __repr__(self) -> str:
        held_out = f", {self.held_out_defect_type} held out" if self.held_out_defect_type else ""
        return (f"LabelledSet({self.category!r}: train {len(self.train)} ({int(self.labels[self.train].sum())} "
                f"defective), evaluation {len(self.evaluation)} ({int(self.labels[self.evaluation].sum())} "
                f"defective){held_out}, {tuple(self.images.shape[-2:])} px)")


def _split_indices(root: Path, category: str, *, image_size: int | None, evaluation_fraction: float, seed: int,
                   held_out_defect_type: str | None) -> tuple[np.ndarray, np.ndarray, list[str], ConcatDataset]:
    train, evaluation = data.labelled_split(root, category, image_size=image_size,
                                            evaluation_fraction=evaluation_fraction, seed=seed,
                                            held_out_defect_type=held_out_defect_type)
    paths = [str(path) for part in train.dataset.datasets for path, _, _ in part.samples]
    return np.array(train.indices), np.array(evaluation.indices), paths, train.dataset


def load_labelled_set(root: str | Path, category: str, *, image_size: int | None = 256,
                      evaluation_fraction: float = 0.3, seed: int = 0, progress: bool = True) -> LabelledSet:
    """Read a category's every image once and split it by image, per type, seeded.

    Parameters
    ----------
    root : str or Path
        Dataset root, e.g. :func:`mvtec_tutorial.settings.data_root`.
    category : str
    image_size : int or None, default=256
        Side images and masks are resized to when read; each classifier resizes again to its
        ``work_size``.
    evaluation_fraction : float, default=0.3
        Share of each image type held out for evaluation.
    seed : int, default=0
    progress : bool, default=True

    Returns
    -------
    LabelledSet

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, progress=False)
    >>> load_labelled_set(root, "bottle", image_size=32, progress=False)
    LabelledSet('bottle': train 61 (12 defective), evaluation 27 (6 defective), (32, 32) px)
    """
    root = Path(root)
    train, evaluation, paths, pooled = _split_indices(root, category, image_size=image_size, seed=seed,
                                                      evaluation_fraction=evaluation_fraction,
                                                      held_out_defect_type=None)
    images, masks, labels, defect_types = data.stack(pooled, progress=progress)
    return LabelledSet(category=category, images=images, masks=masks, labels=labels,
                       defect_types=np.array(defect_types), paths=paths, train=train, evaluation=evaluation,
                       held_out_defect_type=None, root=root, image_size=image_size,
                       evaluation_fraction=evaluation_fraction, seed=seed)


def hold_out(labelled: LabelledSet, defect_type: str) -> LabelledSet:
    """The same images with ``defect_type`` removed from training: all its images are evaluated.

    Every other type keeps its split (see :func:`mvtec_tutorial.data.labelled_split`), so a run on
    the result differs from one on ``labelled`` only in the held-out type. No image is read again.

    Raises
    ------
    ValueError
        If ``defect_type`` is not a defect type of the category, or the files under the root
        changed since ``labelled`` was loaded.
    """
    train, evaluation, paths, _ = _split_indices(labelled.root, labelled.category, image_size=labelled.image_size,
                                                 evaluation_fraction=labelled.evaluation_fraction,
                                                 seed=labelled.seed, held_out_defect_type=defect_type)
    if paths != labelled.paths:
        raise ValueError(f"the images of {labelled.category} under {labelled.root} changed since the labelled "
                         "set was loaded; load it again with load_labelled_set")
    return dataclasses.replace(labelled, train=train, evaluation=evaluation, held_out_defect_type=defect_type)


def classification_report(labels: Any, probabilities: Any, defect_types: Sequence[str]) -> dict[str, Any]:
    """Accuracy, image AUROC, recall per class and per defect type, and the confusion matrix.

    Parameters
    ----------
    labels : array-like of shape (N,), int
        1 = defective.
    probabilities : array-like of shape (N, 2) or (N,)
        As :meth:`SupervisedClassifier.predict_proba` returns, or its column 1 (P(defective)).
        An image is predicted defective when P(defective) > 0.5.
    defect_types : sequence of N str

    Returns
    -------
    dict
        ``accuracy``; ``always_good_accuracy`` (the accuracy of answering "good" for every image,
        the bar any classifier must clear); ``image_auroc`` (P(defective) as score; ``nan`` with
        one class only); ``good_recall`` and ``defective_recall`` (the paper's good/defective
        accuracies); ``recall_by_type`` (dict: defect type -> share classified correctly);
        ``confusion_matrix`` (2 x 2 int array, rows true good/defective, columns predicted
        good/defective).

    Examples
    --------
    >>> report = classification_report([0, 0, 1, 1], [0.2, 0.6, 0.7, 0.9], ["good", "good", "crack", "hole"])
    >>> report["accuracy"], report["image_auroc"], report["recall_by_type"]
    (0.75, 1.0, {'crack': 1.0, 'good': 0.5, 'hole': 1.0})
    """
    labels = np.asarray(labels)
    scores = np.asarray(probabilities, dtype=np.float64)
    scores = scores[:, 1] if scores.ndim == 2 else scores
    if not len(labels) == len(scores) == len(defect_types):
        raise ValueError(f"got {len(labels)} labels, {len(scores)} probabilities and {len(defect_types)} "
                         "defect types; pass one of each per image")
    predictions = (scores > 0.5).astype(np.int64)
    correct = predictions == labels
    good_recall, defective_recall = metrics.classification_accuracy(labels, predictions)
    types = np.asarray(defect_types)
    return {
        "accuracy": float(correct.mean()),
        "always_good_accuracy": float(np.mean(labels == 0)),
        "image_auroc": metrics.image_auroc(labels, scores) if len(set(labels.tolist())) == 2 else float("nan"),
        "good_recall": good_recall,
        "defective_recall": defective_recall,
        "recall_by_type": {name: float(correct[types == name].mean()) for name in sorted(set(types.tolist()))},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]),
    }


@dataclass
class ClassifierEvaluation:
    """What :func:`evaluate_classifier` measured for one classifier on one labelled set.

    Attributes
    ----------
    name : str
        The model's name in :data:`MODELS` (with " + augmentation"), or the one the caller gave.
    metrics : dict of str to float
        ``accuracy``, ``always_good_accuracy``, ``image_auroc``, ``good_recall``,
        ``defective_recall`` (see :func:`classification_report`), ``fit_seconds``,
        ``fit_cpu_seconds`` (CPU time of all threads) and ``predict_seconds``.
    recall_by_type : dict of str to float
    confusion_matrix : ndarray of shape (2, 2), int
    probabilities : ndarray of shape (n_evaluation,), float32
        P(defective) of the evaluation images.
    evaluation : ndarray of shape (n_evaluation,), int
        Their indices into the labelled set.
    held_out_defect_type : str or None
    classifier : SupervisedClassifier
        The fitted classifier.
    """

    name: str
    metrics: dict[str, float]
    recall_by_type: dict[str, float]
    confusion_matrix: np.ndarray
    probabilities: np.ndarray
    evaluation: np.ndarray
    held_out_defect_type: str | None
    classifier: SupervisedClassifier

    def row(self) -> dict[str, Any]:
        """One flat row: name, settings, held-out type, metrics and ``recall[<type>]`` per type."""
        return {"model": self.name, "settings": describe_settings(self.classifier),
                "held_out": self.held_out_defect_type or "-", **self.metrics,
                **{f"recall[{key}]": value for key, value in self.recall_by_type.items()},
                "n_evaluation": len(self.evaluation)}


def describe_settings(classifier: SupervisedClassifier) -> str:
    """The training settings that differ between the models, in words, e.g. "64 px, 10 epochs, Adam 0.001"."""
    optimizer = f"{'Adam' if classifier.optimizer == 'adam' else 'SGD'} {classifier.learning_rate:g}"
    if classifier.optimizer == "sgd" and classifier.momentum:
        optimizer += f" momentum {classifier.momentum:g}"
    parts = [f"{classifier.work_size} px", f"{classifier.epochs} epoch" + "s" * (classifier.epochs != 1), optimizer,
             "class weights" if classifier.class_weight else "no class weights"]
    if classifier.pretrained:
        parts.append("ImageNet, frozen + new head" if classifier.freeze_backbone else "ImageNet, fine-tuned")
    if classifier.augmentation is not None:
        parts.append("augmented")
    return ", ".join(parts)


def make_classifier(name: str, *, schedule: str = "cpu", augmented: bool = False, seed: int = 0,
                    device: str | torch.device | None = None) -> SupervisedClassifier:
    """The classifier :data:`MODELS` names, on a schedule of :data:`SCHEDULES`.

    ``augmented=True`` adds :func:`default_augmentation`; ``seed`` and ``device`` are passed on.

    Raises
    ------
    ValueError
        For an unknown model or schedule.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
    return SupervisedClassifier(**{**MODELS[name], **({"epochs": 1} if schedule == "quick" else {})}, seed=seed,
                                device=device, augmentation="default" if augmented else None)


#: The poses of the deck's saved copies that a bottle seen from above keeps: as it is, mirrored
#: left-right, mirrored top-bottom, and a half turn (both), as flip dimensions of (..., H, W).
LEAKY_POSES = ((), (-1,), (-2,), (-2, -1))


def leaky_copies(labelled: LabelledSet, *, n_poses: int = 2) -> LabelledSet:
    """The deck's leaky split: every image in ``n_poses`` poses, the copies split at random afterwards.

    The deck saved rotated and flipped copies of its images and only then split them into
    training and evaluation, so copies of one photograph sit on both sides and a classifier can
    score by recognising a photograph it trained on. Run a model on this and on ``labelled`` (the
    split by image) to see how much the leak inflates its accuracy.

    Parameters
    ----------
    labelled : LabelledSet
        Its images (training and evaluation alike) are copied; its split is not used.
    n_poses : int, default=2
        The first ``n_poses`` of :data:`LEAKY_POSES` (memory grows with it).

    Returns
    -------
    LabelledSet
        ``n_poses * N`` images, copy ``k * N + i`` being image ``i`` in pose ``k``; training and
        evaluation drawn by a permutation seeded with ``labelled.seed``, ``evaluation_fraction``
        of them evaluated.

    Examples
    --------
    >>> from mvtec_tutorial import synthetic
    >>> root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=64, progress=False)
    >>> leaky_copies(load_labelled_set(root, "bottle", image_size=32, progress=False))
    LabelledSet('bottle': train 123 (23 defective), evaluation 53 (13 defective), (32, 32) px)
    """
    if not 1 <= n_poses <= len(LEAKY_POSES):
        raise ValueError(f"n_poses must be between 1 and {len(LEAKY_POSES)}, got {n_poses!r}")
    poses = LEAKY_POSES[:n_poses]
    n_copies = n_poses * len(labelled.labels)
    order = np.random.default_rng(labelled.seed).permutation(n_copies)
    n_evaluation = round(labelled.evaluation_fraction * n_copies)
    return dataclasses.replace(
        labelled, images=torch.cat([labelled.images.flip(dims) if dims else labelled.images for dims in poses]),
        masks=np.concatenate([np.flip(labelled.masks, dims) if dims else labelled.masks for dims in poses]),
        labels=np.tile(labelled.labels, n_poses), defect_types=np.tile(labelled.defect_types, n_poses),
        paths=[f"{path} (flipped along {dims})" if dims else path for dims in poses for path in labelled.paths],
        train=np.sort(order[n_evaluation:]), evaluation=np.sort(order[:n_evaluation]))


def evaluate_classifier(classifier: SupervisedClassifier, labelled: LabelledSet, *, name: str | None = None,
                        cache: bool | str | Path = True, progress: bool = True) -> ClassifierEvaluation:
    """Fit on the labelled set's training images, predict its evaluation images and time both.

    Parameters
    ----------
    classifier : SupervisedClassifier
        Fitted from scratch (a second call forgets the first fit), or loaded from the fit cache.
    labelled : LabelledSet
    name : str, optional
        Default: the classifier's architecture.
    cache : bool, str or Path, default=True
        Where to look for and keep the fit (:func:`mvtec_tutorial.cache.fit`, as the detectors');
        False always fits. A cached fit reports the times measured when it was computed.
    progress : bool, default=True

    Returns
    -------
    ClassifierEvaluation
    """
    fitted = fit_cache.fit(classifier, labelled.images[labelled.train], labelled.labels[labelled.train],
                           directory=cache, progress=progress)
    start = time.perf_counter()
    probabilities = classifier.predict_proba(labelled.images[labelled.evaluation])[:, 1]
    predict_seconds = time.perf_counter() - start
    report = classification_report(labelled.labels[labelled.evaluation], probabilities,
                                   labelled.defect_types[labelled.evaluation])
    recall_by_type, matrix = report.pop("recall_by_type"), report.pop("confusion_matrix")
    timings = {"fit_seconds": fitted.fit_seconds, "fit_cpu_seconds": fitted.fit_cpu_seconds,
               "predict_seconds": predict_seconds}
    return ClassifierEvaluation(name=name or classifier.architecture, metrics={**report, **timings},
                                recall_by_type=recall_by_type, confusion_matrix=matrix, probabilities=probabilities,
                                evaluation=labelled.evaluation, held_out_defect_type=labelled.held_out_defect_type,
                                classifier=classifier)


def evaluate_model(name: str, labelled: LabelledSet, *, augmented: bool = False, schedule: str = "cpu",
                   seed: int = 0, device: str | torch.device | None = None,
                   progress: bool = True) -> ClassifierEvaluation:
    """:func:`evaluate_classifier` of the model :data:`MODELS` names (see :func:`make_classifier`)."""
    classifier = make_classifier(name, schedule=schedule, augmented=augmented, seed=seed, device=device)
    return evaluate_classifier(classifier, labelled, name=name + (" + augmentation" if augmented else ""),
                               progress=progress)


def held_out_evaluations(name: str, labelled: LabelledSet, *, schedule: str = "cpu", seed: int = 0,
                         device: str | torch.device | None = None,
                         progress: bool = True) -> dict[str, ClassifierEvaluation]:
    """Retrain the model ``name`` once per defect type, with that type held out of training.

    Returns
    -------
    dict
        Defect type -> :class:`ClassifierEvaluation` of the run without it, in sorted order.
    """
    defect_types = sorted(set(labelled.defect_types.tolist()) - {data.GOOD})
    return {defect_type: evaluate_model(name, hold_out(labelled, defect_type), schedule=schedule, seed=seed,
                                        device=device, progress=progress)
            for defect_type in tqdm(defect_types, desc=f"{name}, one type held out", disable=not progress)}


def held_out_table(seen: ClassifierEvaluation, held_out: dict[str, ClassifierEvaluation]) -> pd.DataFrame:
    """Recall of each defect type when it was in training (``seen``) and when it was held out.

    Returns
    -------
    pandas.DataFrame
        Indexed by held-out type: ``recall when seen``, ``recall when unseen``, and the held-out
        run's ``good recall`` and ``image AUROC``.
    """
    return pd.DataFrame([{"held-out type": defect_type, "recall when seen": seen.recall_by_type[defect_type],
                          "recall when unseen": evaluation.recall_by_type[defect_type],
                          "good recall": evaluation.metrics["good_recall"],
                          "image AUROC": evaluation.metrics["image_auroc"]}
                         for defect_type, evaluation in held_out.items()]).set_index("held-out type")


def compare_with_deck(evaluations: Sequence[ClassifierEvaluation]) -> pd.DataFrame:
    """The deck's reported accuracies beside ours, one row per deck model and counterpart we ran.

    Only evaluations without augmentation and without a held-out type are compared; a deck
    model whose counterparts (:data:`DECK_COUNTERPARTS`) were not run gets one row marked
    "not run".

    Returns
    -------
    pandas.DataFrame
        Columns ``deck model``, ``deck accuracy`` (by epoch), ``our model``, ``our settings``,
        ``accuracy``, ``always 'good'`` (the accuracy of answering "good" everywhere on the same
        images) and ``image AUROC``.
    """
    ours = {e.name: e for e in evaluations if e.held_out_defect_type is None and e.classifier.augmentation is None}
    rows = []
    for deck_model, counterparts in DECK_COUNTERPARTS.items():
        reported = ", ".join(f"{accuracy:.3f} (epoch {epoch})"
                             for model, epoch, accuracy in DECK_ACCURACY if model == deck_model)
        run = [ours[name] for name in counterparts if name in ours]
        rows += [{"deck model": deck_model, "deck accuracy": reported, "our model": e.name,
                  "our settings": describe_settings(e.classifier), "accuracy": e.metrics["accuracy"],
                  "always 'good'": e.metrics["always_good_accuracy"], "image AUROC": e.metrics["image_auroc"]}
                 for e in run] or [{"deck model": deck_model, "deck accuracy": reported, "our model": "not run"}]
    return pd.DataFrame(rows)


def run_experiments(root: str | Path, category: str, *, models: Sequence[str] = NOTEBOOK_MODELS,
                    augmented_models: Sequence[str] = NOTEBOOK_AUGMENTED_MODELS,
                    held_out_models: Sequence[str] = NOTEBOOK_HELD_OUT_MODELS, schedule: str = "cpu",
                    image_size: int | None = 256, evaluation_fraction: float = 0.3, seed: int = 0,
                    device: str | None = None, progress: bool = True) -> list[ClassifierEvaluation]:
    """Every run of notebook 02 on one category: models, augmented models, then each type held out.

    The category's images are read once (:func:`load_labelled_set`). ``models`` (without
    augmentation) and ``augmented_models`` (with :func:`default_augmentation`) are trained on the
    same split; each of ``held_out_models`` is then retrained once per defect type with that type
    removed from training (:func:`held_out_evaluations`).

    Returns
    -------
    list of ClassifierEvaluation
        In run order; ``[e.row() for e in ...]`` gives a table (:func:`to_markdown`).
    """
    for name in [*models, *augmented_models, *held_out_models]:
        make_classifier(name, schedule=schedule)  # fail before reading any image
    labelled = load_labelled_set(root, category, image_size=image_size, evaluation_fraction=evaluation_fraction,
                                 seed=seed, progress=progress)
    options = dict(schedule=schedule, seed=seed, device=device, progress=progress)
    runs = [(name, False) for name in models] + [(name, True) for name in augmented_models]
    evaluations = [evaluate_model(name, labelled, augmented=augmented, **options)
                   for name, augmented in tqdm(runs, desc="experiments", disable=not progress)]
    for name in held_out_models:
        evaluations += held_out_evaluations(name, labelled, **options).values()
    return evaluations


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of rows (e.g. :meth:`ClassifierEvaluation.row`): numbers to 3 decimals, seconds to 1.

    A missing or NaN value is shown as "-".
    """
    def text(key: str, cell: Any) -> str:
        if isinstance(cell, float) and np.isnan(cell):
            return "-"
        if isinstance(cell, float):
            return f"{cell:.1f}" if key.endswith("seconds") else f"{cell:.3f}"
        return str(cell)

    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(text(key, row.get(key, float("nan"))) for key in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: run :func:`run_experiments` and print its rows and the deck comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="dataset root (real MVTec AD or the synthetic set)")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--models", nargs="*", default=list(NOTEBOOK_MODELS), choices=list(MODELS),
                        help="trained without augmentation")
    parser.add_argument("--augmented-models", nargs="*", default=list(NOTEBOOK_AUGMENTED_MODELS),
                        choices=list(MODELS), help="trained with default_augmentation()")
    parser.add_argument("--held-out-models", nargs="*", default=list(NOTEBOOK_HELD_OUT_MODELS),
                        choices=list(MODELS), help="retrained once per held-out defect type")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cpu",
                        help="cpu: each model's own epochs (see MODELS); quick: one epoch, a smoke test")
    parser.add_argument("--image-size", type=int, default=256, help="side images are read at (px)")
    parser.add_argument("--evaluation-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    evaluations = run_experiments(args.root, args.category, models=args.models,
                                  augmented_models=args.augmented_models, held_out_models=args.held_out_models,
                                  schedule=args.schedule, image_size=args.image_size,
                                  evaluation_fraction=args.evaluation_fraction, seed=args.seed, device=args.device)
    print(to_markdown([evaluation.row() for evaluation in evaluations]))
    print(to_markdown(compare_with_deck(evaluations).to_dict("records")))


if __name__ == "__main__":
    main()
