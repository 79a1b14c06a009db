"""One file format for every fitted estimator of the package: detectors and classifiers alike.

:meth:`~mvtec_tutorial.models.base.Estimator.save` writes, and
:meth:`~mvtec_tutorial.models.base.Estimator.load` reads, a dict that
``torch.load(..., weights_only=True)`` reads back: tensors and plain values only, never pickled
code. It holds the format and its version, the class name, the parameters (``get_params``), every
learned attribute (tensors, arrays, plain values, networks as their constructor arguments and
state dict, scikit-learn estimators) and free metadata. Classes are looked up only in this package
and scikit-learn. A file is read when its format version is :data:`FILE_VERSION`, whatever package
version wrote it; the package version and source hash it records are for the reader.
"""
from __future__ import annotations

import importlib
import inspect
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import sklearn.base
import torch
from torch import nn

#: What every saved estimator starts with, and the format version: files of this version are read
#: whatever package version wrote them, other versions are refused. Raise it when the file layout
#: or the meaning of a stored attribute changes (then no old file is misread).
FILE_KIND, FILE_VERSION = "mvtec_tutorial.detector", 2
#: Why each earlier version cannot be read; the refusal says so.
OLD_VERSIONS = {1: "version 1 stored the progress-bar flag as learned state (progress_) and was read only by "
                   "the package version that wrote it"}
# Classes a saved file may name for its parts: our own networks and estimators, scikit-learn's estimators.
_LOADABLE_PACKAGES = ("mvtec_tutorial.", "sklearn.")


def read_file(path: str | Path) -> dict[str, Any]:
    """The checked contents of a file written by :meth:`~mvtec_tutorial.models.base.Estimator.save` (weights_only loading).

    Raises
    ------
    FileNotFoundError, ValueError
        As :meth:`~mvtec_tutorial.models.base.Estimator.load`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; fit a detector and save it there first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        # torch >= 2.4 says "Unsupported global: GLOBAL numpy...", older ones "Unsupported class numpy...".
        refused = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(error))
        if isinstance(error, pickle.UnpicklingError) and refused:
            raise ValueError(f"{path} holds a {refused.group(1)} object, which torch.load(..., weights_only=True) "
                             "refuses because unpickling it could run code; it was not written by this package's "
                             "save. If you wrote the file and trust it, read it once with weights_only=False and "
                             "store its arrays as tensors") from error
        detail = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{path} is damaged or not a saved estimator ({type(error).__name__}: {detail}); "
                         "fit again and save") from error
    if not isinstance(payload, dict) or not str(payload.get("format", "")).startswith(FILE_KIND):
        raise ValueError(f"{path} was not written by the package's save (format {FILE_KIND})")
    # Version 1 wrote the version into the format string ("mvtec_tutorial.detector/1").
    version = payload.get("format_version", str(payload["format"]).rpartition("/")[2])
    if version != FILE_VERSION:
        reason = OLD_VERSIONS.get(int(version) if str(version).isdigit() else -1, "a newer package wrote it")
        raise ValueError(f"{path} is a saved detector of format version {version} (by mvtec_tutorial "
                         f"{payload.get('package_version', '?')}); this package reads version {FILE_VERSION} "
                         f"({reason}): fit again and save")
    return payload


def estimator_from_file_contents(payload: dict[str, Any], *, expected: type, device: str | torch.device | None = None,
                                 path: str | Path = "the file") -> Any:
    """The estimator (an ``expected`` instance) :func:`read_file` returned the contents of, with ``metadata_`` set.

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
    if not isinstance(detector, expected):
        raise ValueError(f"{path} holds a {type(detector).__name__}, not a {expected.__name__}; load it with "
                         f"{type(detector).__name__}.load")
    detector.metadata_ = metadata
    return detector


def encode_estimator(estimator: Any, *, where: str) -> dict[str, Any]:
    """Class, parameters and learned state of an estimator as plain values and tensors."""
    params = estimator.get_params(deep=False)
    if isinstance(params.get("device"), torch.device):
        params["device"] = str(params["device"])
    state = {name: value for name, value in vars(estimator).items()
             if name.endswith("_") and not name.startswith("_")}
    _check_loadable(type(estimator), where=where)
    rebuilds = hasattr(estimator, "_build_for_load")  # e.g. a classifier around a torchvision network

    def encode(name: str, value: Any) -> Any:
        if rebuilds and isinstance(value, nn.Module) and not isinstance(getattr(value, "config", None), dict):
            return {"__weights__": {key: tensor.detach() for key, tensor in value.state_dict().items()},
                    "training": value.training}
        return encode_value(value, where=f"{where}.{name}")
    return {"class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
            "params": encode_value(params, where=f"{where} parameters"),
            "state": {name: encode(name, value) for name, value in state.items()}}


def encode_value(value: Any, *, where: str) -> Any:
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
        items = [encode_value(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"cannot save {where}: dict keys must be strings")
        return {"__dict__": {key: encode_value(item, where=f"{where}[{key!r}]") for key, item in value.items()}}
    if isinstance(value, nn.Module):
        if not isinstance(getattr(value, "config", None), dict):
            raise TypeError(f"cannot save {where}: the network {type(value).__name__} records no `config` "
                            "(its constructor arguments) to rebuild it from")
        _check_loadable(type(value), where=where)
        on_accelerator = any(t.device.type != "cpu" for t in [*value.parameters(), *value.buffers()])
        return {"__module__": f"{type(value).__module__}.{type(value).__qualname__}",
                "config": encode_value(value.config, where=f"{where}.config"),
                "state_dict": {key: tensor.detach() for key, tensor in value.state_dict().items()},
                "on_accelerator": on_accelerator, "training": value.training}
    if isinstance(value, sklearn.base.BaseEstimator):
        return {"__estimator__": encode_estimator(value, where=where)}
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
    # Tensors saved from an accelerator go to this estimator's device; CPU tensors stay on the CPU.
    target = getattr(estimator, "device_", torch.device("cpu"))
    for name, value in payload["state"].items():
        if isinstance(value, dict) and "__weights__" in value:  # a network the estimator builds itself
            estimator._build_for_load()
            getattr(estimator, name).load_state_dict(value["__weights__"])
            getattr(estimator, name).train(value["training"])
        else:
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
