"""Noisy evaluation: accuracy over a sigma grid, repeated under recorded seeds.

:func:`sweep` takes any iterable of ``(x, y)`` batches (a ``DataLoader``, a list, or the pipeline's
device-resident :class:`~vant.data.DeviceBatches`). Because a site's sigma can be one value per
sample, the *batched* mode replicates each chunk of test images once per sigma and evaluates all of
them in one forward pass (block k at sigma_k). BatchNorm is in eval mode (running statistics), so
the samples of a pass do not interact and each block has exactly the distribution of a
one-sigma-at-a-time pass; ``tests/pipeline/test_evaluate.py`` checks this statistically. The loop
mode is the authors' protocol, kept for comparison.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..core.compile import model_device
from ..core.inject import set_sigma_
from ..data import DeviceBatches, as_nchw


def epoch_batches(batches: Iterable, epoch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of one epoch: ``DeviceBatches`` replay epoch ``epoch`` exactly; others are iterated."""
    return batches.epoch(epoch) if isinstance(batches, DeviceBatches) else iter(batches)


def _chunks(batches: Iterable, size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Normalised test images in chunks of at most ``size``, on ``device``."""
    if isinstance(batches, DeviceBatches):  # slices of the whole test set: no copy but the normalisation
        for start in range(0, len(batches.x), size):
            yield batches.normalise(batches.x[start:start + size]), batches.y[start:start + size]
        return
    for x, y in batches:
        x, y = as_nchw(x.to(device)), y.to(device)
        for start in range(0, len(x), size):
            yield x[start:start + size], y[start:start + size]


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


@torch.no_grad()
def sweep(model: nn.Module, batches: Iterable, sigmas: Sequence[float], repeats: Sequence[int] | int = 3,
          seed: int = 1000, batched: bool = True, autocast: bool = False, forward: Callable | None = None,
          site: int | str | None = None, chunk: int | None = None,
          on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Accuracy (%) at each sigma for each repeat; one row per (sigma, repeat).

    ``batches``: any iterable of ``(x, y)`` test batches (moved to the model's device). Repeat r
    uses noise seed ``seed + r`` (recorded in its rows); ``repeats`` is a count or the repeat
    indices. The global RNG is forked, so a sweep in the middle of training does not change the
    training noise stream. ``forward`` runs the model (default: ``model`` itself; e.g.
    ``vant.compile_noisy(model)``). ``site`` (index or name) makes only that site noisy, the others
    silent (walking noise); by default every site is. ``chunk``: images per forward pass in batched
    mode (default: the ``DeviceBatches`` batch size, else 1000), split across the sigmas.
    ``on_step(n)`` is called after each forward pass with the images it evaluated, counted once per
    sigma (a progress bar's update; it sees no result, so it cannot change one).
    """
    repeats = range(repeats) if isinstance(repeats, int) else list(repeats)
    sigmas = [float(s) for s in sigmas]
    device = batches.device if isinstance(batches, DeviceBatches) else model_device(model)
    if chunk is None:
        chunk = batches.batch_size if isinstance(batches, DeviceBatches) else 1000
    was_training = model.training
    model.eval()
    rows = []
    try:
        with torch.random.fork_rng(devices=_rng_devices(device)):
            for r in repeats:
                torch.manual_seed(seed + r)
                if batched:
                    correct, n = _count_batched(model, forward or model, batches, sigmas, autocast, site, chunk, device,
                                                on_step)
                else:
                    correct, n = _count_loop(model, forward or model, batches, sigmas, autocast, site, device, on_step)
                if n == 0:
                    raise ValueError("sweep: the test batches are empty")
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


def _count_loop(model, forward, batches, sigmas: list[float], autocast: bool, site, device,
                on_step=None) -> tuple[list[int], int]:
    correct, n = [], 0
    for s in sigmas:
        _set(model, s, site)
        c = torch.zeros((), dtype=torch.long, device=device)
        n = 0
        for x, y in epoch_batches(batches, 0):
            x, y = x.to(device), y.to(device)
            c += (_forward(forward, x, autocast).argmax(1) == y).sum()
            n += len(y)
            if on_step is not None:
                on_step(len(y))
        correct.append(c)
    return [int(c) for c in correct], n


def _count_batched(model, forward, batches, sigmas: list[float], autocast: bool, site, size: int,
                   device, on_step=None) -> tuple[list[int], int]:
    k = len(sigmas)
    # images per forward stays near `size`: split the chunk across the sigmas
    per = max(1, size // k)
    sig = torch.tensor(sigmas, dtype=torch.float32, device=device)
    sig_full = sig.repeat_interleave(per)  # reused by every full chunk: no work between forwards but the data
    correct = torch.zeros(k, dtype=torch.long, device=device)
    channels_last = isinstance(batches, DeviceBatches) and batches.channels_last
    n = 0
    for x, y in _chunks(batches, per, device):
        b = len(x)
        n += b
        _set(model, sig_full if b == per else sig.repeat_interleave(b), site)
        xk = x.repeat(k, *([1] * (x.dim() - 1)))
        if channels_last:
            xk = xk.contiguous(memory_format=torch.channels_last)
        pred = _forward(forward, xk, autocast).argmax(1)
        correct += (pred.view(k, b) == y.view(1, b)).sum(1)
        if on_step is not None:
            on_step(k * b)
    return correct.tolist(), n


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable, sigma: float, seed: int = 0, autocast: bool = False,
             forward: Callable | None = None) -> float:
    """One noisy pass at one sigma (used for the per-epoch test line)."""
    return sweep(model, batches, [sigma], 1, seed, batched=False, autocast=autocast, forward=forward)[0]["accuracy"]
