"""The one training loop every network in the course uses, and checkpoints.

``train`` knows nothing about a particular model: it takes a ``loss_fn(model, batch)`` that
returns a scalar loss, so the supervised classifiers and the autoencoders share it.
"""
from __future__ import annotations

import copy
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from mvtec_tutorial.settings import get_device


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a batch (tensor, dict, list or tuple, nested) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def _mean_loss(model: torch.nn.Module, loader: Iterable, loss_fn: Callable, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for batch in loader:
            total += float(loss_fn(model, to_device(batch, device)))
            count += 1
    return total / max(count, 1)


def train(
    model: torch.nn.Module,
    loader: Iterable,
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    *,
    epochs: int,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    validation_loader: Iterable | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    desc: str = "training",
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train ``model`` in place and return the loss history.

    Parameters
    ----------
    model : torch.nn.Module
        Moved to ``device``; left in ``eval()`` mode on return.
    loader : iterable of batches
        Typically a DataLoader; pass it a seeded ``torch.Generator`` for reproducible shuffling.
    loss_fn : callable
        ``loss_fn(model, batch) -> scalar tensor``; the batch arrives already on ``device``.
    epochs : int
        Maximum number of passes over ``loader``.
    optimizer : torch.optim.Optimizer, optional
        Default: Adam over ``model.parameters()`` with ``learning_rate``.
    validation_loader : iterable, optional
        Evaluated after each epoch (no gradients); enables early stopping on its loss.
    patience : int, optional
        Stop after this many epochs without improvement of the validation loss (or, without a
        validation loader, the training loss) and restore the best weights. None trains all epochs.
    seed : int, default=0
        Seeds torch's generator inside a forked RNG state, so dropout and random
        initialisation inside ``loss_fn`` are reproducible without touching the caller's state.
    device : str or torch.device, optional
        None means CUDA when available, else CPU.

    Returns
    -------
    dict
        ``"loss"``: mean training loss per epoch; ``"val_loss"``: validation loss per epoch
        (empty without a validation loader).

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite (lower the learning rate).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    device = get_device(device)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=learning_rate)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best_loss, best_state, stale = math.inf, None, 0
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        bar = tqdm(range(epochs), desc=desc, disable=not progress)
        for _ in bar:
            model.train()
            total, count = 0.0, 0
            for batch in tqdm(loader, desc="batches", leave=False, disable=not progress):
                loss = loss_fn(model, to_device(batch, device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} after {len(history['loss'])} epochs; "
                                             "lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            history["loss"].append(total / max(count, 1))
            monitored = history["loss"][-1]
            if validation_loader is not None:
                history["val_loss"].append(_mean_loss(model, validation_loader, loss_fn, device))
                monitored = history["val_loss"][-1]
            bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", monitored=f"{monitored:.4g}")
            if patience is None:
                continue
            if monitored < best_loss:
                best_loss, best_state, stale = monitored, copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _plain(value: Any, key: str) -> Any:
    """``value`` made of the plain types ``torch.load(..., weights_only=True)`` accepts."""
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.generic):  # numpy scalars, e.g. a loss from np.mean
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value) in (list, tuple):
        return type(value)(_plain(item, f"{key}[{index}]") for index, item in enumerate(value))
    if type(value) is dict:
        return {_plain(name, key): _plain(item, f"{key}[{name!r}]") for name, item in value.items()}
    raise TypeError(f"metadata {key} is a {type(value).__name__}, which a checkpoint loaded with "
                    "weights_only=True cannot hold; pass plain values (None, bool, int, float, str, tensors, "
                    "and lists, tuples or dicts of them), e.g. str(value) or float(value)")


def save_checkpoint(path: str | Path, model: torch.nn.Module, **metadata: Any) -> Path:
    """Save a model's weights with its class name and ``metadata`` (e.g. epochs, loss).

    The file loads with ``torch.load(..., weights_only=True)``, which accepts only tensors and
    plain Python values, so numpy scalars and arrays become Python numbers and lists, and paths
    become strings, before saving.

    Raises
    ------
    TypeError
        Naming the key, if a metadata value is of another type (convert it first); nothing
        is written then.
    """
    metadata = {key: _plain(value, key) for key, value in metadata.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"architecture": type(model).__name__, "state_dict": model.state_dict(), "metadata": metadata}, path)
    return path


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict[str, Any]:
    """Load weights saved by :func:`save_checkpoint` into ``model`` and return the metadata.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged or not a checkpoint, holds objects that ``weights_only=True``
        refuses (the message names the type and how to convert a file you trust), was saved
        from another architecture, or its tensors do not fit ``model`` (the message names the
        mismatching parameters).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train the model and save_checkpoint first")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        # torch >= 2.4 says "Unsupported global: GLOBAL numpy...", older ones "Unsupported class numpy...".
        refused = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", str(error))
        if isinstance(error, pickle.UnpicklingError) and refused:
            raise ValueError(
                f"{path} holds a {refused.group(1)} object, which torch.load(..., weights_only=True) refuses "
                "because unpickling it could run code. Older versions of save_checkpoint stored numpy values "
                "and paths in the metadata this way; the weights themselves may well be fine. If you wrote "
                "the file and trust it, load it once with torch.load(path, weights_only=False) and save its "
                "state_dict again with save_checkpoint."
            ) from error
        detail = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{path} is damaged or not a PyTorch checkpoint ({type(error).__name__}: {detail}); "
                         "write it again with save_checkpoint (train again if the weights are lost)") from error
    if not isinstance(checkpoint, dict) or not {"architecture", "state_dict"} <= checkpoint.keys():
        raise ValueError(f"{path} was not written by mvtec_tutorial.training.save_checkpoint")
    expected = type(model).__name__
    if checkpoint["architecture"] != expected:
        raise ValueError(f"{path} holds a {checkpoint['architecture']} but the model is a {expected}; "
                         "load it into the architecture it was saved from")
    own = model.state_dict()
    saved = checkpoint["state_dict"]
    mismatched = sorted(
        set(own) ^ set(saved) | {k for k in set(own) & set(saved) if own[k].shape != saved[k].shape}
    )
    if mismatched:
        raise ValueError(f"{path} does not fit this {expected} (different settings?): mismatched "
                         f"parameters {', '.join(mismatched[:5])}{' ...' if len(mismatched) > 5 else ''}")
    model.load_state_dict(saved)
    return checkpoint.get("metadata", {})
