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

Networks come from one mirrored encoder-decoder template (:class:`MirroredAutoencoder`): the
paper's (:func:`bergmann_network`) and the small five-layer CAE of the course's source deck
(:func:`tutorial_network`), the "first attempt" of notebook 03.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mvtec_tutorial import training
from mvtec_tutorial.models.base import AnomalyDetector, as_images
from mvtec_tutorial.ssim import ssim_map, to_grayscale

LOSSES = ("l2", "ssim")
ARCHITECTURES = ("bergmann", "tutorial")
#: Encoder of Bergmann et al. (2019), Table 1, for 128 x 128 inputs: (out_channels, kernel, stride).
#: Every layer pads by 1, so stride 2 halves the side and stride 1 keeps it: 128 -> 8.
BERGMANN_ENCODER = ((32, 4, 2), (32, 4, 2), (32, 3, 1), (64, 4, 2), (64, 3, 1),
                    (128, 4, 2), (64, 3, 1), (32, 3, 1))
BERGMANN_SIDE = 128
#: Encoder of the deck's 224 x 224 CAE: four halvings, then a 4 x 4 valid convolution to 256 channels.
TUTORIAL_ENCODER = ((16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2))
TUTORIAL_CODE_CHANNELS = 256
#: Training schedule of Bergmann et al. (2019) and MVTec AD (2019), meant for a GPU: 10,000
#: augmented views per category, 200 epochs, batch 128, Adam with learning rate 2e-4 (2,000,000 views).
PAPER_SCHEDULE = dict(n_patches=10_000, epochs=200, batch_size=128, learning_rate=2e-4)
#: Our CPU schedule (the constructor's defaults): 30,000 views, 1.5 % of the paper's. On real bottle
#: at 128 px (one core, results/README.md) 15 epochs kept AE-SSIM's quality (image / pixel AUROC,
#: AU-PRO 0.997 / 0.965 / 0.897 against 0.998 / 0.966 / 0.903 after 30 epochs) at half the time
#: (fit 815 s against 1635 s); AE-L2 lost some (0.907 / 0.835 / 0.562 against 0.937 / 0.862 / 0.625).
CPU_SCHEDULE = dict(n_patches=2000, epochs=15, batch_size=32, learning_rate=2e-4)
#: A smoke-test schedule for tests and the fast notebooks: numbers mean nothing.
QUICK_SCHEDULE = dict(n_patches=64, epochs=1, batch_size=32, learning_rate=2e-4)
#: Names of the schedules :func:`recommended_settings` knows.
SCHEDULES = ("quick", "cpu", "paper")


