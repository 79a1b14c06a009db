"""PaDiM (Defard et al., ICPR 2020): one Gaussian per patch position over pretrained features.

A frozen ImageNet network turns every image into a grid of patch embeddings (several layers,
upsampled to the finest grid and concatenated, then a random subset of the channels). Fitting
estimates, at every grid position, the mean and covariance of the normal embeddings; predicting
scores each patch by its Mahalanobis distance to the Gaussian of its position.

The feature helpers it shares with :mod:`mvtec_tutorial.models.patchcore`
(:func:`~mvtec_tutorial.backbones.align_and_concatenate`, :func:`~mvtec_tutorial.backbones.to_anomaly_maps`)
live in :mod:`mvtec_tutorial.backbones`.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from mvtec_tutorial.backbones import (SMOOTHING_SIGMA, FeatureExtractor, align_and_concatenate,
                                      local_average, to_anomaly_maps)
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.metrics import check_top_k_fraction
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds

#: PaDiM's layers: the first three stages (strides 4, 8, 16) of ResNet-18 (Defard et al., Sec. 4.1),
#: and the Lite0 blocks that end the stages of the same strides. Kept by the selection study
#: (results/selection_study: 6 categories x 3 seeds; the rule is the best mean over categories of
#: the mean of image AUROC, pixel AUROC and AU-PRO): with the top-1 % image score these layers at
#: p = 1 scored 0.981, ahead of block4 + block7 (0.980), block3 + block7 (0.979) and every p = 3
#: variant (at most 0.979: the 3 x 3 average blurs the maps, AU-PRO falls by about 0.005 to 0.015).
PADIM_LAYERS = {"efficientnet_lite0": ("block2", "block4", "block10"),
                "resnet18": ("layer1", "layer2", "layer3")}
#: Embedding size kept after the random channel choice: d = 100 for ResNet-18 (Sec. 4.1).
N_FEATURES = 100
#: Neighbourhood size p: each layer's features are averaged over p x p positions before the
#: Gaussians are fitted. 1 (the paper's plain embedding) won the selection study; p = 3 lifts
#: transistor's image AUROC (0.973 to 0.988 with the top-1 % score) but costs localisation elsewhere.
NEIGHBORHOOD_SIZE = 1
#: Image score: None takes the map's maximum (the paper's); a fraction f takes the mean of the
#: f * H * W highest map pixels, which one hot pixel moves less. The selection study compared them on
#: the same maps (results/selection_study/image_scores.csv, 6 categories x 3 seeds): the maximum
#: had a mean image AUROC over categories of 0.989 (transistor 0.944), the top 5 % 0.996 (transistor
#: 0.981), as good as the top 10 % (0.996, transistor 0.977) and the score PatchCore chose too.
TOP_K_FRACTION = 0.05
#: Covariance regulariser epsilon * I, epsilon = 0.01, which makes it invertible (Sec. 3.2).
COVARIANCE_REGULARIZATION = 0.01
#: Grid positions per chunk when fitting Gaussians and images per chunk when scoring: bounds the
#: work arrays to about 100 MB at d = 100 and 167 training images.
_POSITIONS_PER_CHUNK = 512
_IMAGES_PER_CHUNK = 16


def fit_gaussians(embeddings: torch.Tensor, *, regularization: float = COVARIANCE_REGULARIZATION
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and inverse covariance of the embeddings at every grid position.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (N, d, P)
        ``d``-dimensional embeddings of ``N`` normal images at ``P`` positions; N >= 2.
    regularization : float, default=0.01, keyword-only
        Added to the covariance diagonal so it is invertible when N is small.

    Returns
    -------
    mean : torch.Tensor of shape (P, d), float32
    inv_covariance : torch.Tensor of shape (P, d, d), float32
        Inverse of the unbiased sample covariance (divided by N - 1) plus ``regularization * I``.

    Notes
    -----
    Defard et al., Sec. 3.2, eq. 1, computed a chunk of positions at a time. The products are
    summed in float32 after subtracting the mean (centring first avoids the cancellation that
    makes ``E[x^2] - E[x]^2`` inaccurate); the inverse is taken in float64, where the
    regularised covariance is safely invertible.
    """
    n_images, n_features, n_positions = embeddings.shape
    if n_images < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {n_images}; fit on more normal images")
    mean = torch.empty(n_positions, n_features, dtype=torch.float32, device=embeddings.device)
    inv_covariance = torch.empty(n_positions, n_features, n_features, dtype=torch.float32, device=embeddings.device)
    identity = torch.eye(n_features, dtype=torch.float64, device=embeddings.device)
    for start in range(0, n_positions, _POSITIONS_PER_CHUNK):
        # contiguous: batched matrix products on a permuted view are two orders of magnitude slower
        chunk = embeddings[:, :, start:start + _POSITIONS_PER_CHUNK].permute(2, 0, 1).contiguous()  # (p, N, d)
        chunk_mean = chunk.mean(dim=1, keepdim=True)
        centred = chunk - chunk_mean
        covariance = (centred.transpose(1, 2) @ centred / (n_images - 1)).double() + regularization * identity
        mean[start:start + len(chunk)] = chunk_mean[:, 0]
        inv_covariance[start:start + len(chunk)] = torch.linalg.inv(covariance)
    return mean, inv_covariance


