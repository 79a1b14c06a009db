"""Fit once, reuse everywhere: a folder of fitted detectors keyed by everything that changes a fit.

Training an autoencoder or a GAN takes minutes to tens of minutes on a CPU. :func:`fit` looks for
a detector fitted earlier with exactly the same inputs and loads it instead of training again,
so the benchmark notebook reuses what the method notebooks fitted, and a second run of the
course is quick. The key (:func:`fit_key`) covers

- the method's class and every parameter (``get_params``), with the device it runs on; a parameter
  that is itself a fitted detector (f-AnoGAN's ``pretrained`` GAN) counts by its class, parameters
  and a SHA-256 of everything it learned,
- the training images themselves (a SHA-256 of their pixels: data root, category, image size,
  split seed and any edit of a file all change it),
- the package's code that fitting runs (:func:`mvtec_tutorial.settings.source_hash`; edits to
  plots, metrics or reports do not count) and torch's version,

so a stale fit is never served. The folder is ``$MVTEC_TUTORIAL_CACHE`` or
``~/.cache/mvtec_tutorial/fits``; ``MVTEC_TUTORIAL_CACHE=off`` (or ``none``, ``disabled``, ``0``,
``false``, ``no``) turns caching off, and :func:`clear` (``make clean-cache``) deletes the fits it
wrote. The cache lists every file it writes in the folder's manifest (:data:`MANIFEST_NAME`), so
a folder shared with other files loses nothing else, and a folder without that manifest is never
cleared.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mvtec_tutorial.data import as_images
from mvtec_tutorial.models.base import AnomalyDetector, Estimator
from mvtec_tutorial.models.persistence import encode_estimator, estimator_from_file_contents, read_file
from mvtec_tutorial.settings import FALSE_VALUES, TRUE_VALUES, source_hash

#: Environment variable naming the cache folder; "off", "none", "disabled" (or "0", "false", "no")
#: disable the cache, "on" (or "1", "true", "yes") and empty mean the default folder.
CACHE_ENV = "MVTEC_TUTORIAL_CACHE"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "mvtec_tutorial" / "fits"
_OFF = (*FALSE_VALUES, "none", "disabled")
_SUFFIX = ".pt"
#: The cache's manifest in its folder: a header line, then the name of every file the cache wrote.
MANIFEST_NAME = ".mvtec_tutorial_cache"
_MANIFEST_HEADER = "mvtec_tutorial fit cache: files written by mvtec_tutorial.cache (make clean-cache deletes them)\n"
#: How the cache names its files: ``<Class>-<32 hex digits of the fit's key>.pt`` for a fit, with
#: ``-predictions-<32 hex digits of the images>`` before ``.pt`` for a kept prediction.
_FILE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*-[0-9a-f]{32}(-predictions-[0-9a-f]{32})?\.pt")
#: Attributes that record how a fit was run, not what it learned (left out of a nested detector's digest).
_RUN_ATTRIBUTES = ("metadata_",)


def cache_dir() -> Path | None:
    """The cache folder from ``MVTEC_TUTORIAL_CACHE`` (default ``~/.cache/mvtec_tutorial/fits``); None when off."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    return Path(value).expanduser() if value and value.lower() not in TRUE_VALUES else DEFAULT_CACHE_DIR


@dataclass(frozen=True)
class CachedFit:
    """What :func:`fit` did.

    Attributes
    ----------
    key : str
        The cache key (hex SHA-256), see :func:`fit_key`.
    path : Path or None
        The cache file; None when caching is off.
    hit : bool
        True when the fit was loaded from the cache instead of computed.
    fit_seconds : float
        Wall time of the original fit (for a hit: as measured when it was computed).
    fit_cpu_seconds : float
        CPU time of the original fit, likewise (NaN for files that did not record it).
    """

    key: str
    path: Path | None
    hit: bool
    fit_seconds: float
    fit_cpu_seconds: float = float("nan")