# ------------------------------------------------------------------------------- networks
class MirroredAutoencoder(nn.Module):
    """Convolutional encoder, a linear bottleneck convolution, and its mirror image as decoder.

    Parameters
    ----------
    in_channels : int
        1 (grayscale) or 3 (RGB).
    encoder : sequence of (out_channels, kernel, stride)
        Hidden convolutions, each padded by 1 and followed by the (Leaky)ReLU.
    code_channels, code_kernel : int
        The bottleneck: an unpadded ``code_kernel`` x ``code_kernel`` convolution to
        ``code_channels`` with no activation (the latent code).
    negative_slope : float, default=0.0
        Slope of the LeakyReLU after every hidden layer; 0 means ReLU.

    Notes
    -----
    The decoder repeats the encoder backwards with transposed convolutions of the same kernel,
    stride and padding, so every layer restores the shape its mirror consumed, and ends in a
    sigmoid so reconstructions lie in [0, 1] like the images (SSIM's data range is 1).
    """

    def __init__(self, in_channels: int, encoder: tuple[tuple[int, int, int], ...], *, code_channels: int,
                 code_kernel: int, negative_slope: float = 0.0) -> None:
        super().__init__()
        self.config = dict(in_channels=in_channels, encoder=encoder, code_channels=code_channels,
                           code_kernel=code_kernel, negative_slope=negative_slope)
        activation = nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()
        widths = [in_channels] + [out for out, _, _ in encoder]
        encoding: list[nn.Module] = []
        decoding: list[nn.Module] = []
        for (n_in, (n_out, kernel, stride)) in zip(widths, encoder):
            encoding += [nn.Conv2d(n_in, n_out, kernel, stride, padding=1), activation]
            # decoder layers are built in reverse: the mirror of this layer comes last
            decoding = [nn.ConvTranspose2d(n_out, n_in, kernel, stride, padding=1), activation] + decoding
        encoding.append(nn.Conv2d(widths[-1], code_channels, code_kernel))
        decoding = [nn.ConvTranspose2d(code_channels, widths[-1], code_kernel), activation] + decoding
        decoding[-1] = nn.Sigmoid()  # the output layer: [0, 1] instead of a hidden activation
        self.encoder = nn.Sequential(*encoding)
        self.decoder = nn.Sequential(*decoding)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                _he_initialise(layer, negative_slope)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``images`` (B, C, H, W) in [0, 1]; returns the same shape."""
        return self.decoder(self.encoder(images))


def _he_initialise(layer: nn.Conv2d | nn.ConvTranspose2d, negative_slope: float) -> None:
    """He et al. (2015) initialisation: each layer keeps the variance of the signal it passes on.

    PyTorch's default draws weights of variance ``1 / (3 fan_in)``, which shrinks the signal about
    sixfold per layer behind a LeakyReLU. Through the 20 layers of the Bergmann network the
    reconstruction then no longer depends on the input at all (its spread over different inputs
    was 6e-10 on synthetic wood), and SSIM training sat on that flat output for 30,000 views before
    it learnt anything; with this initialisation it leaves it within the first 2,000.
    """
    kernel_area = layer.kernel_size[0] * layer.kernel_size[1]
    # An output pixel of a transposed convolution sums only kernel_area / stride**2 taps per channel.
    taps = kernel_area / (layer.stride[0] * layer.stride[1]) if isinstance(layer, nn.ConvTranspose2d) else kernel_area
    fan_in = layer.in_channels * taps
    nn.init.normal_(layer.weight, std=math.sqrt(2.0 / ((1.0 + negative_slope ** 2) * fan_in)))
    nn.init.zeros_(layer.bias)


def bergmann_network(in_channels: int, side: int, *, latent_dim: int = 100) -> MirroredAutoencoder:
    """The autoencoder of Bergmann et al. (2019) for square inputs of ``side`` pixels.

    Parameters
    ----------
    in_channels : int
        1 (SSIM, grayscale) or 3 (L2, RGB).
    side : int
        Input side: 128 is the paper's texture patch; every doubling adds one more
        Conv32 k4s2 stage in front (and its mirror at the end), so 256 is the object variant.
        Sides below 128 (quick tests) keep the layers and shrink the bottleneck kernel to ``side / 16``.
    latent_dim : int, default=100, keyword-only
        Size of the latent code (the paper uses 100 on MVTec AD).

    Raises
    ------
    ValueError
        If ``side`` is not ``128 * 2**k`` or a multiple of 16 below 128.

    Examples
    --------
    >>> network = bergmann_network(1, 256)
    >>> tuple(network.encoder(torch.zeros(2, 1, 256, 256)).shape)
    (2, 100, 1, 1)
    """
    reduced, n_extra = side, 0
    while reduced > BERGMANN_SIDE and reduced % 2 == 0:
        reduced, n_extra = reduced // 2, n_extra + 1
    if reduced > BERGMANN_SIDE or reduced % 16 != 0:
        raise ValueError(f"the Bergmann autoencoder needs a side of 128 * 2**k (128, 256, 512) or a multiple "
                         f"of 16 below 128, got {side}; load images at 256 px or pass resolution=128")
    encoder = ((32, 4, 2),) * n_extra + BERGMANN_ENCODER
    return MirroredAutoencoder(in_channels, encoder, code_channels=latent_dim, code_kernel=reduced // 16,
                               negative_slope=0.2)


def tutorial_network(in_channels: int, side: int) -> MirroredAutoencoder:
    """The course deck's first CAE: Conv 16/32/64/128 k4s2p1, Conv256 k4, ReLU, mirrored, sigmoid.

    Built for 224 x 224 inputs, where the code is 256 x 11 x 11 (31,000 numbers, a tenth of the
    input): a wide bottleneck, but the four plain stride-2 stages lose fine detail.

    Raises
    ------
    ValueError
        If ``side`` is not a multiple of 16 of at least 64.
    """
    if side % 16 != 0 or side < 64:
        raise ValueError(f"the tutorial autoencoder needs a side that is a multiple of 16 and at least 64, got {side}")
    return MirroredAutoencoder(in_channels, TUTORIAL_ENCODER, code_channels=TUTORIAL_CODE_CHANNELS,
                               code_kernel=4)


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


# ------------------------------------------------------------------------------- sliding window
def window_starts(length: int, patch_size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``patch_size`` every ``stride`` pixels that cover ``length``.

    A last window flush with the far edge is added when the stride does not land there, so the
    border is covered too (e.g. 0, 30, ..., 120, 128 for 256 px, patch 128, stride 30).
    """
    if patch_size > length:
        raise ValueError(f"patch_size {patch_size} is larger than the image side {length}")
    starts = list(range(0, length - patch_size + 1, stride))
    if starts[-1] != length - patch_size:
        starts.append(length - patch_size)
    return starts


