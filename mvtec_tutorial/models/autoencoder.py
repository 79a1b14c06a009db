"""Convolutional autoencoders: reconstruct a normal image, call what cannot be reconstructed a defect.

An autoencoder trained only on defect-free images learns to squeeze them through a small
latent code and rebuild them. A defect was never seen, so it is rebuilt badly, and the
difference between input and reconstruction (the residual) marks it. Two residuals, two
training losses (Bergmann et al., "Improving Unsupervised Defect Segmentation by Applying
Structural Similarity to Autoencoders", VISAPP 2019, the AE baselines of MVTec AD, CVPR 2019):

- ``loss="l2"``: train on the mean squared error of RGB images; the map is the per-pixel
  squared residual;
- ``loss="ssim"``: train on 1 - SSIM of grayscale images (:mod:`mvtec_tutorial.ssim`); the map
  is ``1 - SSIM`` of each pixel's 11 x 11 neighbourhood.

The networks (:mod:`mvtec_tutorial.models.autoencoder_networks`) come from one mirrored
encoder-decoder template: the paper's (:func:`bergmann_network`) and the small five-layer CAE of
the course's source deck (:func:`tutorial_network`), the "first attempt" of notebook 03. The deck
also normalised its inputs while its decoder ended in a sigmoid; ``normalisation`` and
``output`` reproduce that mismatch, and ``output`` or ``targets`` its two fixes (notebook 03, section 3).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mvtec_tutorial import training
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.data import CATEGORIES, Augmentation, category_info, to_grayscale
from mvtec_tutorial.models.autoencoder_networks import (OUTPUTS, MirroredAutoencoder, bergmann_network,
                                                        reconstruct_patchwise, tutorial_network, window_starts)
from mvtec_tutorial.models.base import AnomalyDetector, as_images
from mvtec_tutorial.ssim import ssim_map

__all__ = ["ConvAutoencoder", "MirroredAutoencoder", "bergmann_network", "tutorial_network", "reconstruct_patchwise",
           "window_starts", "random_views", "reconstruction_loss", "anomaly_maps"]

LOSSES = ("l2", "ssim")
ARCHITECTURES = ("bergmann", "tutorial")
#: Input normalisations of the deck's experiments: none (images in [0, 1], the course's), ImageNet's
#: per-channel mean and standard deviation, or the training images' own ("train").
NORMALISATIONS = (None, "imagenet", "train")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: What the decoder rebuilds: its own (normalised) inputs, as the deck did, or the images in [0, 1].
TARGETS = ("inputs", "images")
#: Training schedule of Bergmann et al. (2019) and MVTec AD (2019), meant for a GPU: 10,000
#: augmented views per category, 200 epochs, batch 128, Adam with learning rate 2e-4 (2,000,000 views).
PAPER_SCHEDULE = dict(n_views=10_000, epochs=200, batch_size=128, learning_rate=2e-4)
#: Our CPU schedule (the constructor's defaults): 30,000 views, 1.5 % of the paper's. On real bottle
#: at 128 px (one core, results/README.md) 15 epochs kept AE-SSIM's quality (image / pixel AUROC,
#: AU-PRO 0.997 / 0.965 / 0.897 against 0.998 / 0.966 / 0.903 after 30 epochs) at half the time
#: (fit 815 s against 1635 s); AE-L2 lost some (0.907 / 0.835 / 0.562 against 0.937 / 0.862 / 0.625).
CPU_SCHEDULE = dict(n_views=2000, epochs=15, batch_size=32, learning_rate=2e-4)
#: A smoke-test schedule for tests and the fast notebooks: numbers mean nothing.
QUICK_SCHEDULE = dict(n_views=64, epochs=1, batch_size=32, learning_rate=2e-4)
#: Settings per schedule and kind (:attr:`ConvAutoencoder.schedules`). Textures are always trained on
#: the paper's 128 px patches and scored by a stride-30 sliding window; objects as whole images, at
#: 128 px on the CPU schedules (the paper uses 256; 128 is 4x cheaper and scored better on bottle
#: within the CPU budget) and at 256 px on the paper's.
SCHEDULE_SETTINGS = {
    schedule: {"texture": dict(patch_size=128, stride=30, **settings),
               "object": dict(work_size=256 if schedule == "paper" else 128, **settings)}
    for schedule, settings in (("quick", QUICK_SCHEDULE), ("cpu", CPU_SCHEDULE), ("paper", PAPER_SCHEDULE))}


# ------------------------------------------------------------------------------- losses and maps
def reconstruction_loss(reconstructions: torch.Tensor, images: torch.Tensor, *, loss: str) -> torch.Tensor:
    """Training loss of a batch: mean squared error (``"l2"``) or mean of ``1 - SSIM`` (``"ssim"``)."""
    if loss == "l2":
        return F.mse_loss(reconstructions, images)
    return 1.0 - ssim_map(reconstructions, images).mean()


def anomaly_maps(images: torch.Tensor, reconstructions: torch.Tensor, *, loss: str) -> torch.Tensor:
    """Per-pixel residual of a reconstruction, higher = more anomalous.

    Parameters
    ----------
    images, reconstructions : torch.Tensor of shape (N, C, H, W) in [0, 1]
    loss : {"l2", "ssim"}, keyword-only
        ``"l2"``: squared difference averaged over channels, in [0, 1];
        ``"ssim"``: ``1 - SSIM`` of the 11 x 11 window around each pixel, in [0, 2].

    Returns
    -------
    torch.Tensor of shape (N, H, W)
    """
    if loss == "l2":
        return ((images - reconstructions) ** 2).mean(dim=1)
    return 1.0 - ssim_map(images, reconstructions)


# ------------------------------------------------------------------------------- augmentation
def random_views(images: torch.Tensor, n_views: int, *, size: int, augmentation: Augmentation,
                 generator: torch.Generator) -> torch.Tensor:
    """Draw augmented square views (whole images or patches) from square images.

    Parameters
    ----------
    images : torch.Tensor of shape (N, C, S, S)
    n_views : int
        Number of views; source images are drawn uniformly with replacement.
    size : int, keyword-only
        Side of each view; ``size < S`` crops a patch at a random position inside the image
        (the rotated patch stays inside where it fits), ``size == S`` keeps the whole image.
    augmentation : Augmentation, keyword-only
    generator : torch.Generator, keyword-only
        A CPU generator: the only source of randomness.

    Returns
    -------
    torch.Tensor of shape (n_views, C, size, size), on the device of ``images``

    Notes
    -----
    One affine warp per view (:func:`torch.nn.functional.affine_grid`): mirror, rotate, scale
    the view into the image and shift it. Pixels that fall outside are filled by reflection.
    """
    n_images, n_channels, side = images.shape[0], images.shape[1], images.shape[-1]
    uniform = lambda: torch.rand(n_views, generator=generator, dtype=torch.float64)  # noqa: E731
    index = torch.randint(n_images, (n_views,), generator=generator)
    angle = (2 * uniform() - 1) * math.radians(augmentation.rotation)
    flip_x = torch.where((uniform() < 0.5) & augmentation.hflip, -1.0, 1.0).double()
    flip_y = torch.where((uniform() < 0.5) & augmentation.vflip, -1.0, 1.0).double()
    scale = size / side
    cos, sin = angle.cos(), angle.sin()
    # Normalised coordinates span 2 per side: a view of half-reach r may move by 1 - r and stay inside.
    limit = (1 - scale * (cos.abs() + sin.abs())).clamp(min=0) + 2 * augmentation.translation
    parity = ((side - size) / 2) % 1
    shifts = []
    for _ in range(2):
        shift = (2 * uniform() - 1) * limit * side / 2
        # whole-pixel shifts, so an unrotated crop copies pixels instead of interpolating them
        shifts.append((torch.round(shift + parity) - parity) * 2 / side)
    theta = torch.stack([
        torch.stack([scale * cos * flip_x, -scale * sin * flip_y, shifts[0]], dim=1),
        torch.stack([scale * sin * flip_x, scale * cos * flip_y, shifts[1]], dim=1),
    ], dim=1).to(images.device, images.dtype)
    grid = F.affine_grid(theta, [n_views, n_channels, size, size], align_corners=False)
    return F.grid_sample(images[index.to(images.device)], grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class _RandomViewBatches:
    """An epoch of ``n_views`` fresh augmented views in batches; a new draw on every pass."""

    def __init__(self, images: torch.Tensor, *, n_views: int, batch_size: int, size: int,
                 augmentation: Augmentation, generator: torch.Generator) -> None:
        self.images, self.n_views, self.batch_size = images, n_views, batch_size
        self.size, self.augmentation, self.generator = size, augmentation, generator

    def __len__(self) -> int:
        return math.ceil(self.n_views / self.batch_size)

    def __iter__(self):
        for first in range(0, self.n_views, self.batch_size):
            yield random_views(self.images, min(self.batch_size, self.n_views - first), size=self.size,
                               augmentation=self.augmentation, generator=self.generator)


# ------------------------------------------------------------------------------- the detector
class ConvAutoencoder(AnomalyDetector):
    """Convolutional autoencoder anomaly detector with L2 or SSIM loss (Bergmann et al. 2019).

    Parameters
    ----------
    loss : {"ssim", "l2"}, default="ssim"
        ``"ssim"`` trains and scores grayscale images with SSIM; ``"l2"`` RGB images with
        the squared error. See the module docstring.
    architecture : {"bergmann", "tutorial"}, default="bergmann"
        The paper's network (:func:`bergmann_network`) or the deck's first CAE (:func:`tutorial_network`).
    patch_size : int or None, default=None
        None: the network sees whole images (the paper's setting for objects, at 256 px).
        An int (128 for textures): train on random patches of this side and reconstruct test
        images by a sliding window with step ``stride``, overlaps averaged.
    stride : int, default=30
        Sliding-window step in pixels (the paper's 30); used only with ``patch_size``.
    work_size : int or None, default=None
        Side the network works at: images are resized to it (bilinear, antialiased) and maps
        resized back to the input size. None keeps the input size. 128 makes a CPU run ~4x cheaper
        than 256.
    latent_dim : int, default=100
        Latent code size of the Bergmann network (ignored by the tutorial network).
    n_views : int, default=2000
        Augmented training views drawn afresh in every epoch.
    epochs, batch_size : int, default=15, 32
        Passes over ``n_views`` views, and views per optimiser step.
    learning_rate : float, default=2e-4
        Adam's step size (the paper's).
    augmentation : str, Augmentation or None, default=None
        A category name uses that category's legal poses
        (:attr:`mvtec_tutorial.data.CategoryInfo.augmentation`, e.g. ``"bottle"``); None draws
        plain crops (or whole images) only.
    normalisation : {None, "imagenet", "train"}, default=None
        Standardise the network's inputs (and targets) per channel, as the deck did: with
        ImageNet's mean and standard deviation, or the training images' own. Only with
        ``loss="l2"``. Reconstructions and maps are given back in image units either way.
    output : {"sigmoid", "linear"}, default="sigmoid"
        The decoder's last activation (:class:`MirroredAutoencoder`). A sigmoid cannot produce
        the negative values of normalised images: the deck's mismatch.
    targets : {"inputs", "images"}, default="inputs"
        What the loss compares the decoder's output with: the network's inputs (normalised when
        ``normalisation`` is set, the deck's choice), or the images in [0, 1], that is, the inputs
        de-normalised before the loss. With "images" a sigmoid output matches its targets' range
        whatever the normalisation.
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector`; ``seed`` fixes initial
        weights, augmentations and batch order.

    Attributes
    ----------
    network_ : MirroredAutoencoder
        The trained network, in eval mode on ``device_``.
    work_size_ : int
        Side of the images the network was trained on (after ``work_size``).
    input_mean_, input_std_ : tuple of float
        Per-channel normalisation of the network's inputs (0 and 1 without ``normalisation``).
    history_ : dict
        ``"loss"``: mean training loss per epoch.

    Notes
    -----
    The defaults are :data:`CPU_SCHEDULE` (30,000 views); the paper's GPU schedule is
    :data:`PAPER_SCHEDULE` (2,000,000 views). Unlike the paper, which augments a fixed set of
    10,000 views once, we draw new views every epoch: more variety for the same compute.
    :meth:`recommended_settings` gives the course's settings per category kind and schedule.
    The image score is the maximum of the map, as in the evaluation (``image_scores`` of the
    metrics module).

    Examples
    --------
    >>> normal = torch.rand(8, 3, 64, 64) * 0.1 + 0.45
    >>> model = ConvAutoencoder(loss="l2", epochs=1, n_views=8, batch_size=8).fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.dtype
    ((2, 64, 64), dtype('float32'))
    """

    benchmark_names = {"ae_ssim": {"loss": "ssim"}, "ae_l2": {"loss": "l2"}}
    schedules = SCHEDULE_SETTINGS

    def __init__(self, *, loss: str = "ssim", architecture: str = "bergmann", patch_size: int | None = None,
                 stride: int = 30, work_size: int | None = None, latent_dim: int = 100,
                 n_views: int = CPU_SCHEDULE["n_views"], epochs: int = CPU_SCHEDULE["epochs"],
                 batch_size: int = CPU_SCHEDULE["batch_size"], learning_rate: float = CPU_SCHEDULE["learning_rate"],
                 augmentation: str | Augmentation | None = None, normalisation: str | None = None,
                 output: str = "sigmoid", targets: str = "inputs", seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.loss = loss
        self.architecture = architecture
        self.patch_size = patch_size
        self.stride = stride
        self.work_size = work_size
        self.latent_dim = latent_dim
        self.n_views = n_views
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.augmentation = augmentation
        self.normalisation = normalisation
        self.output = output
        self.targets = targets

    def _check_parameters(self) -> Augmentation:
        for name, known in (("loss", LOSSES), ("architecture", ARCHITECTURES), ("normalisation", NORMALISATIONS),
                            ("output", OUTPUTS), ("targets", TARGETS)):
            if getattr(self, name) not in known:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; use one of {known}")
        if self.normalisation is not None and self.loss != "l2":
            raise ValueError(f"normalisation={self.normalisation!r} works with loss='l2' only: SSIM needs "
                             "images in [0, 1]; pass normalisation=None")
        for name in ("stride", "n_views", "batch_size", "latent_dim", "epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        check_scalar(self.learning_rate, "learning_rate", low=0, low_open=True)
        if isinstance(self.augmentation, str):
            if self.augmentation not in CATEGORIES:
                raise ValueError(f"no augmentation recorded for {self.augmentation!r}; known: "
                                 f"{', '.join(CATEGORIES)}; pass an Augmentation(...) or None")
            return category_info(self.augmentation).augmentation
        return self.augmentation or Augmentation()

    def _network_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the network compares them, in [0, 1]: grayscale for SSIM, resized to ``work_size``."""
        if self.loss == "ssim":
            images = to_grayscale(images)
        if self.work_size is not None and images.shape[-1] != self.work_size:
            images = F.interpolate(images, size=(self.work_size, self.work_size), mode="bilinear",
                                   antialias=True, align_corners=False).clamp(0, 1)
        return images

    def _statistics(self, inputs: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and standard deviation the inputs are normalised with."""
        n_channels = inputs.shape[1]
        if self.normalisation == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        if self.normalisation == "train":
            return tuple(inputs.mean(dim=(0, 2, 3)).tolist()), tuple(inputs.std(dim=(0, 2, 3)).tolist())
        return (0.0,) * n_channels, (1.0,) * n_channels

    def _standardise(self, inputs: torch.Tensor, *, inverse: bool = False) -> torch.Tensor:
        if self.normalisation is None:
            return inputs
        mean, std = (torch.tensor(v, dtype=inputs.dtype, device=inputs.device)[:, None, None]
                     for v in (self.input_mean_, self.input_std_))
        return inputs * std + mean if inverse else (inputs - mean) / std

    def _fit(self, images: torch.Tensor) -> None:
        augmentation = self._check_parameters()
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}; load them with MVTecAD")
        inputs = self._network_inputs(images)
        side = inputs.shape[-1]
        view = self.patch_size or side
        if view > side:
            raise ValueError(f"patch_size {self.patch_size} exceeds the image side {side}; use a smaller patch")
        self.input_mean_, self.input_std_ = self._statistics(inputs)
        device = self.device_
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            if self.architecture == "bergmann":
                network = bergmann_network(inputs.shape[1], view, latent_dim=self.latent_dim, output=self.output)
            else:
                network = tutorial_network(inputs.shape[1], view, output=self.output)
        batches = _RandomViewBatches(self._standardise(inputs).to(device), n_views=self.n_views,
                                     batch_size=self.batch_size, size=view, augmentation=augmentation,
                                     generator=torch.Generator().manual_seed(self.seed))
        self.history_ = training.train(
            network, batches, lambda model, batch: reconstruction_loss(
                model(batch), self._standardise(batch, inverse=True) if self.targets == "images" else batch,
                loss=self.loss),
            epochs=self.epochs, learning_rate=self.learning_rate, seed=self.seed, device=device,
            desc=f"training {self.architecture} AE ({self.loss})", progress=self._progress)
        self.network_ = network
        self.work_size_ = side

    def _reconstruct_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Reconstructions of network inputs (image units in, image units out)."""
        if self.patch_size is None and inputs.shape[-2:] != (self.work_size_, self.work_size_):
            raise ValueError(f"the network works on {self.work_size_} x {self.work_size_} px but got "
                             f"{tuple(inputs.shape[-2:])}; load test images at the training size or set work_size")
        standardised = self._standardise(inputs)
        if self.patch_size is None:
            reconstructions = self.network_(standardised)
        else:
            reconstructions = reconstruct_patchwise(self.network_, standardised, patch_size=self.patch_size,
                                                    stride=self.stride, batch_size=self.batch_size)
        return reconstructions if self.targets == "images" else self._standardise(reconstructions, inverse=True)

    def reconstruct(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the network's inputs and their reconstructions, for looking at.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]

        Returns
        -------
        inputs, reconstructions : ndarray of shape (N, C, R, R), float32, in image units
            ``C`` is 1 for SSIM (grayscale) and 3 for L2; ``R`` is ``work_size`` (or the input
            side). Inputs lie in [0, 1]; reconstructions too, except with ``output="linear"``.
        """
        self._check_fitted()
        images = as_images(images, progress=self._progress)
        inputs, reconstructions = [], []
        self.network_.eval()
        with torch.inference_mode():
            for batch in images.split(self.batch_size):
                batch = self._network_inputs(batch.to(self.device_))
                inputs.append(batch.cpu())
                reconstructions.append(self._reconstruct_inputs(batch).cpu())
        return torch.cat(inputs).numpy(), torch.cat(reconstructions).numpy()

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        maps = []
        self.network_.eval()
        with torch.inference_mode():
            for batch in tqdm(images.split(self.batch_size), desc="reconstructing", leave=False,
                              disable=not self._progress):
                inputs = self._network_inputs(batch.to(self.device_))
                batch_maps = anomaly_maps(inputs, self._reconstruct_inputs(inputs), loss=self.loss)
                if batch_maps.shape[-2:] != batch.shape[-2:]:
                    batch_maps = F.interpolate(batch_maps[:, None], size=tuple(batch.shape[-2:]), mode="bilinear",
                                               align_corners=False)[:, 0]
                maps.append(batch_maps.float().cpu())
        return torch.cat(maps), None
