"""Supervised good-vs-defective classifiers, the baseline the paper argues against.

The study deck trained three kinds of classifier on MVTec AD: the small ConvNet of PyTorch's
CIFAR-10 tutorial (:class:`ConvNet`), ResNet-18 (from scratch and ImageNet-pretrained) and VGG16.
:class:`SupervisedClassifier` trains any of them, or a pretrained EfficientNet-Lite0, on labelled
images. A classifier needs defective training images, which MVTec AD's training split does not
have: :func:`mvtec_tutorial.data.labelled_split` builds a labelled set, and
:mod:`mvtec_tutorial.supervised_benchmark` runs and reports the experiments.

These models are not :class:`~mvtec_tutorial.models.base.AnomalyDetector` subclasses: they learn from
labels, ``SupervisedClassifier(...).fit(images, labels)``, and return class probabilities, not maps.
They are its siblings on :class:`~mvtec_tutorial.models.base.Estimator`: the same device handling,
fitted check, ``save`` / ``load`` file format and fit cache (:func:`mvtec_tutorial.cache.fit`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from mvtec_tutorial import backbones, training
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.models.base import Estimator, as_images

ARCHITECTURES = ("convnet", "resnet18", "vgg16", "efficientnet_lite0")
OPTIMIZERS = ("adam", "sgd")
#: The ConvNet's three 5x5 convolutions (no padding) and 4-, 5-, 5-pixel max pools leave
#: ((((s - 4) // 4 - 4) // 5 - 4) // 5) positions per side: at least one needs s >= 200.
CONVNET_MIN_WORK_SIZE = 200
#: VGG16's five 2x2 max pools halve the side five times: 32 px leave one position.
VGG16_MIN_WORK_SIZE = 32
#: PyTorch's CIFAR-10 tutorial, which the deck's ConvNet follows, maps [0, 1] to [-1, 1].
CONVNET_MEAN, CONVNET_STD = (0.5,) * 3, (0.5,) * 3
#: The deck's input side (torchvision's ImageNet crop).
DEFAULT_WORK_SIZE = 224


class ConvNet(nn.Module):
    """The deck's small ConvNet: three 5x5 convolutions with ReLU and max pooling, three linear layers.

    Conv(3, 6) - pool 4 - Conv(6, 16) - pool 5 - Conv(16, 32) - pool 5 - fc 120 - fc 84 - fc 2.
    The deck hard-coded the flattened size (32 x 9 x 9, what 1000-1099 px inputs give); here it
    follows ``work_size`` (32 x 1 x 1 at 224 px).

    Parameters
    ----------
    work_size : int, default=224
        Side of the square inputs the network sees, at least :data:`CONVNET_MIN_WORK_SIZE`.
    n_classes : int, default=2
    """

    def __init__(self, *, work_size: int = DEFAULT_WORK_SIZE, n_classes: int = 2) -> None:
        super().__init__()
        side = work_size
        for pool in (4, 5, 5):
            side = (side - 4) // pool
        if side < 1:
            raise ValueError(f"the ConvNet needs inputs of at least {CONVNET_MIN_WORK_SIZE} px, got "
                             f"work_size={work_size}; pass a larger work_size")
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(5),
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(5),
        )
        self.fc1 = nn.Linear(32 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc = nn.Linear(84, n_classes)  # named like torchvision's ResNet head: .fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_classes) of normalised images (N, 3, work_size, work_size)."""
        x = torch.flatten(self.features(x), 1)
        return self.fc(F.relu(self.fc2(F.relu(self.fc1(x)))))


def build_network(architecture: str, *, pretrained: bool = False,
                  work_size: int = DEFAULT_WORK_SIZE) -> tuple[nn.Module, tuple, tuple]:
    """A two-class network and the input normalisation (mean, std of RGB in [0, 1]) it expects.

    ``"resnet18"`` and ``"efficientnet_lite0"`` come from :mod:`mvtec_tutorial.backbones` with a new
    randomly initialised 2-class head ``fc``; ``pretrained=True`` for ResNet-18 raises
    :class:`FileNotFoundError` when torchvision's weights are not cached (never a silent fallback).
    ``"vgg16"`` is torchvision's VGG16 (13 convolutions, no batch norm, 3 linear layers, 138 M
    weights) with 2 outputs, always from scratch: its ImageNet weights are a 528 MB download that
    this course does not ship, and an offline course cannot fetch. Its head keeps torchvision's
    name, ``classifier``.

    Raises
    ------
    ValueError
        For an unknown architecture, pretrained weights the architecture has not got here, or a
        ``work_size`` too small for it.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    if architecture == "convnet":
        if pretrained:
            raise ValueError("the ConvNet has no pretrained weights; pass pretrained=False")
        return ConvNet(work_size=work_size), CONVNET_MEAN, CONVNET_STD
    if architecture == "vgg16":
        if pretrained:
            raise ValueError("VGG16 runs from scratch only: its ImageNet weights (528 MB) are not shipped with the "
                             "course and nothing is downloaded; pass pretrained=False, or use resnet18 or "
                             "efficientnet_lite0 for a pretrained network")
        if work_size < VGG16_MIN_WORK_SIZE:
            raise ValueError(f"VGG16 needs inputs of at least {VGG16_MIN_WORK_SIZE} px, got work_size={work_size}")
        return torchvision.models.vgg16(weights=None, num_classes=2), backbones.IMAGENET_MEAN, backbones.IMAGENET_STD
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


class _LabelledImages(Dataset):
    """(image, label) pairs, each image passed through ``transform`` when it is read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), self.labels[index]