def reconstruct_patchwise(network: nn.Module, images: torch.Tensor, *, patch_size: int, stride: int,
                          batch_size: int = 64) -> torch.Tensor:
    """Reconstruct images larger than the network's input by a sliding window, averaging overlaps.

    Parameters
    ----------
    network : callable
        Maps (B, C, patch_size, patch_size) to the same shape.
    images : torch.Tensor of shape (N, C, H, W)
    patch_size, stride : int, keyword-only
        Window side and step (Bergmann et al. 2019: 128 and 30); see :func:`window_starts`.
    batch_size : int, keyword-only
        Windows per network call.

    Returns
    -------
    torch.Tensor of shape (N, C, H, W), dtype and device of ``images``
        Every pixel is the mean of all window reconstructions that cover it.

    Notes
    -----
    Sums are accumulated in float64: a float32 value added k times is exact in float64 and
    dividing by k gives it back, so an identity network returns ``images`` bit for bit.
    """
    n_images, _, height, width = images.shape
    windows = [(i, top, left) for i in range(n_images) for top in window_starts(height, patch_size, stride)
               for left in window_starts(width, patch_size, stride)]
    total = torch.zeros(images.shape, dtype=torch.float64, device=images.device)
    count = torch.zeros((n_images, 1, height, width), dtype=torch.float64, device=images.device)
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        patches = torch.stack([images[i, :, top:top + patch_size, left:left + patch_size] for i, top, left in chunk])
        for (i, top, left), patch in zip(chunk, network(patches)):
            total[i, :, top:top + patch_size, left:left + patch_size] += patch
            count[i, :, top:top + patch_size, left:left + patch_size] += 1
    return (total / count).to(images.dtype)


