"""GMM texture inspection (HALCON), the classical method the MVTec AD paper ran on textures.

A texture looks the same everywhere, so position does not matter: what matters is which small
patches occur. At each level of an image pyramid, a Gaussian mixture learns the distribution of
the 7 x 7 patches of normal images; a test pixel is as anomalous as its patch is unlikely, on the
level where it is most surprising. Coarse levels see large structures (a missing stripe), fine
levels small ones (a thread).

Meant for textures. The model ignores where a patch is, so on objects it learns the patches of
all their parts and misses a part that is out of place; it does not check (a method sees pixels,
not categories). The benchmark runs it on textures only, as the paper did.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from skimage.transform import pyramid_gaussian
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mvtec_tutorial import settings
from mvtec_tutorial.data import to_grayscale
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.models.base import AnomalyDetector, as_images, same_for_kinds

#: Added to every covariance diagonal: a variance of 1e-4 is a standard deviation of 0.01, about
#: 2.5 gray levels of 255, the order of sensor noise. Without it, smooth coarse pyramid levels give
#: near-singular patch covariances and unbounded likelihoods.
REG_COVAR = 1e-4
#: A level whose held-out patch likelihoods spread less than this fraction of their mean has learned
#: no texture: the spread is float rounding (about 1e-7 relative for float32), and standardising by
#: it would turn rounding into huge scores, or divide 0 by 0 when all patches are equal.
MIN_RELATIVE_NLL_SPREAD = 1e-5


def pyramid(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """Gaussian pyramid: the image, then ``n_levels - 1`` times blurred and halved.

    Parameters
    ----------
    image : ndarray of shape (C, H, W), float in [0, 1]

    Returns
    -------
    list of ndarray of shape (C, ceil(H / 2**l), ceil(W / 2**l)), float64, l = 0 .. n_levels - 1
    """
    levels = pyramid_gaussian(image, max_layer=n_levels - 1, downscale=2, channel_axis=0)
    return list(levels)


def _windows(level: np.ndarray, patch_size: int) -> np.ndarray:
    """View (C, h, w, p, p) of the mirrored ``patch_size`` neighbourhood of every pixel; no copy."""
    half = patch_size // 2
    padded = np.pad(level, ((0, 0), (half, half), (half, half)), mode="reflect")
    return sliding_window_view(padded, (patch_size, patch_size), axis=(1, 2))


def patch_vectors(level: np.ndarray, patch_size: int) -> np.ndarray:
    """The ``patch_size`` x ``patch_size`` neighbourhood of every pixel, as one vector per pixel.

    Parameters
    ----------
    level : ndarray of shape (C, h, w)
    patch_size : int, odd

    Returns
    -------
    ndarray of shape (h * w, C * patch_size**2)
        Row ``y * w + x`` is the patch centred on pixel (y, x); borders are mirrored.
    """
    return _windows(level, patch_size).transpose(1, 2, 0, 3, 4).reshape(level.shape[1] * level.shape[2], -1)


def draw_patch_vectors(levels: list[np.ndarray], patch_size: int, n_draw: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Patch vectors of ``n_draw`` pixels drawn without replacement from all pixels of ``levels``.

    The rows are those of ``np.concatenate([patch_vectors(l, patch_size) for l in levels])`` at
    ``rng.choice(n_pixels, size=n_draw, replace=False)``, without building that array: for 48
    images of 256 x 256 pixels it would hold 3 million 49-d patches (1.2 GB).

    Parameters
    ----------
    levels : list of ndarray of shape (C, h_i, w_i)
        One pyramid level of every training image.
    patch_size : int, odd
    n_draw : int
        Patches to draw; all pixels when there are fewer.
    rng : numpy.random.Generator
        Draws the pixels (one ``choice`` call).

    Returns
    -------
    ndarray of shape (min(n_draw, n_pixels), C * patch_size**2)
    """
    counts = np.array([level.shape[1] * level.shape[2] for level in levels])
    chosen = rng.choice(counts.sum(), size=min(n_draw, int(counts.sum())), replace=False)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.searchsorted(starts, chosen, side="right") - 1  # which image each drawn pixel is in
    drawn = np.empty((len(chosen), levels[0].shape[0] * patch_size**2), dtype=levels[0].dtype)
    for index in np.unique(owner):
        rows = np.flatnonzero(owner == index)
        y, x = np.divmod(chosen[rows] - starts[index], levels[index].shape[2])
        drawn[rows] = _windows(levels[index], patch_size)[:, y, x].transpose(1, 0, 2, 3).reshape(len(rows), -1)
    return drawn


