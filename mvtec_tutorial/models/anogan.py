"""AnoGAN (Schlegl et al., IPMI 2017) and f-AnoGAN (Schlegl et al., MedIA 2019).

Both learn the manifold of normal images with a DCGAN (Radford et al., ICLR 2016; the networks
are in :mod:`mvtec_tutorial.models.anogan_networks`). A test image is explained by the closest
image the generator can draw, ``G(z*)``; the residual ``|x - G(z*)|`` is the anomaly map. The
two differ only in how they find ``z*``:

- :class:`AnoGAN` searches the latent space by gradient descent for every test image
  (:func:`latent_search`, hundreds of generator and discriminator passes per image);
- :class:`FAnoGAN` trains an encoder ``E`` once on the frozen GAN, so ``z* = E(x)`` is a single
  forward pass.

The DCGAN is shared (:func:`~mvtec_tutorial.models.anogan_networks.train_dcgan`); it trains
through the course's one training loop, :func:`mvtec_tutorial.training.train_adversarial`, and
the encoder through :func:`mvtec_tutorial.training.train`. The networks work at ``work_size`` pixels: objects are
resized to it, textures zoomed to ``texture_size`` and cut into ``work_size`` patches.
"""
from __future__ import annotations

import copy
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from mvtec_tutorial import training
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.models.anogan_networks import (LATENT_DIM, WORK_SIZE, Discriminator, Encoder, Generator,
                                                   check_work_size, random_crops, residual_losses, seeded,
                                                   train_dcgan)
from mvtec_tutorial.models.base import KINDS, AnomalyDetector, as_images

#: Textures are zoomed to this side and scored as ``work_size`` patches (MVTec AD paper, Sec. 4.1: 512).
TEXTURE_SIZE = 512
#: The CPU schedule measured on real bottle (results/README.md): 64-pixel generated images, a
#: quarter of the paper's 128 x 128 pixels, so training fits the course's budget (12 minutes on
#: one core for real bottle).
CPU_SETTINGS = dict(work_size=64, base_channels=32, epochs=300, batch_size=16, max_shift=2, texture_size=256)


def schedule_settings(parameter: str, full: int, smoke: int) -> dict[str, dict[str, dict]]:
    """AnoGAN's and f-AnoGAN's :attr:`~mvtec_tutorial.models.base.AnomalyDetector.schedules`.

    "cpu": :data:`CPU_SETTINGS` (64-pixel images). "paper": the constructor's defaults, which
    follow the paper (128-pixel images, textures zoomed to 512), meant for a GPU. "quick": a smoke
    test (16-pixel images, one epoch). Every schedule sets ``kind`` and ``parameter`` (the search
    steps or encoder epochs: ``full``, ``smoke`` on "quick"), and flips only textures, because a
    flipped object can be a defect (MVTec AD's metal_nut has a ``flip`` defect type). On the CPU
    schedule textures keep the paper's geometry at half its side: zoomed to 256 and scored as
    4 x 4 patches of 64 pixels.
    """
    settings = {"quick": dict(CPU_SETTINGS, work_size=16, base_channels=4, epochs=1, texture_size=64),
                "cpu": CPU_SETTINGS, "paper": {}}
    return {schedule: {kind: {**values, "kind": kind, "flips": kind == "texture",
                              parameter: smoke if schedule == "quick" else full} for kind in ("texture", "object")}
            for schedule, values in settings.items()}


