"""Supervised good-vs-defective classifiers, the baseline the paper argues against.

The study deck trained two classifiers on MVTec AD: the small ConvNet of PyTorch's CIFAR-10
tutorial (:class:`ConvNet`) and ResNet-18, from scratch and ImageNet-pretrained. A classifier needs
defective training images, which MVTec AD's training split does not have, so
:func:`labelled_split` builds a labelled set from the test split plus the training good images and
splits it *by image* with a fixed seed. Holding out one defect type shows what the paper's
introduction predicts: a classifier only knows the defects it was shown.

These models are not :class:`~mvtec_tutorial.models.base.AnomalyDetector` subclasses: they learn from
labels, ``SupervisedClassifier(...).fit(images, labels)``, and return class probabilities, not maps.

Command line (prints a Markdown table of accuracy, image AUROC and recalls with wall times)::

    python -m mvtec_tutorial.models.supervised --root /path/to/mvtec_ad --category bottle
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from mvtec_tutorial import backbones, data, metrics, training
from mvtec_tutorial.models.base import NotFittedError, as_images
from mvtec_tutorial.settings import get_device

ARCHITECTURES = ("convnet", "resnet18", "efficientnet_lite0")
#: The ConvNet's three 5x5 convolutions (no padding) and 4-, 5-, 5-pixel max pools leave
#: ((((s - 4) // 4 - 4) // 5 - 4) // 5) positions per side: at least one needs s >= 200.
CONVNET_MIN_IMAGE_SIZE = 200
#: PyTorch's CIFAR-10 tutorial, which the deck's ConvNet follows, maps [0, 1] to [-1, 1].
CONVNET_MEAN, CONVNET_STD = (0.5,) * 3, (0.5,) * 3
#: The deck's input side (torchvision's ImageNet crop).
DEFAULT_IMAGE_SIZE = 224

#: The course's supervised models: name -> :class:`SupervisedClassifier` keyword arguments, with
#: schedules that fit a CPU. ResNet-18 runs at 128 px (a third of the cost at 224 px); the frozen
#: Lite0 trains only its head on features computed once, so many epochs cost little.
#: "resnet18_imagenet" needs torchvision's cached weights (see :func:`backbones.resnet18`).
MODELS: dict[str, dict[str, Any]] = {
    "convnet": dict(architecture="convnet", image_size=224, epochs=12),
    "resnet18_scratch": dict(architecture="resnet18", image_size=128, epochs=5),
    "resnet18_imagenet": dict(architecture="resnet18", pretrained=True, image_size=128, epochs=5,
                              learning_rate=1e-4),
    "lite0_imagenet_frozen": dict(architecture="efficientnet_lite0", pretrained=True, freeze_backbone=True,
                                  image_size=224, epochs=30),
    "lite0_imagenet": dict(architecture="efficientnet_lite0", pretrained=True, image_size=128, epochs=5,
                           learning_rate=1e-4),
}


class ConvNet(nn.Module):
    """The deck's small ConvNet: three 5x5 convolutions with ReLU and max pooling, three linear layers.

    Conv(3, 6) - pool 4 - Conv(6, 16) - pool 5 - Conv(16, 32) - pool 5 - fc 120 - fc 84 - fc 2.
    The deck hard-coded the flattened size (32 x 9 x 9); here it follows ``image_size``
    (32 x 1 x 1 at 224 px).

    Parameters
    ----------
    image_size : int, default=224
        Side of the square inputs, at least :data:`CONVNET_MIN_IMAGE_SIZE`.
    n_classes : int, default=2
    """

    def __init__(self, *, image_size: int = DEFAULT_IMAGE_SIZE, n_classes: int = 2) -> None:
        super().__init__()
        side = image_size
        for pool in (4, 5, 5):
            side = (side - 4) // pool
        if side < 1:
            raise ValueError(f"the ConvNet needs images of at least {CONVNET_MIN_IMAGE_SIZE} px, got "
                             f"image_size={image_size}; pass a larger image_size")
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(5),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(5),
        )
        self.fc1 = nn.Linear(32 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, n_classes)  # named like torchvision's heads: every model's head is .fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) of normalised images (N, 3, image_size, image_size)."""
        x = torch.flatten(self.features(x), 1)
        return self.fc(F.relu(self.fc2(F.relu(self.fc1(x)))))