def fit_key(detector: Estimator, images: torch.Tensor, labels: np.ndarray | None = None) -> str:
    """Hex SHA-256 of everything that changes what ``detector.fit(images)`` (or ``fit(images, labels)``) learns.

    Parameters
    ----------
    detector : AnomalyDetector or SupervisedClassifier
        Unfitted or fitted; only its class and parameters are read.
    images : torch.Tensor of shape (N, 3, H, W), float32 in [0, 1]
        The training images.
    labels : array-like of shape (N,), int, optional
        The training labels of a classifier.

    Examples
    --------
    >>> from mvtec_tutorial import models
    >>> images = torch.zeros(2, 3, 8, 8)
    >>> fit_key(models.MeanImage(), images) == fit_key(models.MeanImage(), images.clone())
    True
    >>> fit_key(models.MeanImage(), images) == fit_key(models.MeanImage(std_floor=0.1), images)
    False
    """
    params = _identifying_params(detector)
    params["device"] = detector.device_.type  # None and "cpu" fit the same on a CPU-only machine
    pixels = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
    identity = {
        "class": f"{type(detector).__module__}.{type(detector).__qualname__}",
        "params": json.loads(json.dumps(params, sort_keys=True, default=repr)),
        "images": [list(pixels.shape), hashlib.sha256(pixels.tobytes()).hexdigest()],
        **({} if labels is None else {"labels": np.asarray(labels, dtype=np.int64).tolist()}),
        "source": source_hash(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _identifying_params(detector: AnomalyDetector) -> dict[str, Any]:
    """``get_params``, with every parameter that is a detector replaced by what identifies its fit.

    A nested detector is described by its class, its own identifying parameters and a SHA-256 of
    its learned state: two GANs with equal settings but trained on other images differ, and a
    cached f-AnoGAN's ``pretrained`` GAN, read back from the file, equals the one it was fitted with.
    """
    def identify(value: Any) -> Any:
        if not isinstance(value, AnomalyDetector):
            return value
        learned = hashlib.sha256()
        _update_digest(learned, {name: state for name, state in encode_estimator(value, where="key")["state"].items()
                                 if name not in _RUN_ATTRIBUTES})
        return {"class": f"{type(value).__module__}.{type(value).__qualname__}",
                "params": _identifying_params(value), "learned_state": learned.hexdigest()}

    return {name: identify(value) for name, value in detector.get_params(deep=False).items()}


def _update_digest(digest: Any, encoded: Any) -> None:
    """Feed an encoded learned state (tensors, plain values, lists and dicts of them) to ``digest``."""
    if isinstance(encoded, torch.Tensor):
        tensor = encoded.detach().cpu().contiguous()
        digest.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(encoded, dict):
        for key in sorted(encoded):
            digest.update(f"key {key}".encode())
            _update_digest(digest, encoded[key])
    elif isinstance(encoded, list):
        digest.update(f"list {len(encoded)}".encode())
        for item in encoded:
            _update_digest(digest, item)
    else:
        digest.update(f"value {json.dumps(encoded, sort_keys=True, default=repr)}".encode())


def fit(detector: Estimator, images: Any, labels: Any = None, *, directory: str | Path | None | bool = True,
        progress: bool = True) -> CachedFit:
    """Fit ``detector`` on ``images`` in place, or load the identical fit from the cache.

    Parameters
    ----------
    detector : AnomalyDetector or SupervisedClassifier
        Fitted in place, exactly as ``detector.fit(images)`` (a classifier: ``fit(images, labels)``)
        would (same learned state).
    images : Dataset, tensor or ndarray (N, 3, H, W), float in [0, 1]
        Normal training images (a classifier's labelled training images).
    labels : array-like of shape (N,), int, optional
        A classifier's training labels (0 good, 1 defective); None for a detector.
    directory : str, Path, True or False, default=True
        The cache folder; True means :func:`cache_dir` (which may be off), False never caches.
    progress : bool, default=True
        Progress bars while fitting (and, for the fitted detector, while predicting).

    Returns
    -------
    CachedFit

    Notes
    -----
    A cache file that cannot be read (damaged, or written by another package version) is
    reported, deleted and replaced by a fresh fit. Files are written atomically, so two
    processes fitting the same key at once both end with a complete file.
    """
    images = as_images(images, progress=progress)
    folder = _folder(directory)
    key = fit_key(detector, images, labels)
    path = None if folder is None else folder / f"{type(detector).__name__}-{key[:32]}{_SUFFIX}"
    if path is not None and path.is_file():
        try:
            seconds, cpu_seconds = _restore(detector, read_file(path), progress=progress)
            return CachedFit(key, path, True, seconds, cpu_seconds)
        except (ValueError, TypeError, KeyError, RuntimeError) as error:
            print(f"ignoring the unreadable cached fit {path} ({error}); fitting again")
            path.unlink(missing_ok=True)
    start, start_cpu = time.perf_counter(), time.process_time()
    detector.fit(images, *([] if labels is None else [labels]), progress=progress)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    if path is not None:
        _record(path)
        try:
            detector.save(path, fit_seconds=seconds, fit_cpu_seconds=cpu_seconds, key=key)
        except TypeError as error:  # e.g. a class of the user's own, which a file could not bring back
            print(f"not caching this fit: {error}")
    return CachedFit(key, path, False, seconds, cpu_seconds)


def _folder(directory: str | Path | None | bool) -> Path | None:
    """The cache folder ``directory`` means: True :func:`cache_dir` (which may be off), False or None none."""
    if directory is True:
        return cache_dir()
    return None if directory is False or directory is None else Path(directory).expanduser()


@dataclass(frozen=True)
class CachedPrediction:
    """What :func:`predict` returned and did.

    Attributes
    ----------
    maps : ndarray of shape (N, H, W), float32
    scores : ndarray of shape (N,), float32
    seconds : float
        Wall time of the prediction (for a hit: as measured when it was computed).
    hit : bool
        True when the prediction was loaded from the cache instead of computed.
    """

    maps: np.ndarray
    scores: np.ndarray
    seconds: float
    hit: bool


def predict(detector: AnomalyDetector, images: Any, *, fitted: CachedFit, directory: str | Path | None | bool = True,
            progress: bool = True) -> CachedPrediction:
    """``detector.predict(images)``, kept beside its fit when the method's prediction costs minutes.

    Only methods that ask for it (:attr:`~mvtec_tutorial.models.base.AnomalyDetector.cache_predictions`,
    AnoGAN's latent search) are cached, and only when their fit is (``fitted.path``). The key is
    the fit's key (:func:`fit_key`: the method, its settings, its training images and the code) and
    a SHA-256 of the images' pixels, so the same fit on the same images gives back the same numbers.

    Parameters
    ----------
    detector : AnomalyDetector
        Fitted by :func:`fit`, which returned ``fitted``.
    images : Dataset, tensor or ndarray (N, 3, H, W), float in [0, 1]
    fitted : CachedFit
    directory : str, Path, True or False, default=True
        As for :func:`fit`.
    progress : bool, default=True

    Returns
    -------
    CachedPrediction
    """
    images = as_images(images, progress=progress)
    folder = _folder(directory)
    path = None
    if folder is not None and fitted.path is not None and type(detector).cache_predictions:
        pixels = np.ascontiguousarray(images.numpy(), dtype=np.float32)
        digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()
        path = folder / f"{type(detector).__name__}-{fitted.key[:32]}-predictions-{digest[:32]}{_SUFFIX}"
    if path is not None and path.is_file():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            return CachedPrediction(stored["maps"].numpy(), stored["scores"].numpy(), float(stored["seconds"]), True)
        except Exception as error:  # torch raises many types for a damaged file; it is recomputed
            print(f"ignoring the unreadable cached prediction {path} ({type(error).__name__}: {error}); "
                  "predicting again")
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    maps, scores = detector.predict(images, progress=progress)
    seconds = time.perf_counter() - start
    if path is not None:
        _record(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        torch.save({"maps": torch.from_numpy(maps), "scores": torch.from_numpy(scores), "seconds": seconds,
                    "fit_key": fitted.key}, partial)
        partial.replace(path)
    return CachedPrediction(maps, scores, seconds, False)


def _record(path: Path) -> None:
    """Add ``path``'s name to its folder's manifest (created with the folder when missing).

    One short line appended per write, so processes filling one cache at once do not lose entries.
    Called before the file is written: a save cut short leaves nothing unlisted.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / MANIFEST_NAME, "a") as file:
        file.write((_MANIFEST_HEADER if file.tell() == 0 else "") + path.name + "\n")


def _restore(detector: Estimator, payload: dict[str, Any], *, progress: bool) -> tuple[float, float]:
    """Put a cache file's learned state into ``detector``; return the original fit's wall and CPU seconds."""
    loaded = estimator_from_file_contents(payload, expected=type(detector), device=detector.device)
    if type(loaded) is not type(detector) or _identifying_params(loaded) != _identifying_params(detector):
        raise ValueError(f"it holds {loaded!r}, not {detector!r}")
    detector._forget()
    for name, value in vars(loaded).items():
        if name.endswith("_") and name != "metadata_":
            setattr(detector, name, value)
    detector._progress = progress
    return (float(loaded.metadata_.get("fit_seconds", float("nan"))),
            float(loaded.metadata_.get("fit_cpu_seconds", float("nan"))))


def clear(directory: str | Path | None = None) -> int:
    """Delete the fits the cache wrote in ``directory`` (default :func:`cache_dir`); return how many were removed.

    Only files listed in the folder's manifest (:data:`MANIFEST_NAME`) and named as the cache names
    them are deleted; everything else in the folder stays. The default folder of a cache older
    than the manifest is cleared by the cache's file names alone.

    Raises
    ------
    FileExistsError
        If the folder holds files but no manifest, so the cache did not create it (nothing is deleted).
    """
    folder = Path(directory).expanduser() if directory is not None else cache_dir()
    if folder is None or not folder.is_dir():
        return 0
    manifest = folder / MANIFEST_NAME
    if manifest.is_file():
        names = set(manifest.read_text().splitlines()[1:])
    elif folder == DEFAULT_CACHE_DIR or not any(folder.iterdir()):
        names = {path.name for path in folder.iterdir()}
    else:
        raise FileExistsError(f"{folder} has no {MANIFEST_NAME}, so the fit cache did not create it; nothing was "
                              "deleted. Pass the cache folder (mvtec_tutorial.cache.cache_dir()) or delete the "
                              "fits yourself")
    removed = 0
    for name in sorted(names):
        path = folder / name
        if _FILE_NAME.fullmatch(name) and path.is_file() and not path.is_symlink():
            path.unlink()
            removed += 1
    if manifest.is_file():
        manifest.write_text(_MANIFEST_HEADER)
    return removed
