"""The one training loop every network in the course uses.

``train`` knows nothing about a particular model: it takes a ``loss_fn(model, batch)`` that
returns a scalar loss, so the supervised classifiers, the autoencoders and f-AnoGAN's encoder
share it. ``train_adversarial`` runs the same loop (seeding, devices, progress bars, per-epoch
history, NaN checks) with a GAN's two-player step instead, for AnoGAN's DCGAN. Trained models are
saved with their estimator (:meth:`mvtec_tutorial.models.base.Estimator.save`), in one file format.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mvtec_tutorial.settings import get_device

#: Adam's betas for GANs, from DCGAN (Radford et al., ICLR 2016, Sec. 4): beta1 0.5 instead of 0.9.
GAN_BETAS = (0.5, 0.999)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a batch (tensor, dict, list or tuple, nested) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def _descend(loss: torch.Tensor, optimizer: torch.optim.Optimizer, name: str) -> float:
    """One gradient step on ``loss``; its value as a float. Refuses a NaN or infinite loss."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{name} became {loss.item()}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def _loop(networks: Sequence[torch.nn.Module], loader: Iterable, step: Callable[[Any], dict[str, float]], *,
          epochs: int, seed: int, device: torch.device, desc: str, progress: bool,
          history: dict[str, list[float]], end_of_epoch: Callable[[int, dict[str, list[float]]], bool | None] | None = None
          ) -> dict[str, list[float]]:
    """The loop both trainers share: seeded epochs of batches on ``device``, with progress bars.

    ``step(batch)`` takes a batch already on ``device``, updates the weights and returns the
    batch's losses by name; their means per epoch are appended to ``history`` (returned).
    ``end_of_epoch(epoch, history)`` (epoch counted from 1) may add entries to the history and
    returns True to stop early. Networks train in ``train()`` mode and end in ``eval()`` mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress)
        for epoch in bar:
            for network in networks:
                network.train()
            sums: dict[str, float] = {}
            count = 0
            for batch in tqdm(loader, desc="batches", leave=False, disable=not progress):
                try:
                    losses = step(to_device(batch, device))
                except FloatingPointError as error:
                    raise FloatingPointError(f"{error} (epoch {epoch} of {epochs})") from None
                sums = {name: sums.get(name, 0.0) + value for name, value in losses.items()}
                count += 1
            for name, total in sums.items():
                history.setdefault(name, []).append(total / max(count, 1))
            stop = end_of_epoch(epoch, history) if end_of_epoch is not None else False
            bar.set_postfix({name: f"{values[-1]:.4g}" for name, values in history.items() if values})
            if stop:
                break
    for network in networks:
        network.eval()
    return history


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

    See Also
    --------
    train_adversarial : the same loop with a GAN's two-player step.
    """
    device = get_device(device)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=learning_rate)
    best = {"loss": math.inf, "state": None, "stale": 0}

    def step(batch: Any) -> dict[str, float]:
        return {"loss": _descend(loss_fn(model, batch), optimizer, "loss")}

    def end_of_epoch(epoch: int, history: dict[str, list[float]]) -> bool:
        monitored = history["loss"][-1]
        if validation_loader is not None:
            history["val_loss"].append(_mean_loss(model, validation_loader, loss_fn, device))
            monitored = history["val_loss"][-1]
        if patience is None:
            return False
        if monitored < best["loss"]:
            best.update(loss=monitored, state=copy.deepcopy(model.state_dict()), stale=0)
            return False
        best["stale"] += 1
        return best["stale"] >= patience

    history = _loop([model], loader, step, history={"loss": [], "val_loss": []}, epochs=epochs, seed=seed,
                    device=device, desc=desc, progress=progress, end_of_epoch=end_of_epoch)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    return history