def build_network(architecture: str, *, pretrained: bool = False,
                  image_size: int = DEFAULT_IMAGE_SIZE) -> tuple[nn.Module, tuple, tuple]:
    """A two-class network and the input normalisation (mean, std of RGB in [0, 1]) it expects.

    ``"resnet18"`` and ``"efficientnet_lite0"`` come from :mod:`mvtec_tutorial.backbones` with a new
    randomly initialised 2-class ``fc``; ``pretrained=True`` for ResNet-18 raises
    :class:`FileNotFoundError` when torchvision's weights are not cached (never a silent fallback).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    if architecture == "convnet":
        if pretrained:
            raise ValueError("the ConvNet has no pretrained weights; pass pretrained=False")
        return ConvNet(image_size=image_size), CONVNET_MEAN, CONVNET_STD
    network = (backbones.resnet18(pretrained=pretrained) if architecture == "resnet18"
               else backbones.efficientnet_lite0(pretrained=pretrained))
    network.fc = nn.Linear(network.fc.in_features, 2)
    return (network, *backbones.input_normalization(network))


def default_augmentation() -> v2.Compose:
    """Label-preserving augmentation for top views such as bottle: the 8 flips/quarter turns, mild lighting.

    Applied on the fly to each training image (a float tensor (3, H, W) in [0, 1]). A transform
    must keep the label: a random crop could cut the defect out of a "defective" image, and a
    quarter turn is wrong for categories with a fixed orientation (transistor, cable).
    """
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomChoice([v2.RandomRotation((angle, angle)) for angle in (0, 90, 180, 270)]),
        v2.ColorJitter(brightness=0.1, contrast=0.1),
    ])


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
        Passed to :class:`~mvtec_tutorial.data.MVTecAD`.
    evaluation_fraction : float, default=0.3
        Share of each type's images held out for evaluation (at least one per type).
    held_out_defect_type : str, optional
        A defect type removed from training entirely: all its images go to evaluation.
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
    parts = [data.MVTecAD(root, category, split, image_size=image_size) for split in data.SPLITS]
    types = np.array([name for part in parts for name in part.defect_types])
    defect_types = sorted(set(types) - {data.GOOD})
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


class _LabelledImages(Dataset):
    """(image, label) pairs, each image passed through ``transform`` when it is read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.labels[index]


