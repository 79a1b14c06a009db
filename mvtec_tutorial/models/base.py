"""The one interface every unsupervised method follows, scikit-learn style.

``Method(*, seed=0, device=None, **hyperparameters)`` stores its parameters only;
``fit(train_dataset)`` learns from normal images and returns ``self``;
``predict(images)`` returns ``(maps, scores)``: float32 numpy arrays of shape (N, H, W) at the
input resolution and (N,), higher meaning more anomalous. Subclasses implement ``_fit`` and
``_predict`` on image tensors; this class does the checking and conversion once for all.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mvtec_tutorial.data import as_images  # noqa: F401  (re-exported: methods import it from here)
from mvtec_tutorial.settings import get_device


class NotFittedError(RuntimeError):
    """Raised when ``predict`` is called before ``fit``."""


class AnomalyDetector:
    """Base class of the unsupervised methods.

    Parameters
    ----------
    seed : int, default=0
        Seeds every random choice of the method (its own generators, never global state).
    device : str or torch.device, optional
        Where networks run; None means CUDA when available, else CPU.

    Notes
    -----
    Subclasses define ``_fit(images)`` (images: float32 tensor (N, 3, H, W) in [0, 1] on CPU)
    and ``_predict(images) -> (maps, scores)`` and name learned state with a trailing underscore.
    ``fit`` deletes that state before calling ``_fit``, so refitting starts from scratch.
    """

    def __init__(self, *, seed: int = 0, device: str | torch.device | None = None) -> None:
        self.seed = seed
        self.device = device

    @property
    def device_(self) -> torch.device:
        """The resolved :class:`torch.device` this method computes on."""
        return get_device(self.device)

    def fit(self, train_dataset: Any, *, progress: bool = True) -> "AnomalyDetector":
        """Learn normality from defect-free images and return ``self``.

        Parameters
        ----------
        train_dataset : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]
            Normal images only. Fitting again forgets everything learned before.
        progress : bool, default=True
            Show progress bars.
        """
        images = as_images(train_dataset, progress=progress)
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)
        self.progress_ = progress
        self._fit(images)
        self.image_size_ = tuple(images.shape[-2:])
        return self

    def predict(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Score images.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]

        Returns
        -------
        maps : ndarray of shape (N, H, W), float32
            Per-pixel anomaly scores at the input resolution; higher = more anomalous.
        scores : ndarray of shape (N,), float32
            Image anomaly scores; higher = more anomalous.
        """
        if not hasattr(self, "image_size_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        images = as_images(images, progress=self.progress_)
        maps, scores = self._predict(images)
        maps = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, dtype=np.float32)
        scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float32)
        expected = (images.shape[0], *images.shape[-2:])
        if maps.shape != expected or scores.shape != expected[:1]:
            raise RuntimeError(f"{type(self).__name__} returned maps {maps.shape} and scores {scores.shape}; "
                               f"expected {expected} and {expected[:1]}")
        return maps, scores

    def _fit(self, images: torch.Tensor) -> None:
        raise NotImplementedError

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"