def latent_search(generator: Generator, discriminator: Discriminator, images: torch.Tensor, *, steps: int = 300,
                  learning_rate: float = 0.02, feature_weight: float = 0.1,
                  generator_rng: torch.Generator | None = None, progress: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """AnoGAN's search for the latent codes whose generated images best explain ``images``.

    Parameters
    ----------
    generator, discriminator : Generator, Discriminator
        Trained and in ``eval()`` mode, on the device of ``images``.
    images : torch.Tensor of shape (N, 3, S, S), float32 in [0, 1], S = the generator's size
        Searched all at once: the loss is a sum of per-image terms and Adam scales every
        coordinate separately, so each image follows the path it would follow alone.
    steps, learning_rate : int, float
        Adam steps on the codes and their step size (the MVTec AD paper: 300 steps, lr 0.02).
    feature_weight : float
        lambda of :func:`residual_losses` with ``p = 1`` (Schlegl et al. 2017: 0.1).
    generator_rng : torch.Generator, optional
        Draws the starting codes from N(0, I); default a generator seeded with 0.
    progress : bool, default=False
        Show a progress bar over the steps.

    Returns
    -------
    codes : torch.Tensor of shape (N, latent_dim)
    trace : torch.Tensor of shape (steps + 1, N)
        The loss of every image before each step and after the last; ``trace[-1]`` is AnoGAN's
        anomaly score.
    """
    generator_rng = generator_rng or torch.Generator().manual_seed(0)
    codes = torch.randn(len(images), generator.latent_dim, generator=generator_rng).to(images.device)
    codes.requires_grad_(True)
    optimizer = torch.optim.Adam([codes], lr=learning_rate)
    weights = {"residual_weight": 1 - feature_weight, "feature_weight": feature_weight, "power": 1}
    trace = []
    with torch.enable_grad():
        image_features = discriminator(images)[1].detach()
        for _ in tqdm(range(steps), desc="latent search", leave=False, disable=not progress):
            losses = residual_losses(discriminator, images, generator(codes), image_features=image_features, **weights)
            trace.append(losses.detach())
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
    with torch.no_grad():
        trace.append(residual_losses(discriminator, images, generator(codes), image_features=image_features, **weights))
    return codes.detach(), torch.stack(trace).cpu()


class _GANDetector(AnomalyDetector):
    """What AnoGAN and f-AnoGAN share: preprocessing, the DCGAN, and maps from reconstructions.

    Subclasses define ``_encode_all(patches) -> codes`` and ``_score(patches, reconstructions)``.
    """

    def __init__(self, *, kind: str, work_size: int, latent_dim: int, base_channels: int, epochs: int,
                 batch_size: int, learning_rate: float, flips: bool, max_shift: int, texture_size: int,
                 spectral_norm: bool, sample_every: int, seed: int, device: str | torch.device | None) -> None:
        super().__init__(seed=seed, device=device)
        self.kind, self.work_size, self.latent_dim, self.base_channels = kind, work_size, latent_dim, base_channels
        self.epochs, self.batch_size, self.learning_rate = epochs, batch_size, learning_rate
        self.flips, self.max_shift, self.texture_size = flips, max_shift, texture_size
        self.spectral_norm, self.sample_every = spectral_norm, sample_every

    # -------------------------------------------------------------- images <-> patches
    @property
    def _view_size(self) -> int:
        """Side the images are resized to: the generator's size, or the zoomed texture size."""
        return self.texture_size if self.kind == "texture" else self.work_size

    def _view(self, images: torch.Tensor) -> torch.Tensor:
        return F.interpolate(images, size=(self._view_size,) * 2, mode="bilinear", antialias=True, align_corners=False)

    def _patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> non-overlapping generator-sized patches (N * k * k, 3, s, s), row-major."""
        view, s = self._view(images), self.work_size
        return view.unfold(2, s, s).unfold(3, s, s).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, s, s)

    def _assemble(self, patches: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Inverse of :meth:`_patches`: (N * k * k, C, s, s) -> (N, C, H, W) at the input ``size``."""
        k, s, channels = self._view_size // self.work_size, self.work_size, patches.shape[1]
        view = patches.reshape(-1, k, k, channels, s, s).permute(0, 3, 1, 4, 2, 5).reshape(-1, channels, k * s, k * s)
        return F.interpolate(view, size=size, mode="bilinear", antialias=True, align_corners=False)

    # -------------------------------------------------------------- fitting the DCGAN
    def _check_settings(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}; "
                             "use data.category_info(category).kind")
        check_work_size(self.work_size)
        if self.kind == "texture" and self.texture_size % self.work_size:
            raise ValueError(f"texture_size {self.texture_size} must be a multiple of work_size "
                             f"{self.work_size} so the patches tile the zoomed texture")
        for name in ("epochs", "batch_size", "sample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("latent_dim", "base_channels"):
            check_scalar(getattr(self, name), name, low=1, integer=True)
        check_scalar(self.max_shift, "max_shift", low=0, integer=True, hint="0 trains on unshifted images")
        check_scalar(self.learning_rate, "learning_rate", low=0, low_open=True)

    def _training_pool(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the view size; objects padded by ``max_shift`` so a random crop is a shift."""
        if len(images) < 2:
            raise ValueError(f"a GAN needs at least 2 training images, got {len(images)}")
        shift = self.max_shift if self.kind == "object" else 0
        return F.pad(self._view(images), [shift] * 4, mode="replicate") if shift else self._view(images)

    def training_samples(self, images: torch.Tensor | np.ndarray, *, seed: int = 0) -> np.ndarray:
        """One augmented crop per image, as the DCGAN sees them in an epoch (usable before ``fit``).

        Parameters
        ----------
        images : tensor or ndarray of shape (N, 3, H, W), float in [0, 1], N >= 2
        seed : int, default=0
            Seeds the crops and flips.

        Returns
        -------
        ndarray of shape (N, 3, work_size, work_size), float32 in [0, 1]
        """
        self._check_settings()
        pool = self._training_pool(as_images(images))
        return random_crops(pool, self.work_size, flips=self.flips, generator=torch.Generator().manual_seed(seed)).numpy()

    def _fit_gan(self, images: torch.Tensor) -> None:
        self._check_settings()
        pool = self._training_pool(images)
        with seeded(self.seed):
            self.generator_ = Generator(latent_dim=self.latent_dim, work_size=self.work_size,
                                        base_channels=self.base_channels)
            self.discriminator_ = Discriminator(work_size=self.work_size, base_channels=self.base_channels,
                                                spectral_norm=self.spectral_norm)
        history = train_dcgan(self.generator_, self.discriminator_, pool, epochs=self.epochs,
                              batch_size=self.batch_size, learning_rate=self.learning_rate, flips=self.flips,
                              seed=self.seed, device=self.device_, sample_every=self.sample_every,
                              progress=self._progress)
        self.sample_epochs_ = history.pop("sample_epochs")
        self.sample_grids_ = history.pop("sample_grids")
        self.history_ = history
        self.generator_.requires_grad_(False), self.discriminator_.requires_grad_(False)  # frozen from now on

    # -------------------------------------------------------------- predicting
    def _slices(self, n: int, desc: str) -> Iterator[slice]:
        starts = range(0, n, self.batch_size)
        for start in tqdm(starts, desc=desc, disable=not self._progress or len(starts) < 2):
            yield slice(start, start + self.batch_size)

    def _explain(self, patches: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
        """Yield ``(slice, reconstructions, scores)`` batch by batch for generator-sized patches."""
        codes = self._encode_all(patches)
        with torch.inference_mode():
            for part in self._slices(len(patches), "decoding"):
                batch = patches[part].to(self.device_)
                reconstructions = self.generator_(codes[part].to(self.device_))
                yield part, reconstructions.cpu(), self._score(batch, reconstructions).cpu()

    def _predict(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patches = self._patches(images)
        residuals, scores = torch.empty(len(patches), 1, *patches.shape[-2:]), torch.empty(len(patches))
        for part, reconstructions, batch_scores in self._explain(patches):
            residuals[part] = (patches[part] - reconstructions).abs().mean(1, keepdim=True)
            scores[part] = batch_scores
        maps = self._assemble(residuals, tuple(images.shape[-2:]))[:, 0]
        return maps, scores.reshape(len(images), -1).amax(1)  # a texture is as anomalous as its worst patch

    def reconstruct(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The generated best match of each image, at the input resolution.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]

        Returns
        -------
        ndarray of shape (N, 3, H, W), float32 in [0, 1]
            ``G(z*)`` (textures: the reconstructed patches tiled back together), resized to (H, W).
        """
        self._check_fitted()
        images = as_images(images, progress=self._progress)
        patches = self._patches(images)
        reconstructions = torch.empty_like(patches)
        for part, batch_reconstructions, _ in self._explain(patches):
            reconstructions[part] = batch_reconstructions
        return self._assemble(reconstructions, tuple(images.shape[-2:])).clamp(0, 1).numpy()  # clamp: interpolation overshoot

    def _encode_all(self, patches: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _score(self, patches: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


_SHARED_PARAMETERS = """kind : {"object", "texture"}, default="object"
        Objects are resized to ``work_size``; textures are zoomed to ``texture_size``, trained
        on random ``work_size`` crops and scored as non-overlapping patches (stride = size).
    work_size : int, default=128
        The networks' internal side: the side of the generated images and of the patches
        scored, a power of two >= 8 (paper: 128). Not the side the images arrive at: maps
        come back at the input resolution.
    latent_dim : int, default=64
        Size of the latent code (paper: 64).
    base_channels : int, default=32
        Width of the outermost convolutions; inner layers double it up to 8x.
    epochs, batch_size, learning_rate : int, int, float, default=100, 32, 2e-4
        DCGAN training (Adam with betas (0.5, 0.999)); ``batch_size`` also batches prediction.
    flips : bool, default=False
        Random horizontal and vertical flips during training; set True only where a flipped
        normal image is still normal (bottle, carpet: yes; transistor: no).
    max_shift : int, default=4
        Objects: random translations of up to this many pixels at ``work_size``.
    texture_size : int, default=512
        Textures: side they are zoomed to, a multiple of ``work_size`` (paper: 512).
    spectral_norm : bool, default=True
        Spectrally normalise the discriminator (the stabiliser); False gives the plain DCGAN.
    sample_every : int, default=5
        Keep a grid of generated samples every this many epochs.
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector`."""

_SHARED_ATTRIBUTES = """generator_, discriminator_ : Generator, Discriminator
        The trained, frozen DCGAN.
    history_ : dict of str to list of float
        ``"d_loss"``, ``"g_loss"``, ``"d_real"`` per epoch (:func:`~mvtec_tutorial.models.anogan_networks.train_dcgan`).
    sample_grids_ : list of ndarray of shape (16, 3, work_size, work_size), uint8
        The same 16 latent codes drawn at each of ``sample_epochs_`` (epoch 0 = untrained)."""


class AnoGAN(_GANDetector):
    __doc__ = f"""AnoGAN: a DCGAN of normal images and a latent search per test image.

    Parameters
    ----------
    {_SHARED_PARAMETERS}
    search_steps : int, default=300
        Adam steps of the latent search per image (paper: 300); a prediction-time setting,
        changing it needs no refit.
    search_learning_rate : float, default=0.02
        Step size of the search (paper: 0.02).
    feature_weight : float, default=0.1
        lambda: weight of the discriminator-feature term in the search loss and score.

    Attributes
    ----------
    {_SHARED_ATTRIBUTES}

    Notes
    -----
    Schlegl et al. (IPMI 2017), Sec. 2.2: the anomaly map is ``|x - G(z*)|`` averaged over colour
    channels and resized to the input; the image score is the final search loss
    ``(1 - lambda) mean|x - G(z*)| + lambda mean|f(x) - f(G(z*))|`` (a texture's: its worst
    patch). Prediction costs ``search_steps`` generator and discriminator passes, forward and
    backward, per image: slow. :class:`FAnoGAN` replaces the search with one encoder pass.

    Examples
    --------
    >>> import torch
    >>> normal = torch.rand(8, 3, 32, 32) * 0.1 + 0.5
    >>> model = AnoGAN(work_size=16, base_channels=4, epochs=1, search_steps=5).fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.shape, model.search_trace(normal[:2]).shape
    ((2, 32, 32), (2,), (6, 2))
    """

    benchmark_names = {"anogan": {}}
    cache_predictions = True  # a latent search per test image takes minutes on a CPU
    schedules = schedule_settings("search_steps", 300, 5)

    def __init__(self, *, kind: str = "object", work_size: int = WORK_SIZE, latent_dim: int = LATENT_DIM,
                 base_channels: int = 32, epochs: int = 100, batch_size: int = 32, learning_rate: float = 2e-4,
                 flips: bool = False, max_shift: int = 4, texture_size: int = TEXTURE_SIZE,
                 spectral_norm: bool = True, sample_every: int = 5, search_steps: int = 300,
                 search_learning_rate: float = 0.02, feature_weight: float = 0.1, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(kind=kind, work_size=work_size, latent_dim=latent_dim, base_channels=base_channels,
                         epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, flips=flips,
                         max_shift=max_shift, texture_size=texture_size, spectral_norm=spectral_norm,
                         sample_every=sample_every, seed=seed, device=device)
        self.search_steps, self.search_learning_rate, self.feature_weight = search_steps, search_learning_rate, feature_weight

    def _fit(self, images: torch.Tensor) -> None:
        check_scalar(self.search_learning_rate, "search_learning_rate", low=0, low_open=True)
        check_scalar(self.feature_weight, "feature_weight", low=0, high=1,
                     hint="the search loss is (1 - feature_weight) x residual + feature_weight x discrimination")
        self._fit_gan(images)

    def _encode_all(self, patches: torch.Tensor) -> torch.Tensor:
        return self._search(patches)[0]

    def _search(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent codes (n, latent_dim) of generator-sized patches and the loss trace (steps + 1, n)."""
        if self.search_steps < 0:
            raise ValueError(f"search_steps must be >= 0, got {self.search_steps}")
        rng = torch.Generator().manual_seed(self.seed)  # same starting codes at every prediction
        codes, traces = [], []
        for part in self._slices(len(patches), "latent search batches"):
            batch_codes, trace = latent_search(self.generator_, self.discriminator_, patches[part].to(self.device_),
                                               steps=self.search_steps, learning_rate=self.search_learning_rate,
                                               feature_weight=self.feature_weight, generator_rng=rng,
                                               progress=self._progress)
            codes.append(batch_codes)
            traces.append(trace)
        return torch.cat(codes), torch.cat(traces, dim=1)

    def search_trace(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Search loss of every patch (objects: image) at every step of the latent search.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]

        Returns
        -------
        ndarray of shape (search_steps + 1, n_patches), float32
            Row 0 is the loss at the seeded starting codes; the last row is the image score of
            :meth:`predict` (a texture's score is the largest of its patches' last values).
        """
        self._check_fitted()
        return self._search(self._patches(as_images(images, progress=self._progress)))[1].numpy()

    def _score(self, patches: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        return residual_losses(self.discriminator_, patches, reconstructions, residual_weight=1 - self.feature_weight,
                               feature_weight=self.feature_weight, power=1)


class FAnoGAN(_GANDetector):
    __doc__ = f"""f-AnoGAN: AnoGAN's DCGAN plus an encoder, so a prediction is one forward pass.

    Parameters
    ----------
    {_SHARED_PARAMETERS}
    encoder_epochs : int, default=100
        Training epochs of the encoder on the frozen GAN.
    encoder_learning_rate : float, default=1e-3
        Adam step size of the encoder.
    kappa : float, default=1.0
        Weight of the discriminator-feature term in the izi_f loss and the score (paper: 1).
    pretrained : AnoGAN or FAnoGAN, optional
        A fitted model whose generator and discriminator are reused (copied) instead of training a
        new DCGAN; its kind, work_size, latent_dim, base_channels and texture_size must equal
        this model's. The GAN training settings here are then unused.

    Attributes
    ----------
    {_SHARED_ATTRIBUTES}
    encoder_ : Encoder
        Maps an image (patch) to its latent code.
    encoder_history_ : dict
        ``"loss"``: izi_f loss per encoder epoch (:func:`mvtec_tutorial.training.train`).

    Notes
    -----
    Schlegl et al. (Medical Image Analysis 2019), Sec. 2.2, the izi_f architecture: the encoder is
    trained with ``mean (x - G(E(x)))^2 + kappa mean (f(x) - f(G(E(x))))^2`` while ``G`` and the
    discriminator features ``f`` stay frozen; the same expression is the image score, and the map
    is ``|x - G(E(x))|`` averaged over colour channels.

    Examples
    --------
    >>> import torch
    >>> normal = torch.rand(8, 3, 32, 32) * 0.1 + 0.5
    >>> model = FAnoGAN(work_size=16, base_channels=4, epochs=1, encoder_epochs=1).fit(normal, progress=False)
    >>> maps, scores = model.predict(normal[:2])
    >>> maps.shape, scores.shape
    ((2, 32, 32), (2,))
    """

    benchmark_names = {"f_anogan": {}}
    schedules = schedule_settings("encoder_epochs", 100, 1)

    def __init__(self, *, kind: str = "object", work_size: int = WORK_SIZE, latent_dim: int = LATENT_DIM,
                 base_channels: int = 32, epochs: int = 100, batch_size: int = 32, learning_rate: float = 2e-4,
                 flips: bool = False, max_shift: int = 4, texture_size: int = TEXTURE_SIZE,
                 spectral_norm: bool = True, sample_every: int = 5, encoder_epochs: int = 100,
                 encoder_learning_rate: float = 1e-3, kappa: float = 1.0, pretrained: _GANDetector | None = None,
                 seed: int = 0, device: str | torch.device | None = None) -> None:
        super().__init__(kind=kind, work_size=work_size, latent_dim=latent_dim, base_channels=base_channels,
                         epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, flips=flips,
                         max_shift=max_shift, texture_size=texture_size, spectral_norm=spectral_norm,
                         sample_every=sample_every, seed=seed, device=device)
        self.encoder_epochs, self.encoder_learning_rate, self.kappa = encoder_epochs, encoder_learning_rate, kappa
        self.pretrained = pretrained

    def _reuse_gan(self, source: _GANDetector) -> None:
        if not hasattr(source, "generator_"):
            raise ValueError(f"pretrained {type(source).__name__} is not fitted; fit it first or pass pretrained=None")
        differing = [f"{name}={getattr(source, name)!r} (here {getattr(self, name)!r})"
                     for name in ("kind", "work_size", "latent_dim", "base_channels", "texture_size")
                     if getattr(source, name) != getattr(self, name)]
        if differing:
            raise ValueError(f"pretrained model has {', '.join(differing)}; construct FAnoGAN with the same settings")
        self._check_settings()
        for name in ("generator_", "discriminator_", "history_", "sample_epochs_", "sample_grids_"):
            setattr(self, name, copy.deepcopy(getattr(source, name)))
        self.generator_.to(self.device_), self.discriminator_.to(self.device_)

    def _fit(self, images: torch.Tensor) -> None:
        check_scalar(self.encoder_epochs, "encoder_epochs", low=1, integer=True)
        check_scalar(self.encoder_learning_rate, "encoder_learning_rate", low=0, low_open=True)
        check_scalar(self.kappa, "kappa", low=0, hint="0 trains the encoder on the pixel residual alone")
        if self.pretrained is None:
            self._fit_gan(images)
        else:
            self._reuse_gan(self.pretrained)
        pool = self._training_pool(images)
        with seeded(self.seed):
            self.encoder_ = Encoder(latent_dim=self.latent_dim, work_size=self.work_size,
                                    base_channels=self.base_channels)
        crop_rng = torch.Generator().manual_seed(self.seed)

        def izi_f_loss(encoder: Encoder, batch: list[torch.Tensor]) -> torch.Tensor:
            images = random_crops(batch[0], self.work_size, flips=self.flips, generator=crop_rng)
            return self._score(images, self.generator_(encoder(images))).mean()

        loader = DataLoader(TensorDataset(pool), batch_size=self.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(self.seed))
        self.encoder_history_ = training.train(self.encoder_, loader, izi_f_loss, epochs=self.encoder_epochs,
                                               learning_rate=self.encoder_learning_rate, seed=self.seed,
                                               device=self.device_, desc="f-AnoGAN encoder", progress=self._progress)

    def _encode_all(self, patches: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([self.encoder_(patches[part].to(self.device_)).cpu()
                              for part in self._slices(len(patches), "encoding")])

    def _score(self, patches: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
        return residual_losses(self.discriminator_, patches, reconstructions, residual_weight=1.0,
                               feature_weight=self.kappa, power=2)
