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

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.base
import torch
from torch import nn

from mvtec_tutorial import __version__
from mvtec_tutorial.checks import check_scalar
from mvtec_tutorial.data import as_images
from mvtec_tutorial.settings import get_device, source_hash

#: Written into every saved detector; :meth:`AnomalyDetector.load` refuses other formats.
FILE_FORMAT = "mvtec_tutorial.detector/1"
# Classes a saved file may name for its parts: our own networks and detectors, scikit-learn's estimators.
_LOADABLE_PACKAGES = ("mvtec_tutorial.", "sklearn.")


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
    ``fit`` deletes that state before calling ``_fit``, so refitting starts from scratch. Public
    methods other than ``predict`` that need learned state call :meth:`_check_fitted` first.
    Networks stored as learned state must record their constructor arguments in a ``config``
    dict, so :meth:`load` can rebuild them before loading their weights.
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
            Show progress bars (also while predicting).

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
        # Set before _fit, so helpers that _fit calls pass _check_fitted; a failed fit leaves nothing.
        self.progress_, self.image_shape_ = progress, tuple(images.shape[-2:])
        try:
            self._fit(images)
        except BaseException:
            self._forget()
            raise
        return self

    def _forget(self) -> None:
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)

    def _check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless :meth:`fit` (or :meth:`load`) has run."""
        if not hasattr(self, "image_shape_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def predict(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        """Score images; the detector itself is left unchanged.

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
        self._check_fitted()
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

    def save(self, path: str | Path, **metadata: Any) -> Path:
        """Write the fitted detector to ``path`` and return the path.

        The file holds the class name, :meth:`get_params`, the package version and source hash,
        every learned attribute (tensors, arrays, plain values, networks as state dicts) and
        ``metadata`` (plain values, e.g. ``fit_seconds``). It is written to a temporary file first
        and renamed, so an interrupted save never leaves a half-written file behind.

        Raises
        ------
        NotFittedError
            If the detector is not fitted.
        TypeError
            If a parameter or learned attribute cannot be stored as plain values.
        """
        self._check_fitted()
        path = Path(path)
        payload = {"format": FILE_FORMAT, "package_version": __version__, "source_hash": source_hash(),
                   **_encode_estimator(self, where=type(self).__name__),
                   "metadata": _encode(metadata, where="metadata")}
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        torch.save(payload, partial)
        partial.replace(path)
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
            or was saved by another version of the package (fit again and save).
        """
        detector = detector_from_file_contents(read_detector_file(path), device=device)
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fit a detector and save it there first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise ValueError(f"{path} is not a readable saved detector ({type(error).__name__}: {error}); "
                         "it is damaged or was written by something else: fit again and save") from error
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ValueError(f"{path} was not written by AnomalyDetector.save (format {FILE_FORMAT})")
    if payload["package_version"] != __version__:
        raise ValueError(f"{path} was saved by mvtec_tutorial {payload['package_version']}, this is {__version__}; "
                         "learned state may differ between versions: fit again and save")
    return payload


def detector_from_file_contents(payload: dict[str, Any], *, device: str | torch.device | None = None
                                ) -> AnomalyDetector:
    """The detector that :func:`read_detector_file` returned the contents of, with ``metadata_`` set."""
    detector = _decode_estimator(payload, device=device)
    if not isinstance(detector, AnomalyDetector):
        raise ValueError(f"the file holds a {type(detector).__name__}, not an anomaly detector")
    detector.metadata_ = _decode(payload["metadata"], device=None)
    return detector


def _encode_estimator(estimator: Any, *, where: str) -> dict[str, Any]:
    """Class, parameters and learned state of an estimator as plain values and tensors."""
    params = estimator.get_params(deep=False)
    if isinstance(params.get("device"), torch.device):
        params["device"] = str(params["device"])
    state = {name: value for name, value in vars(estimator).items()
             if name.endswith("_") and not name.startswith("_")}
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
        on_accelerator = any(t.device.type != "cpu" for t in [*value.parameters(), *value.buffers()])
        return {"__module__": f"{type(value).__module__}.{type(value).__qualname__}",
                "config": _encode(value.config, where=f"{where}.config"),
                "state_dict": {key: tensor.detach() for key, tensor in value.state_dict().items()},
                "on_accelerator": on_accelerator, "training": value.training}
    if isinstance(value, sklearn.base.BaseEstimator):
        return {"__estimator__": _encode_estimator(value, where=where)}
    raise TypeError(f"cannot save {where} of type {type(value).__name__}; store tensors, arrays, "
                    "plain values, networks with a `config` or scikit-learn estimators")


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
