"""Course-wide settings: where the data lives, fast mode, seeds and devices.

Every notebook starts with :func:`describe`, so a saved or shared run says what it ran on.
Nothing here runs on import.
"""
from __future__ import annotations

import functools
import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

#: Environment variable pointing at a real MVTec AD root (the folder holding ``bottle/`` etc.).
ROOT_ENV = "MVTEC_ROOT"
#: Environment variable for where the synthetic stand-in dataset is built.
SYNTHETIC_ROOT_ENV = "MVTEC_TUTORIAL_SYNTHETIC_ROOT"
#: ``MVTEC_TUTORIAL_FAST=1`` (set by ``make test``) shrinks every notebook's run sizes.
FAST_ENV = "MVTEC_TUTORIAL_FAST"
#: Spellings an on/off environment variable accepts (case-insensitive, surrounding spaces ignored).
TRUE_VALUES, FALSE_VALUES = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
DEFAULT_SYNTHETIC_ROOT = Path.home() / ".cache" / "mvtec_tutorial" / "synthetic"
#: Threads that scikit-learn, SciPy and scikit-image may use for BLAS inside the methods (PCA,
#: k-means, Gaussian mixtures, alignment). Their matrices are small, so extra threads mostly wait
#: on each other: on a busy 2-core machine one thread fitted the feature dictionary's PCA and
#: k-means 10 times faster than two, the GMMs 40 times faster, the variation model 3 times.
BLAS_THREADS = 1


def using_real_data() -> bool:
    """Return True when ``MVTEC_ROOT`` is set, i.e. the course runs on real MVTec AD."""
    return bool(os.environ.get(ROOT_ENV))


def synthetic_root() -> Path:
    """Folder of the synthetic dataset: ``MVTEC_TUTORIAL_SYNTHETIC_ROOT`` or ``~/.cache/mvtec_tutorial/synthetic``."""
    return user_path(os.environ.get(SYNTHETIC_ROOT_ENV) or DEFAULT_SYNTHETIC_ROOT)


def user_path(path: str | os.PathLike) -> Path:
    """Resolve a path the user gave, once: ``~`` expanded, a relative path made absolute.

    A relative path means the folder the command was run in (the current directory now); made
    absolute when it is given, it keeps that meaning if the working directory changes later.
    Symbolic links are kept, so messages show the names the user chose. ``make course`` runs each
    notebook's kernel in ``notebooks/``, so the Makefile exports ``MVTEC_ROOT`` absolute.
    """
    return Path(path).expanduser().absolute()


def data_root() -> Path:
    """Return the dataset root the course uses.

    ``MVTEC_ROOT`` when it is set (real MVTec AD; it must exist; a relative path is taken from the
    current directory, see :func:`user_path`). Otherwise the synthetic
    stand-in, which is built with :func:`mvtec_tutorial.synthetic.make_dataset` the first
    time (a few seconds) and reused afterwards.

    Raises
    ------
    FileNotFoundError
        If ``MVTEC_ROOT`` names a folder that does not exist.
    """
    real = os.environ.get(ROOT_ENV)
    if real:
        root = user_path(real)
        if not root.is_dir():
            raise FileNotFoundError(
                f"{ROOT_ENV}={real!r} ({root}) is not a folder. Point it at the folder that holds the "
                "category folders (e.g. bottle/), run `make data` to download MVTec AD, or unset "
                f"{ROOT_ENV} to use the built-in synthetic dataset."
            )
        return root
    from mvtec_tutorial.synthetic import make_dataset  # deferred: only needed without real data

    return make_dataset(synthetic_root(), progress=False)


def env_flag(name: str, *, default: bool = False) -> bool:
    """Read an on/off environment variable: 1/true/yes/on or 0/false/no/off, any case; unset or empty is ``default``.

    Raises
    ------
    ValueError
        On any other value, naming the variable, so a typo never leaves a switch silently off.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in TRUE_VALUES or value in FALSE_VALUES:
        return value in TRUE_VALUES
    raise ValueError(f"{name}={os.environ[name]!r} is not an on/off value; set it to one of "
                     f"{', '.join(TRUE_VALUES)} (on) or {', '.join(FALSE_VALUES)} (off), or unset it")


def fast_mode() -> bool:
    """Return True when ``MVTEC_TUTORIAL_FAST`` is on (1, true, yes, on): notebooks shrink run sizes (``make test``)."""
    return env_flag(FAST_ENV)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (for notebooks; the package uses its own)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a :class:`torch.device`; ``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


#: Modules that never run while a detector is fitted (evaluation, reports, plots, the cache itself).
#: An edit there changes no fit, so :func:`source_hash` leaves them out and cached fits survive it.
#: (``metrics.py`` counts: detectors score images with its :func:`~mvtec_tutorial.metrics.image_scores`.)
NOT_RUN_BY_FIT = ("benchmark.py", "cache.py", "quiz.py", "supervised_benchmark.py", "thresholds.py", "viz.py")


@functools.cache
def source_hash() -> str:
    """SHA-256 of the package's Python sources that fitting runs (all but :data:`NOT_RUN_BY_FIT`).

    Saved detectors and the fit cache record it, so a fit made by other model, data or training
    code is never reused, while a fix to a plot or a report does not throw away an hour of fits.
    """
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative not in NOT_RUN_BY_FIT:
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def describe(category: str, seed: int) -> None:
    """Print the settings a notebook runs with: data source, category, device, seed, fast mode."""
    source = f"real MVTec AD at {os.environ[ROOT_ENV]}" if using_real_data() else (
        f"synthetic stand-in at {synthetic_root()} (set {ROOT_ENV} for real data)"
    )
    print(f"data:     {source}")
    print(f"category: {category}")
    print(f"device:   {get_device()} (torch {torch.__version__}, {torch.get_num_threads()} CPU threads)")
    print(f"seed:     {seed}")
    print(f"fast:     {fast_mode()} ({FAST_ENV}=1 shrinks run sizes)")
