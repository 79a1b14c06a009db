"""The networks of AnoGAN and f-AnoGAN, a DCGAN generator and discriminator and an encoder, and
how the DCGAN is trained (:func:`train_dcgan`, through :func:`mvtec_tutorial.training.train_adversarial`).

All three work on square images of side ``work_size``, a power of two (the network's internal
side, not the side the dataset is loaded at: :class:`~mvtec_tutorial.models.anogan.AnoGAN`
resizes or tiles its inputs to it). Feature maps double or halve their side with every 4 x 4
stride-2 convolution between 4 x 4 and ``work_size / 2`` (Radford et al., ICLR 2016).

The discriminator is stabilised with spectral normalisation (Miyato et al., ICLR 2018): every
layer's weight is divided by its largest singular value, estimated by one power iteration per
training step. That bounds each layer's Lipschitz constant, where WGAN-GP's gradient penalty
needs a second backward pass through the discriminator at every step, which roughly doubles
its cost on a CPU.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from mvtec_tutorial import training

#: DCGAN settings of the MVTec AD paper (Bergmann et al., CVPR 2019, Sec. 4.1): latent size and
#: generated image side.
LATENT_DIM = 64
WORK_SIZE = 128
#: Widest layer, as a multiple of ``base_channels`` (DCGAN's 64 -> 512 channels).
MAX_WIDTH = 8


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside a forked state, for the layers' random initialisation.

    The caller's random state is the same afterwards, so building a network never changes what
    the caller draws next.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_work_size(work_size: int) -> None:
    """Raise ValueError unless ``work_size`` is a power of two >= 8 (the networks' only sides)."""
    if work_size < 8 or work_size & (work_size - 1):
        raise ValueError(f"work_size must be a power of two >= 8, got {work_size}")


def _widths(work_size: int, base_channels: int) -> list[tuple[int, int]]:
    """``(resolution, channels)`` of the feature maps from 4x4 up to ``work_size / 2``."""
    resolutions = [4 * 2 ** i for i in range(int(math.log2(work_size)) - 2)]
    return [(r, base_channels * min(work_size // (2 * r), MAX_WIDTH)) for r in resolutions]


def _down_stack(work_size: int, base_channels: int, *, spectral: bool) -> nn.Sequential:
    """Strided 4x4 convolutions from (3, work_size, work_size) down to (C, 4, 4)."""
    wrap = _spectral_norm if spectral else (lambda layer: layer)
    layers, in_channels = [], 3
    for _, channels in reversed(_widths(work_size, base_channels)):
        layers += [wrap(nn.Conv2d(in_channels, channels, 4, 2, 1)), nn.LeakyReLU(0.2)]
        in_channels = channels
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """DCGAN generator: latent codes (N, latent_dim) -> images (N, 3, work_size, work_size) in [0, 1].

    Transposed 4x4 convolutions double the resolution from 4x4, each followed by batch norm and
    ReLU (Radford et al. 2016). The last layer is a sigmoid, i.e. DCGAN's tanh rescaled to [0, 1]
    (``sigmoid(2a) = (tanh(a) + 1) / 2``), so outputs compare directly with the images.

    Examples
    --------
    >>> Generator(latent_dim=8, work_size=16, base_channels=4)(torch.randn(2, 8)).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, *, latent_dim: int = LATENT_DIM, work_size: int = WORK_SIZE, base_channels: int = 32) -> None:
        super().__init__()
        check_work_size(work_size)
        widths = [channels for _, channels in _widths(work_size, base_channels)]
        layers = [nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for in_channels, channels in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(in_channels, channels, 4, 2, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.latent_dim, self.work_size = latent_dim, work_size
        self.config = dict(latent_dim=latent_dim, work_size=work_size, base_channels=base_channels)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """DCGAN discriminator: images (N, 3, work_size, work_size) -> ``(logits (N,), features (N, C, 4, 4))``.

    The features of the last convolution are what AnoGAN's feature-matching loss compares
    (Schlegl et al. 2017, Eq. 4). With ``spectral_norm=True`` every convolution is spectrally
    normalised, the stabiliser this course uses; ``False`` gives the plain DCGAN.
    """

    def __init__(self, *, work_size: int = WORK_SIZE, base_channels: int = 32, spectral_norm: bool = True) -> None:
        super().__init__()
        check_work_size(work_size)
        self.config = dict(work_size=work_size, base_channels=base_channels, spectral_norm=spectral_norm)
        self.features = _down_stack(work_size, base_channels, spectral=spectral_norm)
        head = nn.Conv2d(_widths(work_size, base_channels)[0][1], 1, 4, 1, 0)
        self.head = _spectral_norm(head) if spectral_norm else head

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(2 * images - 1)  # centred inputs, as DCGAN's [-1, 1] images
        return self.head(features).flatten(), features


class Encoder(nn.Module):
    """f-AnoGAN encoder: images (N, 3, work_size, work_size) in [0, 1] -> latent codes (N, latent_dim).

    The discriminator's convolution stack (without spectral norm) and a linear layer.
    """

    def __init__(self, *, latent_dim: int = LATENT_DIM, work_size: int = WORK_SIZE, base_channels: int = 32) -> None:
        super().__init__()
        check_work_size(work_size)
        self.config = dict(latent_dim=latent_dim, work_size=work_size, base_channels=base_channels)
        self.features = _down_stack(work_size, base_channels, spectral=False)
        self.head = nn.Linear(_widths(work_size, base_channels)[0][1] * 16, latent_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2 * images - 1).flatten(1))


def residual_losses(discriminator: Discriminator, images: torch.Tensor, reconstructions: torch.Tensor, *,
                    residual_weight: float, feature_weight: float, power: int,
                    image_features: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image ``residual_weight * mean|x - G|^p + feature_weight * mean|f(x) - f(G)|^p``, shape (N,).

    ``f`` is the discriminator's last feature map. AnoGAN uses ``p = 1`` with weights
    ``(1 - lambda, lambda)`` (Schlegl et al. 2017, Eqs. 3-5); f-AnoGAN uses ``p = 2`` with weights
    ``(1, kappa)`` (Schlegl et al. 2019, Eqs. 7-8). Means instead of the papers' sums keep the
    weights independent of the image size. ``image_features`` may pass a precomputed ``f(x)``.
    """
    if image_features is None:
        image_features = discriminator(images)[1]
    residual = (images - reconstructions).abs().pow(power).flatten(1).mean(1)
    features = (image_features - discriminator(reconstructions)[1]).abs().pow(power).flatten(1).mean(1)
    return residual_weight * residual + feature_weight * features


def random_crops(images: torch.Tensor, size: int, *, flips: bool, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (N, 3, S, S), S >= size: one random ``size`` x ``size`` crop per image.

    For objects the images are padded by the allowed shift, so a crop is a small translation; for
    textures they are the zoomed textures, so a crop is a random patch. ``flips`` also flips each
    crop horizontally and vertically with probability 1/2 each (only where a flipped normal image
    is still normal). All randomness comes from ``generator`` (a CPU generator).
    """
    n, slack = len(images), images.shape[-1] - size
    offsets = torch.randint(0, slack + 1, (n, 2), generator=generator).tolist()
    crops = torch.stack([image[:, y:y + size, x:x + size] for image, (y, x) in zip(images, offsets)])
    if flips:
        flip = torch.rand(n, 2, generator=generator).to(crops.device) < 0.5
        crops = torch.where(flip[:, 0, None, None, None], crops.flip(-1), crops)
        crops = torch.where(flip[:, 1, None, None, None], crops.flip(-2), crops)
    return crops


class CropBatches:
    """Batches of :func:`random_crops` of a pool of images, a new random order and new crops per pass.

    Each pass (epoch) shows every image once, as one random crop, in batches of ``batch_size``;
    the last incomplete batch is dropped so batch norm never sees a tiny one. All randomness
    comes from ``generator``: first the order, then each batch's crops as it is drawn.

    Parameters
    ----------
    pool : torch.Tensor of shape (N, 3, S, S), float32 in [0, 1], N >= 2
    size, flips, generator
        As :func:`random_crops`.
    batch_size : int
        Capped at N.
    """

    def __init__(self, pool: torch.Tensor, size: int, *, batch_size: int, flips: bool,
                 generator: torch.Generator) -> None:
        self.pool, self.size, self.flips, self.generator = pool, size, flips, generator
        self.batch_size = min(batch_size, len(pool))

    def __len__(self) -> int:
        return len(self.pool) // self.batch_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.pool), generator=self.generator)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield random_crops(self.pool[order[start:start + self.batch_size]], self.size, flips=self.flips,
                               generator=self.generator)


def train_dcgan(generator: Generator, discriminator: Discriminator, pool: torch.Tensor, *, epochs: int,
                batch_size: int, learning_rate: float, flips: bool, seed: int, device: torch.device,
                n_samples: int = 16, sample_every: int = 5, progress: bool = True) -> dict:
    """Train a DCGAN in place on normal images with :func:`mvtec_tutorial.training.train_adversarial`.

    Parameters
    ----------
    generator, discriminator : Generator, Discriminator
        Moved to ``device``; left in ``eval()`` mode.
    pool : torch.Tensor of shape (N, 3, S, S), float32 in [0, 1], N >= 2
        Training images. Each epoch draws one :func:`random_crops` crop of side
        ``generator.work_size`` from each (:class:`CropBatches`).
    epochs, batch_size, learning_rate, flips, seed
        Both networks use Adam with DCGAN's betas; ``seed`` seeds one generator that draws, in
        this order, the fixed sample codes, then per epoch the order and per batch the crops
        and the latent codes.
    n_samples, sample_every : int
        Before training, every ``sample_every`` epochs and after the last one the generator draws
        the same ``n_samples`` fixed codes, so the grids show progress and mode collapse.

    Returns
    -------
    dict
        ``"d_loss"``, ``"g_loss"``: mean losses per epoch; ``"d_real"``: mean probability the
        discriminator gives real images, per epoch; ``"sample_epochs"``: list of int;
        ``"sample_grids"``: list of uint8 ndarrays of shape (n_samples, 3, work_size, work_size).

    Raises
    ------
    FloatingPointError
        If a loss becomes NaN or infinite (lower the learning rate).
    """
    rng = torch.Generator().manual_seed(seed)
    fixed_codes = torch.randn(n_samples, generator.latent_dim, generator=rng)
    samples: dict[str, list] = {"sample_epochs": [], "sample_grids": []}

    def keep_samples(epoch: int, history: dict | None = None) -> None:
        if epoch % sample_every and epoch != epochs:
            return
        generator.eval()
        with torch.inference_mode():
            grid = generator(fixed_codes.to(device))
        samples["sample_grids"].append((grid * 255).round().byte().cpu().numpy())
        samples["sample_epochs"].append(epoch)

    generator.to(device)
    keep_samples(0)
    loader = CropBatches(pool, generator.work_size, batch_size=batch_size, flips=flips, generator=rng)
    history = training.train_adversarial(
        generator, discriminator, loader, lambda n: torch.randn(n, generator.latent_dim, generator=rng),
        epochs=epochs, learning_rate=learning_rate, seed=seed, device=device, desc="DCGAN epochs",
        progress=progress, end_of_epoch=keep_samples)
    return {**history, **samples}


def sample_diversity(images: torch.Tensor | np.ndarray) -> float:
    """Mean root-mean-square difference over all pairs of images: how unlike each other they are.

    A mode-collapse check for a generator: compare the diversity of a grid of its samples with
    that of as many training images (augmented as the GAN sees them). Far below it, the
    generator draws nearly the same image for every code.

    Parameters
    ----------
    images : tensor or ndarray of shape (N, C, H, W), N >= 2
        Intensities in [0, 1] (divide uint8 sample grids by 255 first).

    Returns
    -------
    float
        ``mean over pairs i != j of sqrt(mean((x_i - x_j)^2))``, in intensity units; 0 when all
        images are equal.

    Examples
    --------
    >>> round(sample_diversity(np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2)), np.ones((1, 2, 2))])), 3)
    0.667
    """
    flat = torch.as_tensor(np.asarray(images, dtype=np.float32)).flatten(1)
    if len(flat) < 2:
        raise ValueError(f"sample_diversity needs at least 2 images, got {len(flat)}")
    distances = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    return float(distances.sum() / (len(flat) * (len(flat) - 1)))