class SupervisedClassifier(Estimator):
    r"""Good (0) vs defective (1) image classifier trained with (class-weighted) cross-entropy.

    Parameters
    ----------
    architecture : {"convnet", "resnet18", "vgg16", "efficientnet_lite0"}, default="convnet"
        See :func:`build_network`.
    pretrained : bool, default=False
        Start from ImageNet weights (ResNet-18 and EfficientNet-Lite0 only). ResNet-18's must be in
        torch's cache.
    freeze_backbone : bool, default=False
        With ``pretrained``: train only the new 2-class head on fixed ImageNet features (a
        "linear probe", about three times cheaper than fine-tuning the whole network).
    work_size : int, default=224
        Side of the square inputs the network sees; images of any size are resized to it
        (bilinear, antialiased).
    epochs, batch_size : int, default=10, 16
    optimizer : {"adam", "sgd"}, default="adam"
        The course uses Adam; the deck trained its ConvNet with plain SGD.
    learning_rate : float, default=1e-3
        The optimiser's step size.
    momentum : float, default=0.0
        SGD's momentum; only used when ``optimizer="sgd"`` (the deck's SGD had none).
    class_weight : {"balanced", None}, default="balanced"
        "balanced" weights each class's loss by ``n / (2 n_class)`` as scikit-learn does, so
        calling every image good is not the cheapest answer when good images dominate.
    augmentation : callable or "default", optional
        Applied on the fly to every training image, ``augmentation(image) -> image`` on float
        (3, H, W) in [0, 1]; "default" is :func:`default_augmentation` (and, unlike a callable,
        lets the fitted classifier be saved and cached). It draws from torch's generator,
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
        ``"loss"``: mean training loss per epoch; set last, it marks the classifier fitted.
    mean_, std_ : torch.Tensor of shape (1, 3, 1, 1)
        The input normalisation the network expects (ImageNet statistics for the ImageNet networks).

    Notes
    -----
    The network maps an image :math:`x` to two logits :math:`z`, and
    :math:`p_k(x) = e^{z_k} / (e^{z_0} + e^{z_1})` (softmax). Training minimises the weighted
    cross-entropy over a batch, :math:`L = -\sum_i w_{y_i} \log p_{y_i}(x_i) / \sum_i w_{y_i}`
    (:func:`torch.nn.functional.cross_entropy` with ``weight``), with :math:`w_c = n / (2 n_c)`
    under ``class_weight="balanced"`` and :math:`w_c = 1` otherwise.

    After training, batch norm's running statistics are recomputed on the training images
    (:func:`torch.optim.swa_utils.update_bn`): trained from scratch on a few hundred images, the
    running averages lag behind the fast-moving weights, and in eval mode ResNet-18 then called
    every bottle good (accuracy 0.78, image AUROC 0.5 after 4 epochs on real bottle).

    Examples
    --------
    >>> images, labels = torch.rand(8, 3, 64, 64), np.array([0, 1] * 4)
    >>> model = SupervisedClassifier(architecture="resnet18", work_size=64, epochs=1)
    >>> model.fit(images, labels, progress=False).predict_proba(images).shape
    (8, 2)
    """

    def __init__(self, *, architecture: str = "convnet", pretrained: bool = False, freeze_backbone: bool = False,
                 work_size: int = DEFAULT_WORK_SIZE, epochs: int = 10, batch_size: int = 16,
                 optimizer: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.0,
                 class_weight: str | None = "balanced",
                 augmentation: Callable[[torch.Tensor], torch.Tensor] | str | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        self.architecture = architecture
        self.pretrained = pretrained
        self.freeze_backbone = freeze_backbone
        self.work_size = work_size
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.class_weight = class_weight
        self.augmentation = augmentation
        self.seed = seed
        self.device = device

    _FITTED_BY = "history_"

    def _build(self, *, load_weights: bool) -> None:
        """Create ``network_`` (seeded new layers) and the normalisation its inputs get."""
        if self.freeze_backbone and not self.pretrained:
            raise ValueError("freeze_backbone=True would train a head on random features; "
                             "pass pretrained=True or freeze_backbone=False")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            network, mean, std = build_network(self.architecture, pretrained=self.pretrained and load_weights,
                                               work_size=self.work_size)
        if self.freeze_backbone:
            network.requires_grad_(False)
            network.fc.requires_grad_(True)
        self.network_ = network.to(self.device_).eval()
        self.mean_ = torch.tensor(mean, device=self.device_).view(1, 3, 1, 1)
        self.std_ = torch.tensor(std, device=self.device_).view(1, 3, 1, 1)

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] == (self.work_size, self.work_size):
            return images
        return F.interpolate(images, size=(self.work_size, self.work_size), mode="bilinear",
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
                             "images: build a labelled set with mvtec_tutorial.data.labelled_split")
        for name in ("epochs", "batch_size", "work_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        check_scalar(self.seed, "seed", low=0, integer=True, hint="it seeds the classifier's own generators; "
                                                                  "pass e.g. seed=0")
        check_scalar(self.learning_rate, "learning_rate", low=0, low_open=True)
        check_scalar(self.momentum, "momentum", low=0, high=1, high_open=True)
        if self.augmentation is not None and self.augmentation != "default" and not callable(self.augmentation):
            raise ValueError(f"augmentation must be a callable, 'default' or None, got {self.augmentation!r}")
        self._forget()
        self._progress = progress
        try:
            self._train(images, labels)
        except BaseException:
            self._forget()
            raise
        return self

    def _build_for_load(self) -> None:
        """The untrained network a saved classifier's weights are loaded into (no ImageNet download)."""
        self._build(load_weights=False)

    def _train(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self._build(load_weights=True)
        counts = torch.bincount(labels, minlength=2).float()
        weights = (len(labels) / (2 * counts)).to(self.device_) if self.class_weight else None
        inputs, trained = self._resize(images), self.network_
        if self.freeze_backbone and self.augmentation is None:
            # A frozen backbone maps an image to the same features in every epoch: compute them
            # once and train the head alone on them (same result, a fraction of the time).
            inputs, trained = self._pooled_features(inputs), self.network_.fc
        augmentation = default_augmentation() if self.augmentation == "default" else self.augmentation
        loader = DataLoader(_LabelledImages(inputs, labels, augmentation), batch_size=self.batch_size,
                            shuffle=True, generator=torch.Generator().manual_seed(self.seed))

        def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            batch_inputs, batch_labels = batch
            if model is self.network_:
                if self.freeze_backbone:
                    model.eval()  # train() would update the frozen backbone's batch-norm statistics
                return F.cross_entropy(self._logits(model, batch_inputs), batch_labels, weight=weights)
            return F.cross_entropy(model(batch_inputs), batch_labels, weight=weights)

        trainable = [p for p in trained.parameters() if p.requires_grad]
        optimizer = (torch.optim.Adam(trainable, lr=self.learning_rate) if self.optimizer == "adam"
                     else torch.optim.SGD(trainable, lr=self.learning_rate, momentum=self.momentum))
        history = training.train(trained, loader, loss_fn, epochs=self.epochs, optimizer=optimizer,
                                 seed=self.seed, device=self.device_, desc=f"training {self.architecture}",
                                 progress=self._progress)
        if not self.freeze_backbone:
            # Trained from few images, the weights move fast and batch norm's running averages lag
            # behind them; eval mode would then normalise with stale statistics (all logits shifted,
            # even saturated). Recompute them for the final weights on the unaugmented images.
            torch.optim.swa_utils.update_bn(
                (self._normalize(batch.to(self.device_)) for batch in inputs.split(self.batch_size)), self.network_)
        self.network_.eval()
        self.history_ = history

    def _pooled_features(self, images: torch.Tensor) -> torch.Tensor:
        """What the network's ``fc`` reads, (N, C) on CPU, for images already at ``work_size``."""
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
                              disable=not self._progress):
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
            Column 0: P(good), column 1: P(defective); rows sum to 1. Column 1 serves as an
            image anomaly score (higher = more likely defective), e.g. for an image ROC AUC.
        """
        self._check_fitted()
        logits = self._forward_in_batches(as_images(images), desc="classifying")
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, images: Any) -> np.ndarray:
        """Predicted labels (N,) int64, 1 = defective: the more probable class."""
        return self.predict_proba(images).argmax(axis=1)