# ------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Augmentation:
    """Random geometric changes that keep a normal image normal.

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


_ANY_POSE = Augmentation(rotation=180.0, hflip=True, vflip=True)
#: Legal augmentations per MVTec AD category. Bergmann et al. (CVPR 2019, Sec. 4.1) augment textures
#: by random rotated crops and objects by translation, rotation and mirroring "where applicable",
#: without listing them; this table is our reading of Table 1's defect types. Never mirror where a
#: mirror image is itself a defect or changes printed text (metal_nut has a "flip" defect; capsule
#: and pill carry imprints; cable's wire order is a "cable_swap" defect), never rotate where pose is
#: fixed or is itself a defect (transistor "misplaced"; wood grain always runs vertically).
AUGMENTATIONS: dict[str, Augmentation] = {
    "carpet": _ANY_POSE,
    "grid": _ANY_POSE,
    "leather": _ANY_POSE,
    "tile": _ANY_POSE,
    "wood": Augmentation(hflip=True, vflip=True),
    "bottle": Augmentation(rotation=180.0, hflip=True, vflip=True, translation=0.05),
    "cable": Augmentation(translation=0.05),
    "capsule": Augmentation(translation=0.05),
    "hazelnut": Augmentation(rotation=180.0, hflip=True, vflip=True, translation=0.05),
    "metal_nut": Augmentation(rotation=180.0, translation=0.05),
    "pill": Augmentation(translation=0.05),
    "screw": Augmentation(rotation=180.0, translation=0.05),
    "toothbrush": Augmentation(hflip=True, translation=0.05),
    "transistor": Augmentation(),
    "zipper": Augmentation(hflip=True, vflip=True, translation=0.05),
}


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
    resolution : int or None, default=None
        Side the network works at: images are resized to it (bilinear, antialiased) and maps
        resized back to the input size. None keeps the input size. 128 makes a CPU run ~4x cheaper.
    latent_dim : int, default=100
        Latent code size of the Bergmann network (ignored by the tutorial network).
    n_patches : int, default=2000
        Augmented training views drawn afresh in every epoch.
    epochs, batch_size : int, default=30, 32
        Passes over ``n_patches`` views, and views per optimiser step.
    learning_rate : float, default=2e-4
        Adam's step size (the paper's).
    augmentation : str, Augmentation or None, default=None
        A category name looks up :data:`AUGMENTATIONS` (e.g. ``"bottle"``); None draws plain crops
        (or whole images) only.
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector`; ``seed`` fixes initial
        weights, augmentations and batch order.

    Attributes
    ----------
    network_ : MirroredAutoencoder
        The trained network, in eval mode on ``device_``.
    side_ : int
        Side of the images the network was trained on (after ``resolution``).
    history_ : dict
        ``"loss"``: mean training loss per epoch.

    Notes
    -----
    The defaults are :data:`CPU_SCHEDULE` (60,000 views); the paper's GPU schedule is
    :data:`PAPER_SCHEDULE` (2,000,000 views). Unlike the paper, which augments a fixed set of
    10,000 views once, we draw new views every epoch: more variety for the same compute.
    :func:`recommended_settings` gives the course's settings per category kind.
    The image score is the maximum of the map, as :func:`mvtec_tutorial.metrics.image_scores`.

    Examples
    --------
    >>> normal = torch.rand(8, 3, 64, 64) * 0.1 + 0.45
    >>> model = ConvAutoencoder(loss="l2", epochs=1, n_patches=8, batch_size=8).fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.dtype
    ((2, 64, 64), dtype('float32'))
    """

    def __init__(self, *, loss: str = "ssim", architecture: str = "bergmann", patch_size: int | None = None,
                 stride: int = 30, resolution: int | None = None, latent_dim: int = 100,
                 n_patches: int = CPU_SCHEDULE["n_patches"], epochs: int = CPU_SCHEDULE["epochs"],
                 batch_size: int = CPU_SCHEDULE["batch_size"], learning_rate: float = CPU_SCHEDULE["learning_rate"],
                 augmentation: str | Augmentation | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.loss = loss
        self.architecture = architecture
        self.patch_size = patch_size
        self.stride = stride
        self.resolution = resolution
        self.latent_dim = latent_dim
        self.n_patches = n_patches
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.augmentation = augmentation

    def _check_parameters(self) -> Augmentation:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {LOSSES}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; use one of {ARCHITECTURES}")
        for name in ("stride", "n_patches", "batch_size", "latent_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if isinstance(self.augmentation, str):
            if self.augmentation not in AUGMENTATIONS:
                raise ValueError(f"no augmentation recorded for {self.augmentation!r}; known: "
                                 f"{', '.join(AUGMENTATIONS)}; pass an Augmentation(...) or None")
            return AUGMENTATIONS[self.augmentation]
        return self.augmentation or Augmentation()

    def _network_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the network sees them: grayscale for SSIM, resized to ``resolution``."""
        if self.loss == "ssim":
            images = to_grayscale(images)
        if self.resolution is not None and images.shape[-1] != self.resolution:
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="bilinear",
                                   antialias=True, align_corners=False).clamp(0, 1)
        return images

    def _fit(self, images: torch.Tensor) -> None:
        augmentation = self._check_parameters()
        if images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square, got {tuple(images.shape[-2:])}; load them with MVTecAD")
        inputs = self._network_inputs(images)
        side = inputs.shape[-1]
        view = self.patch_size or side
        if view > side:
            raise ValueError(f"patch_size {self.patch_size} exceeds the image side {side}; use a smaller patch")
        device = self.device_
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            if self.architecture == "bergmann":
                network = bergmann_network(inputs.shape[1], view, latent_dim=self.latent_dim)
            else:
                network = tutorial_network(inputs.shape[1], view)
        batches = _RandomViewBatches(inputs.to(device), n_views=self.n_patches, batch_size=self.batch_size,
                                     size=view, augmentation=augmentation,
                                     generator=torch.Generator().manual_seed(self.seed))
        self.history_ = training.train(
            network, batches, lambda model, batch: reconstruction_loss(model(batch), batch, loss=self.loss),
            epochs=self.epochs, learning_rate=self.learning_rate, seed=self.seed, device=device,
            desc=f"training {self.architecture} AE ({self.loss})", progress=self.progress_)
        self.network_ = network
        self.side_ = side

    def _reconstruct_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.patch_size is None:
            if inputs.shape[-2:] != (self.side_, self.side_):
                raise ValueError(f"the network works on {self.side_} x {self.side_} px but got "
                                 f"{tuple(inputs.shape[-2:])}; load test images at the training size or set resolution")
            return self.network_(inputs)
        return reconstruct_patchwise(self.network_, inputs, patch_size=self.patch_size, stride=self.stride,
                                     batch_size=self.batch_size)

    def reconstruct(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return the network's inputs and their reconstructions, for looking at.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]

        Returns
        -------
        inputs, reconstructions : ndarray of shape (N, C, R, R), float32 in [0, 1]
            ``C`` is 1 for SSIM (grayscale) and 3 for L2; ``R`` is ``resolution`` (or the input side).
        """
        self._check_fitted()
        images = as_images(images, progress=self.progress_)
        inputs, reconstructions = [], []
        self.network_.eval()
        with torch.inference_mode():
            for batch in images.split(self.batch_size):
                batch = self._network_inputs(batch.to(self.device_))
                inputs.append(batch.cpu())
                reconstructions.append(self._reconstruct_inputs(batch).cpu())
        return torch.cat(inputs).numpy(), torch.cat(reconstructions).numpy()

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = []
        self.network_.eval()
        with torch.inference_mode():
            for batch in tqdm(images.split(self.batch_size), desc="reconstructing", leave=False,
                              disable=not self.progress_):
                inputs = self._network_inputs(batch.to(self.device_))
                batch_maps = anomaly_maps(inputs, self._reconstruct_inputs(inputs), loss=self.loss)
                if batch_maps.shape[-2:] != batch.shape[-2:]:
                    batch_maps = F.interpolate(batch_maps[:, None], size=tuple(batch.shape[-2:]), mode="bilinear",
                                               align_corners=False)[:, 0]
                maps.append(batch_maps.float().cpu())
        maps = torch.cat(maps)
        return maps, maps.amax(dim=(1, 2))


def recommended_settings(kind: str, *, schedule: str = "cpu") -> dict:
    """Keyword arguments of :class:`ConvAutoencoder` the course uses for a category ``kind``.

    Parameters
    ----------
    kind : {"texture", "object"}
        :attr:`mvtec_tutorial.data.CategoryInfo.kind`.
    schedule : {"cpu", "paper", "quick"}, default="cpu", keyword-only
        "cpu": :data:`CPU_SCHEDULE`, objects at ``resolution=128`` (the paper uses 256; 128 is 4x
        cheaper and scored better on bottle within the CPU budget). "paper": the paper's GPU
        schedule (:data:`PAPER_SCHEDULE`) with objects at 256 px. "quick": a smoke test.

    Returns
    -------
    dict
        Textures are always trained on the paper's 128 px patches and scored by a stride-30
        sliding window; objects as whole images.

    Examples
    --------
    >>> recommended_settings("object")["epochs"], recommended_settings("object", schedule="paper")["epochs"]
    (15, 200)
    """
    if kind not in ("texture", "object"):
        raise ValueError(f"unknown kind {kind!r}; use 'texture' or 'object' (see data.category_info)")
    schedules = {"quick": QUICK_SCHEDULE, "cpu": CPU_SCHEDULE, "paper": PAPER_SCHEDULE}
    if schedule not in schedules:
        raise ValueError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")
    object_side = 256 if schedule == "paper" else 128
    layout = dict(patch_size=128, stride=30) if kind == "texture" else dict(resolution=object_side)
    return {**layout, **schedules[schedule]}