def mahalanobis(embeddings: torch.Tensor, mean: torch.Tensor, inv_covariance: torch.Tensor) -> torch.Tensor:
    """Mahalanobis distance of each embedding to the Gaussian of its position.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (N, d, P)
    mean : torch.Tensor of shape (P, d)
    inv_covariance : torch.Tensor of shape (P, d, d)
        As returned by :func:`fit_gaussians`.

    Returns
    -------
    torch.Tensor of shape (N, P), float32
        ``sqrt((x - mean)^T inv_covariance (x - mean))`` per image and position (Sec. 3.3, eq. 2).

    Examples
    --------
    >>> x = torch.tensor([[[3.0], [4.0]]])                      # one image, d = 2, one position
    >>> mahalanobis(x, torch.zeros(1, 2), torch.eye(2)[None])   # Euclidean when the covariance is I
    tensor([[5.]])
    """
    distances = []
    for start in range(0, len(embeddings), _IMAGES_PER_CHUNK):
        delta = (embeddings[start:start + _IMAGES_PER_CHUNK].permute(2, 0, 1) - mean[:, None]).contiguous()  # (P, n, d)
        squared = (torch.bmm(delta, inv_covariance) * delta).sum(dim=-1)  # (P, n)
        distances.append(squared.clamp_min(0).sqrt().T)  # rounding can push 0 slightly below
    return torch.cat(distances)