class GMMTexture(AnomalyDetector):
    """Gaussian mixtures of 7 x 7 patches on a 4-level image pyramid.

    Parameters
    ----------
    n_levels : int, default=4
        Pyramid levels (each half the size of the previous one).
    patch_size : int, default=7
        Side of the (odd) patch around each pixel.
    n_components : int, default=5
        Gaussians per level's mixture (full covariance).
    n_fit_patches : int, default=10000
        Training patches per level, drawn at random (seeded) from all pixels of all training images;
        four fifths fit the mixture, one fifth calibrates the level's scale.
    grayscale : bool, default=True
        Model gray-value patches (HALCON's usual use); False models colour patches (3x the
        dimensions), which also sees colour-only defects.
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector`; the seed draws the patches and
        initialises the mixtures. Everything runs on the CPU.

    Attributes
    ----------
    mixtures_ : list of sklearn.mixture.GaussianMixture, one per level
    nll_mean_, nll_std_ : ndarray of shape (n_levels,), float64
        Mean and standard deviation of the negative log-likelihood per level of held-out training
        patches (a fifth of those drawn, not used to fit the mixture), which put the levels on one scale.

    Raises
    ------
    ValueError
        From ``fit``: an even ``patch_size``, or so many levels that the coarsest is smaller than a patch.

    Notes
    -----
    The map of level l is the negative log-likelihood of each pixel's patch under that level's
    mixture, standardised with ``nll_mean_[l]``, ``nll_std_[l]``, and upsampled (bilinear) to the
    image. The levels are combined by their maximum: like HALCON, which flags a pixel when any level
    calls it novel. The image score is the maximum of the map. After Böttger and Ulrich, "Real-time
    texture error detection on textured surfaces with compressed sensing", Pattern Recognition and
    Image Analysis 26, 2016, and HALCON's texture inspection model (operators
    ``create_texture_inspection_model``, ``apply_texture_inspection_model``); which per-level
    normalisation HALCON uses is not published, the z-score is our choice.

    Examples
    --------
    >>> import torch
    >>> yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    >>> stripes = (0.5 + 0.4 * torch.sin(xx)).expand(6, 3, 32, 32).clone()
    >>> model = GMMTexture(n_levels=2, n_fit_patches=2000).fit(stripes, progress=False)
    >>> test = stripes[:2].clone(); test[1, :, 12:20, 12:20] = 0.5
    >>> maps, scores = model.predict(test)
    >>> maps.shape, bool(scores[1] > scores[0])
    ((2, 32, 32), True)
    """

    benchmark_names = {"gmm_texture": {}}
    schedules = same_for_kinds(("texture",), quick={"n_fit_patches": 2000}, cpu={"n_fit_patches": 10000},
                               paper={"n_fit_patches": 10000})  # a texture model: objects are not stationary

    def __init__(self, *, n_levels: int = 4, patch_size: int = 7, n_components: int = 5,
                 n_fit_patches: int = 10000, grayscale: bool = True, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.n_levels = n_levels
        self.patch_size = patch_size
        self.n_components = n_components
        self.n_fit_patches = n_fit_patches
        self.grayscale = grayscale

    def _pyramids(self, images: torch.Tensor) -> list[list[np.ndarray]]:
        array = to_grayscale(images).numpy() if self.grayscale else images.numpy()
        return [pyramid(image, self.n_levels) for image in array]

    def _fit(self, images: torch.Tensor) -> None:
        for name in ("n_levels", "patch_size", "n_components", "n_fit_patches"):
            check_scalar(getattr(self, name), name, low=1, integer=True)
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and positive (a patch centred on its pixel), got {self.patch_size}")
        smallest = min(images.shape[-2:]) / 2 ** (self.n_levels - 1)
        if self.n_levels < 1 or smallest < self.patch_size:
            raise ValueError(f"{self.n_levels} pyramid levels shrink {tuple(images.shape[-2:])} images to "
                             f"{smallest:.0f} pixels, less than a {self.patch_size}-pixel patch; use fewer levels "
                             "or larger images")
        rng = np.random.default_rng(self.seed)
        pyramids = self._pyramids(images)
        self.mixtures_, nll_mean, nll_std = [], [], []
        for level in tqdm(range(self.n_levels), desc="GMM per pyramid level", disable=not self._progress):
            patches = draw_patch_vectors([p[level] for p in pyramids], self.patch_size, self.n_fit_patches, rng)
            with threadpool_limits(settings.BLAS_THREADS):
                mixture, nll = self._fit_level(patches, rng)
            self.mixtures_.append(mixture)
            nll_mean.append(nll.mean())
            nll_std.append(nll.std())
        self.nll_mean_, self.nll_std_ = np.array(nll_mean), np.array(nll_std)
        flat = np.flatnonzero(self.nll_std_ <= MIN_RELATIVE_NLL_SPREAD * np.maximum(1, np.abs(self.nll_mean_)))
        if flat.size:
            raise ValueError(f"the training images have no texture on pyramid levels {flat.tolist()}: every "
                             f"patch there is equally likely (spread {self.nll_std_[flat].max():.2g} nats), so "
                             "anomaly maps standardised by that spread would be NaN or rounding noise; the images "
                             "look uniform. Fit GMMTexture on textured images, or use MeanImage or "
                             "VariationModel for plain surfaces")

    def _fit_level(self, patches: np.ndarray, rng: np.random.Generator) -> tuple[GaussianMixture, np.ndarray]:
        """Fit one level's mixture on drawn patches; return it and the NLL of held-out patches."""
        # The mixture fits 4/5 of the patches; the other 1/5 set the level's scale. Patches the
        # mixture was fitted on look likelier than new normal ones (overfitting), most on the
        # small coarse levels, and would make every test pixel there look anomalous.
        n_held_out = max(1, len(patches) // 5)
        mixture = GaussianMixture(self.n_components, covariance_type="full", reg_covar=REG_COVAR,
                                  random_state=int(rng.integers(2**31))).fit(patches[n_held_out:])
        return mixture, -mixture.score_samples(patches[:n_held_out])

    def level_maps(self, images: torch.Tensor) -> np.ndarray:
        """Standardised negative log-likelihood of every pixel's patch, per level, at image size.

        Parameters
        ----------
        images : torch.Tensor or ndarray of shape (N, 3, H, W), float32 in [0, 1]

        Returns
        -------
        ndarray of shape (N, n_levels, H, W), float32
            ``(nll - nll_mean_[l]) / nll_std_[l]``, upsampled bilinearly; higher = less likely.
        """
        self._check_fitted()
        images = as_images(images)
        size = tuple(images.shape[-2:])
        maps = []
        for image_pyramid in tqdm(self._pyramids(images), desc="GMM likelihoods", disable=not self._progress,
                                  leave=False):
            levels = []
            for level, mixture in enumerate(self.mixtures_):
                shape = image_pyramid[level].shape[1:]
                with threadpool_limits(settings.BLAS_THREADS):
                    nll = -mixture.score_samples(patch_vectors(image_pyramid[level], self.patch_size)).reshape(shape)
                z = torch.from_numpy((nll - self.nll_mean_[level]) / self.nll_std_[level]).float()
                levels.append(F.interpolate(z[None, None], size=size, mode="bilinear", align_corners=False)[0, 0])
            maps.append(torch.stack(levels))
        return torch.stack(maps).numpy()

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, None]:
        return self.level_maps(images).max(axis=1), None
