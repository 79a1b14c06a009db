"""FastFlow (Yu et al., 2021): a 2D normalizing flow maps normal patch features to a standard Gaussian.

A frozen ImageNet network turns an image into feature maps; at each pyramid level an invertible
network ``f`` (a stack of affine coupling blocks made of convolutions) is trained to map the normal
features ``x`` to ``z = f(x)`` distributed as a standard Gaussian. By the change of variables,

    log p(x) = log N(f(x); 0, I) + log |det df/dx|,

so training minimises the exact negative log-likelihood ``1/2 ||z||^2 - log |det J|`` of normal
features, and a patch whose ``z`` lands far out in the Gaussian's tails is unlikely: anomalous.

The coupling block is written here (:class:`AffineCoupling`), not taken from FrEIA: half the
channels pass unchanged and predict a scale and shift for the other half, which makes the inverse
and the log-determinant (the sum of the log-scales) exact and cheap.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mvtec_tutorial import training
from mvtec_tutorial.backbones import FeatureExtractor
from mvtec_tutorial.metrics import check_top_k_fraction
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds

#: Pyramid levels: anomalib's FastFlow on ResNet-18 reads layer1..layer3 (strides 4, 8, 16); on Lite0
#: the blocks that end the stages of the same strides.
FASTFLOW_LAYERS = ("block2", "block4", "block10")
#: Flow steps per level (the paper's 8 for ResNet-18-size backbones), hidden channels as a multiple of
#: the input channels (1.0 for ResNet-18) and the soft clamp of the log-scales (anomalib's 2.0).
N_STEPS, HIDDEN_RATIO, CLAMP = 8, 1.0, 2.0
#: The paper's training: Adam, learning rate 1e-3, weight decay 1e-5, batch 32, 500 epochs.
PAPER_SCHEDULE = dict(epochs=500, batch_size=32, learning_rate=1e-3)
WEIGHT_DECAY = 1e-5
#: The course's CPU schedule: the paper's optimiser, as many epochs as fit in five minutes on two CPU
#: cores (real bottle, 167 training images at 256 px: an epoch of the eight-step flows on three levels
#: took about 50 s under a load of 4; chosen by that time alone, before any test metric).
CPU_SCHEDULE = dict(epochs=5, batch_size=32, learning_rate=1e-3)
#: A smoke test for tests and the fast notebooks: numbers mean nothing.
QUICK_SCHEDULE = dict(epochs=1, batch_size=8, learning_rate=1e-3)


class AffineCoupling(nn.Module):
    """One flow step: an affine coupling of two channel halves, then a fixed channel permutation.

    With ``x = (x_a, x_b)`` split along channels (``x_a`` the first ``channels // 2``),

        (s, t) = subnet(x_a),   s = clamp * tanh(s / clamp),
        y = permute(x_a, x_b * exp(s) + t),   log |det dy/dx| = sum of s over channels and positions.

    The subnet is conv(k) -> ReLU -> conv(k), ``k`` = ``kernel_size``, with ``hidden_ratio * channels``
    channels in between (FastFlow, Yu et al., Sec. 3.3); its last convolution starts at zero, so
    every step starts as the identity (apart from the permutation).

    Parameters
    ----------
    channels : int
        At least 2.
    kernel_size : {1, 3}
    hidden_ratio : float, default=1.0
    clamp : float, default=2.0
        Bounds each log-scale to (-clamp, clamp), which keeps ``exp(s)`` from exploding.
    permutation_seed : int, default=0
        Seeds the fixed random channel permutation that follows the coupling.

    Examples
    --------
    >>> step = AffineCoupling(4, kernel_size=3)
    >>> x = torch.randn(2, 4, 5, 5)
    >>> y, log_det = step(x)
    >>> torch.allclose(step.inverse(y), x, atol=1e-6), log_det.shape
    (True, torch.Size([2]))
    """

    def __init__(self, channels: int, *, kernel_size: int, hidden_ratio: float = HIDDEN_RATIO,
                 clamp: float = CLAMP, permutation_seed: int = 0) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling needs at least 2 channels, got {channels}")
        self.config = dict(channels=channels, kernel_size=kernel_size, hidden_ratio=hidden_ratio, clamp=clamp,
                           permutation_seed=permutation_seed)
        self.split, self.clamp = channels // 2, clamp
        hidden = max(1, int(channels * hidden_ratio))
        self.subnet = nn.Sequential(
            nn.Conv2d(self.split, hidden, kernel_size, padding=kernel_size // 2), nn.ReLU(),
            nn.Conv2d(hidden, 2 * (channels - self.split), kernel_size, padding=kernel_size // 2))
        nn.init.zeros_(self.subnet[-1].weight)
        nn.init.zeros_(self.subnet[-1].bias)
        permutation = torch.randperm(channels, generator=torch.Generator().manual_seed(permutation_seed))
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _scale_and_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.subnet(x_a).chunk(2, dim=1)
        return self.clamp * torch.tanh(log_scale / self.clamp), shift

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log_det)``: x (N, C, h, w) -> y (N, C, h, w) and log |det dy/dx| (N,)."""
        x_a, x_b = x[:, :self.split], x[:, self.split:]
        log_scale, shift = self._scale_and_shift(x_a)
        y = torch.cat([x_a, x_b * torch.exp(log_scale) + shift], dim=1)
        return y[:, self.permutation], log_scale.flatten(1).sum(dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The x whose :meth:`forward` gives ``y``."""
        y = y[:, self.inverse_permutation]
        y_a, y_b = y[:, :self.split], y[:, self.split:]
        log_scale, shift = self._scale_and_shift(y_a)
        return torch.cat([y_a, (y_b - shift) * torch.exp(-log_scale)], dim=1)


class Flow(nn.Module):
    """FastFlow's 2D flow for one pyramid level: ``n_steps`` couplings, kernels alternating 3x3 and 1x1.

    Parameters
    ----------
    channels : int
    n_steps : int, default=8
    hidden_ratio, clamp : float
        As :class:`AffineCoupling`.
    seed : int, default=0
        Seeds the permutations (step ``i`` uses ``seed + i``).
    """

    def __init__(self, channels: int, *, n_steps: int = N_STEPS, hidden_ratio: float = HIDDEN_RATIO,
                 clamp: float = CLAMP, seed: int = 0) -> None:
        super().__init__()
        self.config = dict(channels=channels, n_steps=n_steps, hidden_ratio=hidden_ratio, clamp=clamp, seed=seed)
        self.steps = nn.ModuleList(
            AffineCoupling(channels, kernel_size=3 if i % 2 == 0 else 1, hidden_ratio=hidden_ratio, clamp=clamp,
                           permutation_seed=seed + i) for i in range(n_steps))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log_det)``: features (N, C, h, w) -> z (N, C, h, w) and log |det dz/dx| (N,)."""
        log_det = x.new_zeros(len(x))
        for step in self.steps:
            x, step_log_det = step(x)
            log_det = log_det + step_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for step in reversed(self.steps):
            z = step.inverse(z)
        return z


class PyramidFlow(nn.Module):
    """One :class:`Flow` per pyramid level; ``channels`` lists each level's channels."""

    def __init__(self, channels: Sequence[int], *, n_steps: int = N_STEPS, hidden_ratio: float = HIDDEN_RATIO,
                 clamp: float = CLAMP, seed: int = 0) -> None:
        super().__init__()
        self.config = dict(channels=list(channels), n_steps=n_steps, hidden_ratio=hidden_ratio, clamp=clamp,
                           seed=seed)
        self.levels = nn.ModuleList(Flow(c, n_steps=n_steps, hidden_ratio=hidden_ratio, clamp=clamp,
                                         seed=seed + 100 * level) for level, c in enumerate(channels))

    def forward(self, features: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [flow(x) for flow, x in zip(self.levels, features, strict=True)]


def normalize_features(features: torch.Tensor) -> torch.Tensor:
    """FastFlow's per-level LayerNorm over (C, h, w) of each image, without learned affine parameters."""
    return F.layer_norm(features, features.shape[1:])


def negative_log_likelihood(outputs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """FastFlow's loss: ``1/2 ||z||^2 - log |det J|`` per image, averaged over images, summed over levels.

    Parameters
    ----------
    outputs : sequence of (z of shape (N, C, h, w), log_det of shape (N,))

    Returns
    -------
    torch.Tensor, scalar
        The negative log-likelihood of the features under a standard Gaussian in z, without the
        constant ``C h w / 2 log(2 pi)`` (anomalib's FastflowLoss).
    """
    return sum((0.5 * z.pow(2).flatten(1).sum(dim=1) - log_det).mean() for z, log_det in outputs)


def anomaly_maps(outputs: Iterable[tuple[torch.Tensor, torch.Tensor]], image_size: tuple[int, int]) -> torch.Tensor:
    """FastFlow's map: minus the per-position likelihood ``exp(-1/2 mean_c z^2)``, upsampled, averaged over levels.

    Returns
    -------
    torch.Tensor of shape (N, H, W)
        In [-1, 0): -1 where ``z = 0`` (the Gaussian's centre), near 0 far out in its tails.
    """
    levels = [F.interpolate(-torch.exp(-0.5 * z.pow(2).mean(dim=1, keepdim=True)), size=tuple(image_size),
                            mode="bilinear", align_corners=False)[:, 0] for z, _ in outputs]
    return torch.stack(levels).mean(dim=0)


class FastFlow(AnomalyDetector):
    """FastFlow: the likelihood of each patch's features under a normalizing flow trained on normal ones.

    Parameters
    ----------
    layers : sequence of str, default=("block2", "block4", "block10")
        Lite0 pyramid levels (:data:`FASTFLOW_LAYERS`, strides 4, 8, 16).
    n_steps : int, default=8
        Coupling blocks per level (the paper's for ResNet-18).
    hidden_ratio : float, default=1.0
    clamp : float, default=2.0
    epochs : int, default=5
        :data:`CPU_SCHEDULE`; the paper's 500 in :data:`PAPER_SCHEDULE`.
    batch_size : int, default=32
    learning_rate : float, default=1e-3
        Adam with weight decay 1e-5, as the paper.
    top_k_fraction : float in (0, 1] or None, default=None
        Image score (:func:`mvtec_tutorial.metrics.image_scores`): None the map's maximum (anomalib's).
    seed : int, default=0
        Seeds the flows' initial weights and permutations and the batch order.
    device : str or torch.device, optional

    Attributes
    ----------
    extractor_ : FeatureExtractor
        The frozen pretrained EfficientNet-Lite0.
    flow_ : PyramidFlow
        The trained flows, in eval mode.
    history_ : dict
        ``"loss"``: the negative log-likelihood per epoch (nats per image, summed over levels).

    Notes
    -----
    Yu et al., "FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing
    Flows", arXiv 2111.07677, 2021; loss and map as anomalib's implementation. Deviations: the
    backbone is EfficientNet-Lite0 instead of ResNet-18 (the only weights available offline);
    the LayerNorm of each level has no learned affine parameters, so the frozen features are
    computed and normalised once per fit and CPU epochs only run the flows; each coupling is
    followed by a fixed random permutation but not by FrEIA's learned global affine (ActNorm) of
    anomalib's AllInOneBlock; the CPU schedule trains 5 epochs instead of 500.

    Examples
    --------
    >>> normal = torch.rand(8, 3, 64, 64) * 0.1 + 0.45
    >>> model = FastFlow(epochs=1, batch_size=4, device="cpu").fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.shape
    ((2, 64, 64), (2,))
    """

    benchmark_names = {"fastflow": {}}
    after_2019 = True  # Yu et al. 2021
    schedules = same_for_kinds(quick=QUICK_SCHEDULE, cpu=CPU_SCHEDULE, paper=PAPER_SCHEDULE)

    def __init__(self, *, layers: Iterable[str] = FASTFLOW_LAYERS, n_steps: int = N_STEPS,
                 hidden_ratio: float = HIDDEN_RATIO, clamp: float = CLAMP, epochs: int = CPU_SCHEDULE["epochs"],
                 batch_size: int = CPU_SCHEDULE["batch_size"], learning_rate: float = CPU_SCHEDULE["learning_rate"],
                 top_k_fraction: float | None = None, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.layers = layers
        self.n_steps = n_steps
        self.hidden_ratio = hidden_ratio
        self.clamp = clamp
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.top_k_fraction = top_k_fraction

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """LayerNorm'd features per level, (N, C_l, h_l, w_l) float32 on CPU."""
        features = self.extractor_.extract(images, batch_size=self.batch_size, progress=self._progress)
        return [normalize_features(features[layer]) for layer in self.extractor_.layers]

    def _fit(self, images: torch.Tensor) -> None:
        check_top_k_fraction(self.top_k_fraction)
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        device = self.device_
        self.extractor_ = FeatureExtractor("efficientnet_lite0", layers=tuple(self.layers), device=device)
        features = self._features(images)
        with torch.random.fork_rng(devices=[]):  # seeded initial weights without touching global state
            torch.manual_seed(self.seed)
            flow = PyramidFlow([f.shape[1] for f in features], n_steps=self.n_steps, hidden_ratio=self.hidden_ratio,
                               clamp=self.clamp, seed=self.seed)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*features), batch_size=self.batch_size,
                                             shuffle=True, generator=torch.Generator().manual_seed(self.seed))
        optimizer = torch.optim.Adam(flow.parameters(), lr=self.learning_rate, weight_decay=WEIGHT_DECAY)
        self.history_ = training.train(flow, loader, lambda model, batch: negative_log_likelihood(model(batch)),
                                       epochs=self.epochs, optimizer=optimizer, seed=self.seed, device=device,
                                       desc="training the flows", progress=self._progress)
        self.flow_ = flow

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, None]:
        maps = []
        self.flow_.eval()
        with torch.inference_mode():
            features = self._features(images)
            for start in tqdm(range(0, len(images), self.batch_size), desc="FastFlow maps", leave=False,
                              disable=not self._progress):
                batch = [f[start:start + self.batch_size].to(self.device_) for f in features]
                maps.append(anomaly_maps(self.flow_(batch), images.shape[-2:]).float().cpu())
        return torch.cat(maps), None
