"""Noisy evaluation: accuracy over a sigma grid, repeated under recorded seeds.

Because a site's sigma can be one value per sample, the *batched* mode replicates each test batch
once per sigma and evaluates all of them in one forward pass (block k of the batch at sigma_k).
BatchNorm is in eval mode (running statistics), so the samples of a pass do not interact and each
block has exactly the distribution of a one-sigma-at-a-time pass; ``tests/test_evaluate.py``
checks this statistically. The loop mode is the authors' protocol, kept for comparison.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .data import DeviceBatches
from .inject import set_sigma_


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


@torch.no_grad()
def sweep(model: nn.Module, batches: DeviceBatches, sigmas: Sequence[float], repeats: Sequence[int] | int,
          seed: int, batched: bool = True, autocast: bool = False, forward: Callable | None = None,
          site: int | str | None = None) -> list[dict]:
    """Accuracy (%) at each sigma for each repeat; one row per (sigma, repeat).

    Repeat r uses noise seed ``seed + r`` (recorded in its rows). The global RNG is forked, so a
    sweep in the middle of training does not change the training noise stream. ``forward`` runs the
    model (default: ``model`` itself; e.g. ``vant.fastpath.compile_noisy(model)``). ``site`` (index or
    name) makes only that site noisy, the others silent (walking noise); by default every site is.
    """
    repeats = range(repeats) if isinstance(repeats, int) else list(repeats)
    sigmas = [float(s) for s in sigmas]
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.random.fork_rng(devices=_rng_devices(batches.device)):
            for r in repeats:
                torch.manual_seed(seed + r)
                correct = (_count_batched if batched else _count_loop)(model, forward or model, batches, sigmas,
                                                                       autocast, site)
                n = len(batches.x)
                for s, c in zip(sigmas, correct):
                    rows.append(dict(sigma=s, repeat=r, seed=seed + r, correct=int(c), total=n,
                                     accuracy=100.0 * int(c) / n, mode="batched" if batched else "loop"))
    finally:
        model.train(was_training)
    return rows


def _forward(forward, x, autocast: bool):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        return forward(x)


def _set(model, sigma, site):
    set_sigma_(model, sigma if site is None else {site: sigma})


def _count_loop(model, forward, batches: DeviceBatches, sigmas: list[float], autocast: bool, site=None) -> list[int]:
    correct = []
    for s in sigmas:
        _set(model, s, site)
        c = torch.zeros((), dtype=torch.long, device=batches.device)
        for x, y in batches.epoch(0):
            c += (_forward(forward, x, autocast).argmax(1) == y).sum()
        correct.append(c)
    return [int(c) for c in correct]


def _count_batched(model, forward, batches: DeviceBatches, sigmas: list[float], autocast: bool,
                   site=None) -> list[int]:
    k = len(sigmas)
    # images per forward stays near batches.batch_size: split the test batch across the sigmas
    per = max(1, batches.batch_size // k)
    sig = torch.tensor(sigmas, dtype=torch.float32, device=batches.device)
    sig_full = sig.repeat_interleave(per)  # reused by every full chunk: no work between forwards but the data
    correct = torch.zeros(k, dtype=torch.long, device=batches.device)
    n = len(batches.x)
    for start in range(0, n, per):
        x = batches.normalise(batches.x[start:start + per])
        y = batches.y[start:start + per]
        b = len(x)
        _set(model, sig_full if b == per else sig.repeat_interleave(b), site)
        xk = x.repeat(k, *([1] * (x.dim() - 1)))
        if batches.channels_last:
            xk = xk.contiguous(memory_format=torch.channels_last)
        pred = _forward(forward, xk, autocast).argmax(1)
        correct += (pred.view(k, b) == y.view(1, b)).sum(1)
    return correct.tolist()


@torch.no_grad()
def accuracy(model: nn.Module, batches: DeviceBatches, sigma: float, seed: int = 0, autocast: bool = False,
             forward: Callable | None = None) -> float:
    """One noisy pass at one sigma (used for the per-epoch test line)."""
    return sweep(model, batches, [sigma], 1, seed, batched=False, autocast=autocast, forward=forward)[0]["accuracy"]