class SupervisedClassifier:
    """Good (0) vs defective (1) image classifier trained with cross-entropy.

    Parameters
    ----------
    architecture : {"convnet", "resnet18", "efficientnet_lite0"}, default="convnet"
        See :func:`build_network`.
    pretrained : bool, default=False
        Start from ImageNet weights (not for the ConvNet). ResNet-18's must be in torch's cache.
    freeze_backbone : bool, default=False
        With ``pretrained``: train only the new 2-class head on fixed ImageNet features (a
        "linear probe", about three times cheaper than fine-tuning the whole network).
    image_size : int, default=224
        Side the network sees; images are resized to it (bilinear, antialiased).
    epochs, batch_size : int, default=10, 16
    learning_rate : float, default=1e-3
        Adam's step size.
    class_weight : {"balanced", None}, default="balanced"
        "balanced" weights each class's loss by ``n / (2 n_class)`` as scikit-learn does, so
        calling every image good is not the cheapest answer when good images dominate.
    augmentation : callable, optional
        Applied on the fly to every training image, ``augmentation(image) -> image`` on float
        (3, H, W) in [0, 1], e.g. :func:`default_augmentation`. It draws from torch's generator,
        which :func:`mvtec_tutorial.training.train` seeds with ``seed`` inside a forked RNG state.
    seed : int, default=0
        Fixes the new layers' initial weights, batch order and augmentations.
    device : str or torch.device, optional
        None means CUDA when available, else CPU.

    Attributes
    ----------
    network_ : torch.nn.Module
        The trained network, in eval mode on ``device_``.
    history_ : dict
        ``"loss"``: mean training loss per epoch.
    mean_, std_ : torch.Tensor of shape (1, 3, 1, 1)
        The input normalisation the network expects (ImageNet statistics for the ImageNet networks).

    Notes
    -----
    After training, batch norm's running statistics are recomputed on the training images
    (:func:`torch.optim.swa_utils.update_bn`): trained from scratch on a few hundred images, the
    running averages lag behind the fast-moving weights, and in eval mode ResNet-18 then called
    every bottle good (accuracy 0.78, image AUROC 0.5 after 4 epochs on real bottle).

    Examples
    --------
    >>> images, labels = torch.rand(8, 3, 64, 64), np.array([0, 1] * 4)
    >>> model = SupervisedClassifier(architecture="resnet18", image_size=64, epochs=1)
    >>> model.fit(images, labels, progress=False).predict_proba(images).shape
    (8, 2)
    """

    def __init__(self, *, architecture: str = "convnet", pretrained: bool = False, freeze_backbone: bool = False,
                 image_size: int = DEFAULT_IMAGE_SIZE, epochs: int = 10, batch_size: int = 16,
                 learning_rate: float = 1e-3, class_weight: str | None = "balanced",
                 augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        self.architecture = architecture
        self.pretrained = pretrained
        self.freeze_backbone = freeze_backbone
        self.image_size = image_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.augmentation = augmentation
        self.seed = seed
        self.device = device

    @property
    def device_(self) -> torch.device:
        """The resolved :class:`torch.device` the network runs on."""
        return get_device(self.device)

    def _build(self, *, load_weights: bool) -> None:
        """Create ``network_`` (seeded new layers) and the normalisation its inputs get."""
        if self.freeze_backbone and not self.pretrained:
            raise ValueError("freeze_backbone=True would train a head on random features; "
                             "pass pretrained=True or freeze_backbone=False")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            network, mean, std = build_network(self.architecture, pretrained=self.pretrained and load_weights,
                                               image_size=self.image_size)
        if self.freeze_backbone:
            network.requires_grad_(False)
            network.fc.requires_grad_(True)
        self.network_ = network.to(self.device_).eval()
        self.mean_ = torch.tensor(mean, device=self.device_).view(1, 3, 1, 1)
        self.std_ = torch.tensor(std, device=self.device_).view(1, 3, 1, 1)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] == (self.image_size, self.image_size):
            return images
        return F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                             antialias=True, align_corners=False).clamp(0, 1)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean_) / self.std_

    def _logits(self, network: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return network(self._normalize(images))

    def fit(self, images: Any, labels: Any, *, progress: bool = True) -> "SupervisedClassifier":
        """Train a fresh network on labelled images and return ``self``.

        Parameters
        ----------
        images : torch.Tensor or ndarray of shape (N, 3, H, W), float in [0, 1]
        labels : array-like of shape (N,), int
            0 = good, 1 = defective; both must occur.
        progress : bool, default=True
            Show progress bars.

        Raises
        ------
        ValueError
            If the images are invalid, labels do not match them, or a class is missing.
        """
        images = as_images(images)
        labels = torch.as_tensor(np.asarray(labels)).long()
        if labels.shape != images.shape[:1]:
            raise ValueError(f"got {tuple(labels.shape)} labels for {len(images)} images; pass one label per image")
        if set(labels.tolist()) != {0, 1}:
            raise ValueError(f"labels must be 0 (good) and 1 (defective), both present; got values "
                             f"{sorted(set(labels.tolist()))}. MVTec AD's training split has only good "
                             "images: build a labelled set with labelled_split")
        for name in ("epochs", "batch_size", "image_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        self._build(load_weights=True)
        self.progress_ = progress
        counts = torch.bincount(labels, minlength=2).float()
        weights = (len(labels) / (2 * counts)).to(self.device_) if self.class_weight else None
        inputs, trained = self._resize(images), self.network_
        if self.freeze_backbone and self.augmentation is None:
            # A frozen backbone maps an image to the same features in every epoch: compute them
            # once and train the head alone on them (same result, a fraction of the time).
            inputs, trained = self._pooled_features(inputs), self.network_.fc
        loader = DataLoader(_LabelledImages(inputs, labels, self.augmentation), batch_size=self.batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(self.seed))

        def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            batch_inputs, batch_labels = batch
            if model is self.network_:
                if self.freeze_backbone:
                    model.eval()  # train() would update the frozen backbone's batch-norm statistics
                return F.cross_entropy(self._logits(model, batch_inputs), batch_labels, weight=weights)
            return F.cross_entropy(model(batch_inputs), batch_labels, weight=weights)

        trainable = [p for p in trained.parameters() if p.requires_grad]
        self.history_ = training.train(
            trained, loader, loss_fn, epochs=self.epochs,
            optimizer=torch.optim.Adam(trainable, lr=self.learning_rate), seed=self.seed, device=self.device_,
            desc=f"training {self.architecture}", progress=progress)
        if not self.freeze_backbone:
            # Trained from few images, the weights move fast and batch norm's running averages lag
            # behind them; eval mode would then normalise with stale statistics (all logits shifted,
            # even saturated). Recompute them for the final weights on the unaugmented images.
            torch.optim.swa_utils.update_bn(
                (self._normalize(batch.to(self.device_)) for batch in inputs.split(self.batch_size)), self.network_)
        self.network_.eval()
        return self

    def _pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """What the network's ``fc`` reads, (N, C) on CPU, for images already at ``image_size``."""
        head, self.network_.fc = self.network_.fc, nn.Identity()
        try:  # clone: tensors made under inference_mode cannot be saved for the head's backward pass
            return self._forward_in_batches(images, desc="pretrained features").clone()
        finally:
            self.network_.fc = head

    def _forward_in_batches(self, images: torch.Tensor, *, desc: str) -> torch.Tensor:
        outputs = []
        self.network_.eval()
        with torch.inference_mode():
            for batch in tqdm(images.split(self.batch_size), desc=desc, leave=False,
                              disable=not getattr(self, "progress_", False)):
                outputs.append(self._logits(self.network_, self._resize(batch.to(self.device_))).float().cpu())
        return torch.cat(outputs)

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        images : torch.Tensor or ndarray of shape (N, 3, H, W), float in [0, 1]

        Returns
        -------
        ndarray of shape (N, 2), float32
            Column 0: P(good), column 1: P(defective); rows sum to 1. Column 1 is an image
            anomaly score for :func:`mvtec_tutorial.metrics.image_auroc`.
        """
        if not hasattr(self, "network_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        logits = self._forward_in_batches(as_images(images), desc="classifying")
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, images: Any) -> np.ndarray:
        """Predicted labels (N,) int64, 1 = defective: the more probable class."""
        return self.predict_proba(images).argmax(axis=1)

    def save(self, path: str | Path) -> Path:
        """Save the trained weights with :func:`mvtec_tutorial.training.save_checkpoint`."""
        if not hasattr(self, "network_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        return training.save_checkpoint(path, self.network_, image_size=self.image_size,
                                        history=getattr(self, "history_", {}))

    def load(self, path: str | Path) -> "SupervisedClassifier":
        """Load weights saved by :meth:`save` into this classifier's architecture and return ``self``.

        Raises
        ------
        ValueError
            If the checkpoint holds another architecture or does not fit (e.g. another image size).
        """
        self._build(load_weights=False)  # the checkpoint replaces every weight
        metadata = training.load_checkpoint(path, self.network_)
        self.network_.to(self.device_).eval()
        self.history_ = metadata.get("history", {})
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


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
        ``accuracy``; ``image_auroc`` (P(defective) as score; ``nan`` with one class only);
        ``good_recall`` and ``defective_recall`` (the paper's good/defective accuracies);
        ``recall_by_type`` (dict: defect type -> share classified correctly); ``confusion_matrix``
        (2 x 2 int array, rows true good/defective, columns predicted good/defective).

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
        "image_auroc": metrics.image_auroc(labels, scores) if len(set(labels.tolist())) == 2 else float("nan"),
        "good_recall": good_recall,
        "defective_recall": defective_recall,
        "recall_by_type": {name: float(correct[types == name].mean()) for name in sorted(set(defect_types))},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=[0, 1]),
    }


def make_classifier(name: str, *, epochs: int | None = None, augmented: bool = False, seed: int = 0,
                    device: str | torch.device | None = None) -> SupervisedClassifier:
    """The classifier :data:`MODELS` names, optionally with fewer ``epochs`` and :func:`default_augmentation`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return SupervisedClassifier(**{**MODELS[name], **({"epochs": epochs} if epochs else {})}, seed=seed,
                                device=device, augmentation=default_augmentation() if augmented else None)


def fit_and_evaluate(classifier: SupervisedClassifier, images: torch.Tensor, labels: np.ndarray,
                     defect_types: Sequence[str], train: Sequence[int], evaluation: Sequence[int], *,
                     progress: bool = True) -> dict[str, Any]:
    """Fit on ``images[train]``, evaluate on ``images[evaluation]`` and time both.

    Parameters
    ----------
    classifier : SupervisedClassifier
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
    labels : ndarray of shape (N,), int; 1 = defective.
    defect_types : sequence of N str
    train, evaluation : sequences of int
        Indices into the arrays, e.g. the ``indices`` of :func:`labelled_split`'s subsets.

    Returns
    -------
    dict
        :func:`classification_report` of the evaluation images plus ``probabilities`` (P(defective),
        ndarray (n_evaluation,)), ``fit_seconds``, ``fit_cpu_seconds`` (CPU time of all threads)
        and ``predict_seconds``.
    """
    train, evaluation = np.asarray(train), np.asarray(evaluation)
    start, start_cpu = time.perf_counter(), time.process_time()
    classifier.fit(images[train], labels[train], progress=progress)
    fitted, fitted_cpu = time.perf_counter(), time.process_time()
    probabilities = classifier.predict_proba(images[evaluation])[:, 1]
    predicted = time.perf_counter()
    report = classification_report(labels[evaluation], probabilities, [defect_types[i] for i in evaluation])
    return {**report, "probabilities": probabilities, "fit_seconds": fitted - start,
            "fit_cpu_seconds": fitted_cpu - start_cpu, "predict_seconds": predicted - fitted}


#: What notebook 02 runs, and the command line by default.
NOTEBOOK_MODELS = ("convnet", "resnet18_scratch", "lite0_imagenet_frozen")
NOTEBOOK_AUGMENTED_MODELS = ("convnet",)
NOTEBOOK_HELD_OUT_MODELS = ("lite0_imagenet_frozen",)


def run_experiments(root: str | Path, category: str, *, models: Sequence[str] = NOTEBOOK_MODELS,
                    augmented_models: Sequence[str] = NOTEBOOK_AUGMENTED_MODELS,
                    held_out_models: Sequence[str] = NOTEBOOK_HELD_OUT_MODELS, epochs: int | None = None,
                    image_size: int = DEFAULT_IMAGE_SIZE, evaluation_fraction: float = 0.3, seed: int = 0,
                    device: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Train and evaluate :data:`MODELS` on one category, then hold out each defect type in turn.

    The category's images are read once at ``image_size`` (each model resizes them to its own).
    ``models`` (without augmentation) and ``augmented_models`` (with :func:`default_augmentation`)
    are trained on the same :func:`labelled_split`; then each of ``held_out_models`` (without
    augmentation) is retrained once per defect type with that type removed from training.
    ``epochs`` None keeps each model's own schedule.

    Returns
    -------
    list of dict
        One row per run: model, augmented, held_out, the scalar values of :func:`fit_and_evaluate`
        and ``recall[<type>]`` per defect type.
    """
    for name in [*models, *augmented_models, *held_out_models]:
        make_classifier(name)  # fail before reading any image
    defect_types = sorted(set(data.MVTecAD(root, category, "test", image_size=None).defect_types) - {data.GOOD})
    runs = [(name, False, None) for name in models] + [(name, True, None) for name in augmented_models]
    runs += [(name, False, held_out) for name in held_out_models for held_out in defect_types]
    pooled = labelled_split(root, category, image_size=image_size)[0].dataset
    images, _, labels, types = data.stack(pooled, progress=progress)  # read once, index per split
    rows = []
    for name, augmented, held_out in tqdm(runs, desc="experiments", disable=not progress):
        train, evaluation = labelled_split(root, category, image_size=image_size, seed=seed,
                                           evaluation_fraction=evaluation_fraction, held_out_defect_type=held_out)
        classifier = make_classifier(name, epochs=epochs, augmented=augmented, seed=seed, device=device)
        result = fit_and_evaluate(classifier, images, labels, types, train.indices, evaluation.indices,
                                  progress=progress)
        rows.append({"model": name, "augmented": augmented, "held_out": held_out or "-",
                     **{key: value for key, value in result.items() if isinstance(value, float)},
                     **{f"recall[{key}]": value for key, value in result["recall_by_type"].items()},
                     "n_train": len(train), "n_evaluation": len(evaluation)})
    return rows


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`run_experiments` rows: numbers to 3 decimals, seconds to 1."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row.get(key, "") for key in columns]
        lines.append("| " + " | ".join(
            f"{cell:.1f}" if key.endswith("seconds") else f"{cell:.3f}" if isinstance(cell, float) else str(cell)
            for key, cell in zip(columns, cells)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Supervised good-vs-defective baselines on one category.")
    parser.add_argument("--root", required=True, help="dataset root (real MVTec AD or the synthetic set)")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--models", nargs="*", default=list(NOTEBOOK_MODELS), choices=list(MODELS),
                        help="trained without augmentation")
    parser.add_argument("--augmented-models", nargs="*", default=list(NOTEBOOK_AUGMENTED_MODELS),
                        choices=list(MODELS), help="trained with default_augmentation()")
    parser.add_argument("--held-out-models", nargs="*", default=list(NOTEBOOK_HELD_OUT_MODELS),
                        choices=list(MODELS), help="retrained once per held-out defect type")
    parser.add_argument("--epochs", type=int, default=None, help="default: each model's own (see MODELS)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--evaluation-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    rows = run_experiments(args.root, args.category, models=args.models, augmented_models=args.augmented_models,
                           held_out_models=args.held_out_models,
                           epochs=args.epochs, image_size=args.image_size,
                           evaluation_fraction=args.evaluation_fraction, seed=args.seed, device=args.device)
    print(to_markdown(rows))


if __name__ == "__main__":
    main()
