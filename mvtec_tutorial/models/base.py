"""The one interface every unsupervised method follows, scikit-learn style, and saving fitted methods.

``Method(*, seed=0, device=None, **hyperparameters)`` stores its parameters only;
``fit(train_dataset)`` learns from normal images and returns ``self``;
``predict(images)`` returns ``(maps, scores)``: float32 numpy arrays of shape (N, H, W) at the
input resolution and (N,), higher meaning more anomalous. Subclasses implement ``_fit`` and
``_predict`` on image tensors; this class does the checking and conversion once for all.

Detectors are scikit-learn estimators (``get_params``, ``set_params``, ``sklearn.base.clone``)
and can be saved and loaded (:meth:`AnomalyDetector.save`, :meth:`AnomalyDetector.load`) as files
that ``torch.load(..., weights_only=True)`` reads: tensors and plain values only, never pickled code.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.base
import torch
from torch import nn

from mvtec_tutorial import __version__, metrics
from mvtec_tutorial.data import as_images
from mvtec_tutorial.settings import get_device, source_hash

#: What every saved detector starts with, and the format version: :meth:`AnomalyDetector.load` reads
#: files of this version written by any package version, and refuses other versions. Raise it when
#: the file layout or the meaning of a stored attribute changes (then no old file is misread).
FILE_KIND, FILE_VERSION = "mvtec_tutorial.detector", 2
#: Why each earlier version cannot be read; the refusal says so.
OLD_VERSIONS = {1: "version 1 stored the progress-bar flag as learned state (progress_) and was read only by "
                   "the package version that wrote it"}
# Classes a saved file may name for its parts: our own networks and detectors, scikit-learn's estimators.
_LOADABLE_PACKAGES = ("mvtec_tutorial.", "sklearn.")


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


class AnomalyDetector(sklearn.base.BaseEstimator):
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

    #: Whether fit and predict show progress bars: a run flag (``fit``'s and ``predict``'s ``progress``),
    #: neither a parameter that changes results nor learned state, so never saved or part of a cache key.
    _progress = True

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
            Show progress bars (also while predicting, unless ``predict`` is told otherwise).
        """
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

    def _forget(self) -> None:
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)

    def _check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless :meth:`fit` (or :meth:`load`) has run."""
        if not hasattr(self, "image_shape_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

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

    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Write the fitted detector to ``path`` and return the path.

        The file holds the class name, :meth:`get_params`, the package version and source hash,
        every learned attribute (tensors, arrays, plain values, networks as state dicts) and
        ``metadata`` (plain values, e.g. ``fit_seconds``). It is written to a temporary file first
        and renamed, so an interrupted save never leaves a half-written file behind. ``~`` in
        ``path`` is the home folder. The file format has a version (:data:`FILE_VERSION`); the
        package version and source hash are recorded for the reader, not checked on loading.

        Raises
        ------
        NotFittedError
            If the detector is not fitted.
        TypeError
            If a parameter or learned attribute cannot be stored as plain values, or the class (or a
            network it holds) is defined outside this package, so :meth:`load` could never read it back.
        OSError
            If the file cannot be written there (the message names the path).
        """
        self._check_fitted()
        path = Path(path).expanduser()
        payload = {"format": FILE_KIND, "format_version": FILE_VERSION, "package_version": __version__,
                   "source_hash": source_hash(), **_encode_estimator(self, where=type(self).__name__),
                   "metadata": _encode(metadata, where="metadata")}
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(payload, partial)
            partial.replace(path)
        except (OSError, RuntimeError) as error:  # torch reports an unwritable file as a RuntimeError
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
            raise OSError(f"cannot write the detector to {path} ({type(error).__name__}: {error}); "
                          "save it into a folder you can write to") from error
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> "AnomalyDetector":
        """Read a detector written by :meth:`save`; ready to ``predict``.

        ``PaDiM.load(path)`` insists on a PaDiM; ``AnomalyDetector.load(path)`` returns whatever
        method the file holds. The file's ``metadata`` comes back as the attribute ``metadata_``.

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
            If the file is damaged or not a saved detector, holds another method than ``cls``,
            or has another format version than :data:`FILE_VERSION` (fit again and save).
        """
        path = Path(path).expanduser()
        detector = detector_from_file_contents(read_detector_file(path), device=device, path=path)
        if not isinstance(detector, cls):
            raise ValueError(f"{path} holds a {type(detector).__name__}, not a {cls.__name__}; load it with "
                             f"{type(detector).__name__}.load or AnomalyDetector.load")
        return detector


