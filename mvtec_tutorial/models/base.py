"""The one interface every unsupervised method follows, scikit-learn style, and saving fitted methods.

``Method(*, seed=0, device=None, **hyperparameters)`` stores its parameters only;
``fit(train_dataset)`` learns from normal images and returns ``self``;
``predict(images)`` returns ``(maps, scores)``: float32 numpy arrays of shape (N, H, W) at the
input resolution and (N,), higher meaning more anomalous. Subclasses implement ``_fit`` and
``_predict`` on image tensors; this class does the checking and conversion once for all.

Detectors, and the supervised classifiers, are :class:`Estimator` s: scikit-learn estimators
(``get_params``, ``set_params``, ``sklearn.base.clone``) that can be saved and loaded
(:meth:`Estimator.save`, :meth:`Estimator.load`) in the one file format of
:mod:`mvtec_tutorial.models.persistence`. Each method class also declares itself to the benchmark
(:attr:`AnomalyDetector.benchmark_names`, :attr:`AnomalyDetector.schedules`).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.base
import torch

from mvtec_tutorial import __version__, metrics
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.data import as_images
from mvtec_tutorial.models.persistence import (FILE_KIND, FILE_VERSION, encode_estimator, encode_value,
                                               estimator_from_file_contents, read_file)
from mvtec_tutorial.settings import get_device, source_hash

#: Training schedules every method declares its settings for: "quick" a smoke test whose numbers
#: mean nothing (tests, fast notebooks), "cpu" the course's (results/ uses it), "paper" the paper's
#: (for the networks, a GPU schedule).
SCHEDULES = ("quick", "cpu", "paper")
#: Category kinds (:attr:`mvtec_tutorial.data.CategoryInfo.kind`) a method may apply to.
KINDS = ("texture", "object")
# Benchmark name -> the class that declared it; filled as method classes are defined (__init_subclass__).
_METHODS: dict[str, type] = {}


def same_for_kinds(kinds: tuple[str, ...] = KINDS, **per_schedule: dict) -> dict[str, dict[str, dict]]:
    """A :attr:`AnomalyDetector.schedules` table whose settings do not depend on the kind.

    Examples
    --------
    >>> same_for_kinds(("texture",), quick={"epochs": 1}, cpu={}, paper={})["quick"]
    {'texture': {'epochs': 1}}
    """
    return {schedule: {kind: dict(settings) for kind in kinds} for schedule, settings in per_schedule.items()}


def benchmark_methods() -> dict[str, type]:
    """Every method the benchmark knows: its name -> the class that declared it, in definition order.

    A class declares itself with :attr:`AnomalyDetector.benchmark_names` and
    :attr:`AnomalyDetector.schedules`; defining (importing) it is all it takes.
    """
    return dict(_METHODS)


class NotFittedError(RuntimeError):
    """Raised when ``predict`` (or any method that needs learned state) is called before ``fit``."""


class Estimator(sklearn.base.BaseEstimator):
    """What every fitted model of the package shares: device, run flag, fitted check, one file format.

    Subclasses store keyword parameters in ``__init__`` only (among them ``seed`` and ``device``),
    name learned state with a trailing underscore, and set :attr:`_FITTED_BY` last when fitting.
    """

    #: The learned attribute whose presence means "fitted" (set last by ``fit``).
    _FITTED_BY = "image_shape_"
    #: Whether fit and predict show progress bars: a run flag (``fit``'s and ``predict``'s ``progress``),
    #: neither a parameter that changes results nor learned state, so never saved or part of a cache key.
    _progress = True

    @property
    def device_(self) -> torch.device:
        """The resolved :class:`torch.device` this method computes on."""
        return get_device(self.device)

    def _forget(self) -> None:
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)

    def _check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless :meth:`fit` (or :meth:`load`) has run."""
        if not hasattr(self, self._FITTED_BY):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Write the fitted estimator to ``path`` (:mod:`~mvtec_tutorial.models.persistence`) and return the path.

        The file holds the class name, :meth:`get_params`, the package version and source hash,
        every learned attribute (tensors, arrays, plain values, networks as state dicts) and
        ``metadata`` (plain values, e.g. ``fit_seconds``). It is written to a temporary file first
        and renamed, so an interrupted save never leaves a half-written file behind. ``~`` in
        ``path`` is the home folder. The file format has a version
        (:data:`~mvtec_tutorial.models.persistence.FILE_VERSION`); the
        package version and source hash are recorded for the reader, not checked on loading.

        Raises
        ------
        NotFittedError
            If the estimator is not fitted.
        TypeError
            If a parameter or learned attribute cannot be stored as plain values, or the class (or a
            network it holds) is defined outside this package, so :meth:`load` could never read it back.
        OSError
            If the file cannot be written there (the message names the path).
        """
        self._check_fitted()
        path = Path(path).expanduser()
        payload = {"format": FILE_KIND, "format_version": FILE_VERSION, "package_version": __version__,
                   "source_hash": source_hash(), **encode_estimator(self, where=type(self).__name__),
                   "metadata": encode_value(metadata, where="metadata")}
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, partial)
            partial.replace(path)
        except (OSError, RuntimeError) as error:  # torch reports an unwritable file as a RuntimeError
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise OSError(f"cannot write the {type(self).__name__} to {path} ({type(error).__name__}: {error}); "
                          "save it into a folder you can write to") from error
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> "Estimator":
        """Read an estimator written by :meth:`save`; ready to ``predict``.

        ``PaDiM.load(path)`` insists on a PaDiM; ``AnomalyDetector.load(path)`` returns whatever
        detector the file holds (``Estimator.load(path)`` whatever estimator). The file's
        ``metadata`` comes back as the attribute ``metadata_``.

        Parameters
        ----------
        path : str or Path
        device : str or torch.device, optional
            Where to put the loaded detector; None keeps the saved ``device`` parameter
            (None there means CUDA when available, else CPU).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is damaged or not a saved estimator, holds another class than ``cls``,
            or has another format version than
            :data:`~mvtec_tutorial.models.persistence.FILE_VERSION` (fit again and save).
        """
        path = Path(path).expanduser()
        return estimator_from_file_contents(read_file(path), expected=cls, device=device, path=path)


class AnomalyDetector(Estimator):
    """Base class of the unsupervised methods.

    Parameters
    ----------
    seed : int, default=0
        Seeds every random choice of the method (its own generators, never global state).
    device : str or torch.device, optional
        Where networks run; None means CUDA when available, else CPU.

    Attributes
    ----------
    image_shape_ : tuple of int
        ``(H, W)`` of the training images; set by :meth:`fit`.

    Notes
    -----
    Subclasses define ``_fit(images)`` (images: float32 tensor (N, 3, H, W) in [0, 1] on CPU)
    and ``_predict(images) -> (maps, scores)`` and name learned state with a trailing underscore.
    ``_predict`` gets images at the training size (checked here) and may return ``scores=None``:
    the image scores are then :func:`mvtec_tutorial.metrics.image_scores` of the maps, with the
    method's ``top_k_fraction`` parameter when it has one. ``image_shape_`` is set after ``_fit``
    returns and marks the detector fitted; ``_fit`` must not call public methods that need it.
    ``fit`` deletes that state before calling ``_fit``, so refitting starts from scratch. Public
    methods other than ``predict`` that need learned state call :meth:`_check_fitted` first.
    Networks stored as learned state must record their constructor arguments in a ``config``
    dict, so :meth:`load` can rebuild them before loading their weights.
    """

    #: The method's names in the benchmark, each with the parameters it fixes, e.g.
    #: ``{"ae_ssim": {"loss": "ssim"}, "ae_l2": {"loss": "l2"}}``. A class declares its own (a
    #: subclass does not inherit them); an empty dict keeps the class out of the benchmark.
    benchmark_names: dict[str, dict[str, Any]] = {}
    #: Keyword arguments per schedule and category kind, ``{schedule: {kind: settings}}`` for every
    #: schedule of :data:`SCHEDULES`; the kinds named are the categories the method applies to.
    schedules: dict[str, dict[str, dict[str, Any]]] = {}
    #: Whether the method was published after the MVTec AD paper (2019): notebook 08 ranks the
    #: paper's methods (and the mean-image baseline), notebooks 09 and later add these
    #: (:func:`mvtec_tutorial.benchmark.after_2019`).
    after_2019: bool = False
    #: Whether the benchmark keeps predictions beside the fit (:func:`mvtec_tutorial.cache.predict`):
    #: for methods whose prediction costs minutes (AnoGAN's latent search), not for those that take seconds.
    cache_predictions: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__dict__.get("benchmark_names", {})
        if not names:
            return
        schedules = cls.__dict__.get("schedules", {})
        kinds = {tuple(table) for table in schedules.values()}
        if sorted(schedules) != sorted(SCHEDULES) or len(kinds) != 1 or not set(*kinds) <= set(KINDS) or not [*kinds][0]:
            raise TypeError(f"{cls.__qualname__} must declare `schedules` as {{schedule: {{kind: settings}}}} with "
                            f"the schedules {SCHEDULES} and the same kinds (of {KINDS}) in each")
        for name in names:
            known = _METHODS.get(name)
            if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"{cls.__qualname__} declares the benchmark name {name!r}, which "
                                f"{known.__module__}.{known.__qualname__} has; choose another name")
            _METHODS[name] = cls

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        """The category kinds the method applies to (those of its :attr:`schedules`)."""
        return tuple(next(iter(cls.schedules.values()), {}))

    @classmethod
    def recommended_settings(cls, kind: str, *, schedule: str = "cpu") -> dict[str, Any]:
        """Keyword arguments the course uses for a category ``kind`` on a ``schedule``.

        Parameters
        ----------
        kind : {"texture", "object"}
            :attr:`mvtec_tutorial.data.CategoryInfo.kind`.
        schedule : {"quick", "cpu", "paper"}, default="cpu", keyword-only
            See :data:`SCHEDULES`.

        Raises
        ------
        ValueError
            For an unknown schedule, or a kind the method does not apply to.
        """
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")
        if kind not in cls.kinds():
            raise ValueError(f"unknown kind {kind!r} for {cls.__name__}; it applies to "
                             f"{' and '.join(cls.kinds()) or 'no'} categories (see data.category_info)")
        return dict(cls.schedules[schedule][kind])

    def __init__(self, *, seed: int = 0, device: str | torch.device | None = None) -> None:
        self.seed = seed
        self.device = device

    def fit(self, train_dataset: Any, *, progress: bool = True) -> "AnomalyDetector":
        """Learn normality from defect-free images and return ``self``.

        Parameters
        ----------
        train_dataset : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]
            Normal images only. Fitting again forgets everything learned before.
        progress : bool, default=True
            Show progress bars (also while predicting, unless ``predict`` is told otherwise).

        Raises
        ------
        TypeError, ValueError
            For a ``seed`` that is not an integer >= 0, images in another form or shape than above
            (the message says how to load them), or a hyperparameter that breaks the method.
        """
        check_scalar(self.seed, "seed", low=0, integer=True,
                     hint="it seeds the method's own random generators; pass e.g. seed=0")
        images = as_images(train_dataset, progress=progress)
        self._forget()
        self._progress = progress
        try:
            self._fit(images)
        except BaseException:
            self._forget()
            raise
        # Set last: it marks the detector fitted (_check_fitted), so a failed _fit leaves nothing.
        self.image_shape_ = tuple(images.shape[-2:])
        return self

    def predict(self, images: Any, *, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Score images; the detector itself is left unchanged.

        Parameters
        ----------
        images : Dataset of item dicts, or tensor/ndarray (N, 3, H, W) float in [0, 1]
            At the size of the training images (:attr:`image_shape_`).
        progress : bool, optional
            Show progress bars; None keeps what ``fit`` was told (True for a loaded detector).

        Returns
        -------
        maps : ndarray of shape (N, H, W), float32
            Per-pixel anomaly scores at the input resolution; higher = more anomalous.
        scores : ndarray of shape (N,), float32
            Image anomaly scores; higher = more anomalous. Unless the method defines its own,
            :func:`mvtec_tutorial.metrics.image_scores` of the maps with the method's
            ``top_k_fraction`` (the maximum for methods without that parameter).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            For images of another size than the training images.
        """
        self._check_fitted()
        if progress is not None:
            self._progress = progress
        images = as_images(images, progress=self._progress)
        if tuple(images.shape[-2:]) != tuple(self.image_shape_):
            raise ValueError(f"images are {tuple(images.shape[-2:])} px but this {type(self).__name__} was fitted "
                             f"on {tuple(self.image_shape_)} px images; load test images at the training "
                             f"image_size ({self.image_shape_[0]} for square images)")
        maps, scores = self._predict(images)
        maps = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, dtype=np.float32)
        if scores is None:
            scores = metrics.image_scores(maps, top_k_fraction=getattr(self, "top_k_fraction", None))
        scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float32)
        expected = (images.shape[0], *images.shape[-2:])
        if maps.shape != expected or scores.shape != expected[:1]:
            raise RuntimeError(f"{type(self).__name__} returned maps {maps.shape} and scores {scores.shape}; "
                               f"expected {expected} and {expected[:1]}")
        return maps, scores

    def _fit(self, images: torch.Tensor) -> None:
        raise NotImplementedError

    def _predict(self, images: torch.Tensor) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None]:
        """Maps (N, H, W) and image scores (N,) of images at the training size; scores None for the default."""
        raise NotImplementedError
