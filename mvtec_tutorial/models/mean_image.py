"""The simplest honest baseline: how far each pixel is from the mean normal image."""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.models.base import AnomalyDetector, same_for_kinds


class MeanImage(AnomalyDetector):
    """Per-pixel z-score against the mean and standard deviation of the normal images.

    Every later method should beat this; on aligned categories (bottle) it is hard to beat.

    Parameters
    ----------
    std_floor : float, default=0.02
        Lower bound on the per-pixel standard deviation (intensity units in [0, 1]), so a pixel that
        never varied in training does not turn sensor noise into huge scores.
    smoothing_sigma : float, default=2.0
        Standard deviation in pixels of the Gaussian that smooths each map; 0 disables it.
    seed, device
        See :class:`~mvtec_tutorial.models.base.AnomalyDetector` (nothing here is random).

    Attributes
    ----------
    mean_ : ndarray of shape (3, H, W), float32
    std_ : ndarray of shape (3, H, W), float32, at least ``std_floor``

    Notes
    -----
    The map is the root mean square over colour channels of ``(x - mean_) / std_``; the image
    score is its maximum. This is the variation model of the paper without the alignment step.

    Examples
    --------
    >>> import torch
    >>> normal = torch.rand(8, 3, 32, 32) * 0.1 + 0.5
    >>> model = MeanImage().fit(normal)
    >>> test = normal[:2].clone(); test[1, :, 10:14, 10:14] = 1.0
    >>> maps, scores = model.predict(test)
    >>> maps.shape, bool(scores[1] > scores[0])
    ((2, 32, 32), True)
    """

    benchmark_names = {"mean_image": {}}
    schedules = same_for_kinds(quick={}, cpu={}, paper={})  # nothing to train

    def __init__(self, *, std_floor: float = 0.02, smoothing_sigma: float = 2.0, seed: int = 0,
                 device: str | torch.device | None = None) -> None:
        super().__init__(seed=seed, device=device)
        self.std_floor = std_floor
        self.smoothing_sigma = smoothing_sigma

    def _check_parameters(self) -> None:
        check_scalar(self.std_floor, "std_floor", low=0, low_open=True,
                     hint="the smallest standard deviation a pixel may have; at 0 a pixel that never varied "
                          "divides by zero (NaN or infinite maps); the default is 0.02")
        check_scalar(self.smoothing_sigma, "smoothing_sigma", low=0, hint="pixels of Gaussian smoothing; 0 turns it off")

    def _fit(self, images: torch.Tensor) -> None:
        self._check_parameters()
        array = images.numpy()
        self.mean_ = array.mean(axis=0)
        self.std_ = np.maximum(array.std(axis=0), self.std_floor)

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, None]:
        z = (images.numpy() - self.mean_) / self.std_
        maps = np.sqrt((z ** 2).mean(axis=1))
        if self.smoothing_sigma > 0:
            maps = np.stack([ndimage.gaussian_filter(m, self.smoothing_sigma) for m in maps])
        return maps, None