def read_detector_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a file written by :meth:`AnomalyDetector.save` (weights_only loading).

    Raises
    ------
    FileNotFoundError, ValueError
        As :meth:`AnomalyDetector.load`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fit a detector and save it there first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable saved detector ({type(error).__name__}: {error}); "
                         "it is damaged or was written by something else: fit again and save") from error
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith(FILE_KIND):
        raise ValueError(f"{path} was not written by AnomalyDetector.save (format {FILE_KIND})")
    # Version 1 wrote the version into the format string ("mvtec_tutorial.detector/1").
    version = payload.get("format_version", str(payload["format"]).rpartition("/")[2])
    if version != FILE_VERSION:
        reason = OLD_VERSIONS.get(int(version) if str(version).isdigit() else -1, "a newer package wrote it")
        raise ValueError(f"{path} is a saved detector of format version {version} (by mvtec_tutorial "
                         f"{payload.get('package_version', '?')}); this package reads version {FILE_VERSION} "
                         f"({reason}): fit again and save")
    return payload


def detector_from_file_contents(payload: dict[str, Any], *, device: str | torch.device | None = None,
                                path: str | Path = "the file") -> AnomalyDetector:
    """The detector that :func:`read_detector_file` returned the contents of, with ``metadata_`` set.

    Raises
    ------
    ValueError
        Naming ``path``, if the contents are damaged (missing or malformed entries).
    """
    try:
        detector = _decode_estimator(payload, device=device)
        metadata = _decode(payload["metadata"], device=None)
    except (TypeError, KeyError, AttributeError, IndexError, RuntimeError) as error:
        raise ValueError(f"{path} is a damaged saved detector ({type(error).__name__}: {error}); "
                         "fit again and save") from error
    if not isinstance(detector, AnomalyDetector):
        raise ValueError(f"{path} holds a {type(detector).__name__}, not an anomaly detector")
    detector.metadata_ = metadata
    return detector


def _encode_estimator(estimator: Any, *, where: str) -> dict[str, Any]:
    """Class, parameters and learned state of an estimator as plain values and tensors."""
    params = estimator.get_params(deep=False)
    if isinstance(params.get("device"), torch.device):
        params["device"] = str(params["device"])
    state = {name: value for name, value in vars(estimator).items()
             if name.endswith("_") and not name.startswith("_")}
    _check_loadable(type(estimator), where=where)
    return {"class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
            "params": _encode(params, where=f"{where} parameters"),
            "state": {name: _encode(value, where=f"{where}.{name}") for name, value in state.items()}}