def _logits(discriminator: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The discriminator's logits (N,); a discriminator may return them first in a tuple."""
    output = discriminator(images)
    return output[0] if isinstance(output, tuple) else output


def train_adversarial(
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    loader: Iterable,
    draw_codes: Callable[[int], torch.Tensor],
    *,
    epochs: int,
    learning_rate: float = 2e-4,
    betas: tuple[float, float] = GAN_BETAS,
    seed: int = 0,
    device: str | torch.device | None = None,
    desc: str = "GAN training",
    progress: bool = True,
    end_of_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """Train a GAN in place with the non-saturating loss: :func:`train`'s loop, a two-player step.

    Each batch of real images ``x`` takes one discriminator step, then one generator step on
    the same generated images ``G(z)`` (Goodfellow et al., NeurIPS 2014, Sec. 3 and Alg. 1)::

        discriminator: minimise  softplus(-D(x)) + softplus(D(G(z)))   i.e. -log s(D(x)) - log(1 - s(D(G(z))))
        generator:     minimise  softplus(-D(G(z)))                    i.e. -log s(D(G(z)))

    with ``D`` the discriminator's logit and ``s`` the sigmoid, each averaged over the batch.

    Parameters
    ----------
    generator : torch.nn.Module
        Latent codes (N, latent_dim) -> images; moved to ``device``, left in ``eval()`` mode.
    discriminator : torch.nn.Module
        Images -> logits (N,), or a tuple whose first item is the logits; moved to ``device``,
        left in ``eval()`` mode.
    loader : iterable of tensors (N, C, H, W)
        Batches of real images; the loader owns their order and augmentation.
    draw_codes : callable
        ``draw_codes(n) -> tensor (n, latent_dim)``, the latent codes of a batch (moved to
        ``device``); called once per batch after the batch is drawn, so a caller that draws
        batches and codes from one seeded generator gets one reproducible sequence.
    epochs : int
    learning_rate : float, default=2e-4
    betas : (float, float), default=(0.5, 0.999)
        Adam for both networks, as DCGAN (Radford et al., ICLR 2016, Sec. 4).
    seed, device, desc, progress
        As :func:`train`.
    end_of_epoch : callable, optional
        ``end_of_epoch(epoch, history)`` after every epoch (counted from 1), e.g. to keep samples.

    Returns
    -------
    dict of str to list of float
        Per epoch: ``"d_loss"``, ``"g_loss"`` (nats, batch means) and ``"d_real"``, the mean
        probability the discriminator gave the real images before its step.

    Raises
    ------
    FloatingPointError
        If a loss becomes NaN or infinite (lower the learning rate).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> generator, discriminator = nn.Linear(2, 4), nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))
    >>> real = [torch.randn(8, 4) for _ in range(3)]
    >>> history = train_adversarial(generator, discriminator, real, lambda n: torch.randn(n, 2), epochs=2,
    ...                             device="cpu", progress=False)
    >>> sorted(history), len(history["d_loss"])
    (['d_loss', 'd_real', 'g_loss'], 2)
    """
    device = get_device(device)
    generator.to(device), discriminator.to(device)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=betas)
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=learning_rate, betas=betas)

    def step(real: torch.Tensor) -> dict[str, float]:
        fake = generator(draw_codes(len(real)).to(device))
        real_logits = _logits(discriminator, real)
        d_loss = F.softplus(-real_logits).mean() + F.softplus(_logits(discriminator, fake.detach())).mean()
        d_value = _descend(d_loss, discriminator_optimizer, "discriminator loss")
        discriminator.requires_grad_(False)  # the generator step needs no discriminator weight gradients
        try:
            g_value = _descend(F.softplus(-_logits(discriminator, fake)).mean(), generator_optimizer, "generator loss")
        finally:
            discriminator.requires_grad_(True)
        return {"d_loss": d_value, "g_loss": g_value, "d_real": torch.sigmoid(real_logits).mean().item()}

    return _loop([generator, discriminator], loader, step, history={"d_loss": [], "g_loss": [], "d_real": []},
                 epochs=epochs, seed=seed, device=device, desc=desc, progress=progress,
                 end_of_epoch=end_of_epoch)