class PaDiM(AnomalyDetector):
    """Patch Distribution Modeling: a multivariate Gaussian per patch position.

    Parameters
    ----------
    backbone : {'efficientnet_lite0', 'resnet18'}, default='efficientnet_lite0'
        Frozen ImageNet network (:class:`mvtec_tutorial.backbones.FeatureExtractor`). The paper
        used ResNet-18 (and Wide-ResNet-50); Lite0 is the one whose weights work offline.
    layers : sequence of str, optional
        Layers whose maps are concatenated; default :data:`PADIM_LAYERS` (strides 4, 8, 16).
    n_features : int, default=100
        Channels ``d`` kept, drawn at random without replacement from all concatenated channels.
    neighborhood_size : int, default=1
        ``p``: each layer's features are averaged over their p x p neighbourhood
        (:func:`mvtec_tutorial.backbones.local_average`) before upsampling; odd; 1 disables it.
    top_k_fraction : float in (0, 1] or None, default=0.05
        Image score (:func:`mvtec_tutorial.metrics.image_scores`): None the map's maximum
        (the paper's), f the mean of its top f pixels (the selection study's choice, :data:`TOP_K_FRACTION`).
    regularization : float, default=0.01
        ``epsilon`` in ``covariance + epsilon * I``.
    smoothing_sigma : float, default=4.0
        Gaussian smoothing of the upsampled map in pixels; 0 disables it.
    batch_size : int, default=32
        Images per forward pass of the backbone; results do not depend on it.
    allow_offline_fallback : bool, default=False
        For 'resnet18' without cached weights, use Lite0 layers of equal stride (printed).
    seed : int, default=0
        Seeds the channel choice (the method's own generator).
    device : str or torch.device, optional
        None means CUDA when available, else CPU.

    Attributes
    ----------
    extractor_ : FeatureExtractor
    channel_indices_ : torch.Tensor of shape (n_features,), int64
        Sorted indices of the kept channels among all concatenated channels.
    grid_size_ : tuple of int
        ``(h, w)``: the finest feature grid, P = h * w positions.
    mean_ : torch.Tensor of shape (P, n_features), float32
    inv_covariance_ : torch.Tensor of shape (P, n_features, n_features), float32

    Notes
    -----
    Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
    Localization", ICPR 2020. The map is the Mahalanobis distance (eq. 2) upsampled to the input
    and smoothed; the image score is the mean of its top 5 % pixels (``top_k_fraction``; the paper
    takes the maximum, ``top_k_fraction=None``).

    Memory: the model stores ``P * d * d`` float32 numbers, e.g. 64 * 64 positions (stride 4 on
    256-pixel images) * 100 * 100 * 4 bytes = 164 MB; fitting holds all training embeddings,
    ``N * d * P`` float32 (274 MB for 167 images), plus chunked float64 work arrays. Halve the grid
    side (drop the stride-4 layer) to divide both by four.

    Examples
    --------
    >>> normal = torch.rand(4, 3, 64, 64) * 0.1 + 0.45
    >>> model = PaDiM(device="cpu").fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.shape
    ((2, 64, 64), (2,))
    """

    after_2019 = True  # Defard et al. 2020
    benchmark_names = {"padim": {}}
    schedules = same_for_kinds(quick={}, cpu={}, paper={})  # no training: the defaults everywhere

    def __init__(self, *, backbone: str = "efficientnet_lite0", layers: Iterable[str] | None = None,
                 n_features: int = N_FEATURES, neighborhood_size: int = NEIGHBORHOOD_SIZE,
                 top_k_fraction: float | None = TOP_K_FRACTION, regularization: float = COVARIANCE_REGULARIZATION,
                 smoothing_sigma: float = SMOOTHING_SIGMA, batch_size: int = 32,
                 allow_offline_fallback: bool = False, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.backbone = backbone
        self.layers = layers
        self.n_features = n_features
        self.neighborhood_size = neighborhood_size
        self.top_k_fraction = top_k_fraction
        self.regularization = regularization
        self.smoothing_sigma = smoothing_sigma
        self.batch_size = batch_size
        self.allow_offline_fallback = allow_offline_fallback

    def _fit(self, images: torch.Tensor) -> None:
        if self.neighborhood_size < 1 or self.neighborhood_size % 2 == 0:
            raise ValueError(f"neighborhood_size must be a positive odd number, got {self.neighborhood_size}")
        check_top_k_fraction(self.top_k_fraction)  # refused before fitting, not at the first score
        check_scalar(self.regularization, "regularization", low=0, low_open=True,
                     hint=f"the paper adds {COVARIANCE_REGULARIZATION} x identity to every covariance so it can be "
                          "inverted; a negative value makes distances meaningless")
        check_scalar(self.n_features, "n_features", low=1, integer=True)
        check_scalar(self.smoothing_sigma, "smoothing_sigma", low=0, hint="pixels of Gaussian smoothing; 0 turns it off")
        check_scalar(self.batch_size, "batch_size", low=1, integer=True)
        layers = PADIM_LAYERS.get(self.backbone) if self.layers is None else self.layers
        self.extractor_ = FeatureExtractor(self.backbone, layers=layers, device=self.device_,
                                           allow_offline_fallback=self.allow_offline_fallback)
        n_channels = sum(self.extractor_.channels.values())
        if not 1 <= self.n_features <= n_channels:
            raise ValueError(f"n_features must be between 1 and the {n_channels} channels of layers "
                             f"{self.extractor_.layers}, got {self.n_features}")
        generator = torch.Generator().manual_seed(self.seed)
        self.channel_indices_ = torch.randperm(n_channels, generator=generator)[:self.n_features].sort().values
        with torch.inference_mode():
            embeddings = self._embed(images)
            self.grid_size_ = tuple(embeddings.shape[-2:])
            self.mean_, self.inv_covariance_ = fit_gaussians(embeddings.flatten(2),
                                                             regularization=self.regularization)

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings (N, n_features, h, w) on ``device_``.

        Channels are chosen per layer before averaging and upsampling: the same result as choosing
        them from the upsampled concatenation (both act per channel), with less memory.
        """
        features = self.extractor_.extract(images, batch_size=self.batch_size, progress=self._progress)
        kept, offset = [], 0
        for layer in self.extractor_.layers:
            n_channels = self.extractor_.channels[layer]
            in_layer = self.channel_indices_[(self.channel_indices_ >= offset)
                                             & (self.channel_indices_ < offset + n_channels)]
            kept.append(local_average(features[layer][:, in_layer - offset].to(self.device_), self.neighborhood_size))
            offset += n_channels
        return align_and_concatenate(kept)

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, None]:
        with torch.inference_mode():
            distances = mahalanobis(self._embed(images).flatten(2), self.mean_, self.inv_covariance_)
        return to_anomaly_maps(distances.reshape(len(images), *self.grid_size_), images.shape[-2:],
                               sigma=self.smoothing_sigma), None