def _encode(value: Any, *, where: str) -> Any:
    """Turn learned state into what ``torch.load(weights_only=True)`` reads back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.detach() if value.device.type == "cpu" else {"__accelerator_tensor__": value.detach().cpu()}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"cannot save {where}: an object array")
        if value.flags.f_contiguous and not value.flags.c_contiguous:
            # Keep the memory layout: BLAS rounds differently for another layout (e.g. PCA components).
            return {"__fortran_ndarray__": torch.from_numpy(value.T.copy())}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"cannot save {where}: dict keys must be strings")
        return {"__dict__": {key: _encode(item, where=f"{where}[{key!r}]") for key, item in value.items()}}
    if isinstance(value, nn.Module):
        if not isinstance(getattr(value, "config", None), dict):
            raise TypeError(f"cannot save {where}: the network {type(value).__name__} records no `config` "
                            "(its constructor arguments) to rebuild it from")
        _check_loadable(type(value), where=where)
        on_accelerator = any(t.device.type != "cpu" for t in [*value.parameters(), *value.buffers()])
        return {"__module__": f"{type(value).__module__}.{type(value).__qualname__}",
                "config": _encode(value.config, where=f"{where}.config"),
                "state_dict": {key: tensor.detach() for key, tensor in value.state_dict().items()},
                "on_accelerator": on_accelerator, "training": value.training}
    if isinstance(value, sklearn.base.BaseEstimator):
        return {"__estimator__": _encode_estimator(value, where=where)}
    raise TypeError(f"cannot save {where} of type {type(value).__name__}; store tensors, arrays, "
                    "plain values, networks with a `config` or scikit-learn estimators")


def _check_loadable(cls: type, *, where: str) -> None:
    """Refuse at save time a class that :func:`_loadable_class` would refuse at load time."""
    if not f"{cls.__module__}.{cls.__qualname__}".startswith(_LOADABLE_PACKAGES) or "<locals>" in cls.__qualname__:
        raise TypeError(f"cannot save {where}: its class {cls.__module__}.{cls.__qualname__} is defined outside "
                        f"mvtec_tutorial and scikit-learn, and loading reads only their classes (never code "
                        "from a file), so the file could not be loaded; save the detector's learned arrays "
                        "yourself (e.g. with numpy.savez) or add the method to the package")


def _loadable_class(qualified_name: str, base: type) -> type:
    """The class a saved file names, only from this package or scikit-learn and of the expected kind."""
    module_name, _, class_name = qualified_name.rpartition(".")
    if not qualified_name.startswith(_LOADABLE_PACKAGES):
        raise ValueError(f"a saved detector may not name the class {qualified_name}")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{qualified_name} is not a {base.__name__} of this version; fit again and save")
    return cls


def _decode_estimator(payload: dict[str, Any], *, device: str | torch.device | None) -> Any:
    cls = _loadable_class(payload["class"], sklearn.base.BaseEstimator)
    params = _decode(payload["params"], device=None)
    if device is not None and "device" in params:
        params["device"] = str(device)
    estimator = cls(**params)
    # Tensors saved from an accelerator go to this detector's device; CPU tensors stay on the CPU.
    target = estimator.device_ if isinstance(estimator, AnomalyDetector) else torch.device("cpu")
    for name, value in payload["state"].items():
        setattr(estimator, name, _decode(value, device=target))
    return estimator


def _decode(value: Any, *, device: torch.device | None) -> Any:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list):
        return [_decode(item, device=device) for item in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if "__fortran_ndarray__" in value:
        return value["__fortran_ndarray__"].numpy().T
    if "__accelerator_tensor__" in value:
        return value["__accelerator_tensor__"].to(device or "cpu")
    if "__tuple__" in value:
        return tuple(_decode(item, device=device) for item in value["__tuple__"])
    if "__dict__" in value:
        return {key: _decode(item, device=device) for key, item in value["__dict__"].items()}
    if "__estimator__" in value:
        return _decode_estimator(value["__estimator__"], device=device)
    if "__module__" in value:
        cls = _loadable_class(value["__module__"], nn.Module)
        config = _decode(value["config"], device=None)
        if "device" in inspect.signature(cls).parameters:  # e.g. FeatureExtractor: built where it will run
            config["device"] = device
        with torch.random.fork_rng(devices=[]):  # the layers' random initialisation must not touch global state
            module = cls(**config)
        module.load_state_dict(value["state_dict"])
        module.train(value["training"])  # batch norm and dropout behave as they did when saved
        if value["on_accelerator"] and device is not None:
            module.to(device)
        return module
    raise ValueError(f"unknown entry {sorted(value)} in a saved detector; fit again and save")
