"""The training loop: sample sigma, set it, forward, backward, step. One epoch, one checkpoint.

:func:`fit` takes a model with noise sites and any iterable of ``(x, y)`` batches (a
``torch.utils.data.DataLoader``, a list, or the run pipeline's device-resident
:class:`~vant.data.DeviceBatches`). Everything random is seeded and saved: the training-noise
stream (the global torch RNG), the sigma sampler's generator and, for ``DeviceBatches``, each
epoch's data order and augmentation (seeded by ``(seed, epoch)``). A run killed at any moment
therefore resumes from its last epoch checkpoint and ends with the same weights as an
uninterrupted run (with a ``DataLoader``, resuming replays its order only if its sampler is seeded
per epoch).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..baselines.sam import SAM
from ..core.compile import compile_noisy, model_device
from ..core.inject import set_sigma_
from ..core.samplers import ConstantSampler, SigmaSampler
from ..data import DeviceBatches, as_nchw
from .evaluate import accuracy, epoch_batches
from .store import CheckpointError, load_checkpoint, load_model_state, save_atomic


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def fit(model: nn.Module, train_batches: Iterable, epochs: int, *, lr: float = 1e-3, weight_decay: float = 0.0,
        sampler: SigmaSampler | float | None = None, optimizer: str = "adam", sam_rho: float = 0.5,
        sam_adaptive: bool = True, device: torch.device | str | None = None, amp: bool = False,
        compile: bool = False, test_batches: Iterable | None = None, test_every: int = 0, test_sigma: float = 0.0,
        eval_seed: int = 1000, checkpoint: str | Path | None = None, checkpoint_extra: dict | None = None,
        checkpoint_hash: str | None = None, noise_seed: int | None = None, on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
        desc: str = "train") -> list[dict]:
    """Train ``model`` (noise sites injected) with Adam and cosine decay; returns one row per epoch.

    ``train_batches``: any iterable of ``(x, y)`` batches, iterated once per epoch (moved to
    ``device``, default: where the model is). ``sampler``: the training noise level per image, a
    :class:`~vant.core.samplers.SigmaSampler` (``VantSampler`` for VANT), a number (NT), or None
    (clean: every site silent). ``optimizer="sam"`` wraps Adam in (A)SAM. With ``checkpoint`` a
    plain dict (model, optimizer, scheduler, sampler and RNG states, epoch rows, plus
    ``checkpoint_extra``, plain data only) is written atomically after every epoch and training
    resumes from it. The checkpoint stores ``checkpoint_hash`` (the run's config hash) and is resumed
    from only if it stores the same hash and fits the model; anything else is a one-line
    :class:`~vant.pipeline.store.CheckpointError`, and nothing of it is adopted.
    ``noise_seed`` seeds the training-noise stream at the start (not on resume). Every
    ``test_every`` epochs (and after the last) one noisy pass over ``test_batches`` at
    ``test_sigma`` is recorded as ``test_acc``.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    channels_last = isinstance(train_batches, DeviceBatches) and train_batches.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if isinstance(sampler, (int, float)):
        sampler = ConstantSampler(float(sampler))
    if optimizer not in ("adam", "sam"):
        raise ValueError(f"optimizer must be 'adam' or 'sam', got {optimizer!r}")
    # fused: one kernel for the whole update on CUDA instead of a few per parameter group
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                           fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    sam = SAM(model.parameters(), sam_rho, sam_adaptive) if optimizer == "sam" else None
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    history: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        # Read on the CPU: load_state_dict copies onto the model's (and optimizer's) device, and the
        # sampler's generator and the RNGs take CPU ByteTensors.
        advice = f"delete {checkpoint} to train this run from scratch"
        ckpt = load_checkpoint(checkpoint, "cpu", expect_hash=checkpoint_hash, advice=advice)
        load_model_state(model, ckpt["model"], checkpoint, advice)
        try:
            opt.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            if sampler is not None and ckpt["sampler"] is not None:
                sampler.load_state_dict(ckpt["sampler"])
            _set_rng_state(ckpt["rng"], device)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as e:
            raise CheckpointError(f"checkpoint {checkpoint} does not fit this training "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {advice}") from None
        history, start = list(ckpt["history"]), ckpt["epoch"]
    elif noise_seed is not None:
        torch.manual_seed(noise_seed)  # the training-noise stream, independent of the init stream
    if start >= epochs:
        return history

    autocast = amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    forward = compile_noisy(model, device) if compile else model
    if sampler is None:
        set_sigma_(model, 0.0)
    # Device-resident batches know their epoch's size: sigma is drawn for the whole epoch and copied
    # to the device once, so no step waits on the host. Other iterables draw per batch.
    per_epoch = len(train_batches.x) if isinstance(train_batches, DeviceBatches) else None
    # DeviceBatches already hand out plain NCHW; other iterables are made so here (see as_nchw)
    to_nchw = not channels_last and per_epoch is None
    steps = len(train_batches) if hasattr(train_batches, "__len__") else None
    bar = None
    if progress:
        from ..progress import progress_bar
        bar = progress_bar(total=epochs * steps if steps else None, initial=start * steps if steps else 0,
                           unit="batch", desc=desc, leave=False)
    try:
        for epoch in range(start, epochs):
            model.train()
            tic = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            sigma_sum = 0.0
            seen = 0
            sig = None
            if sampler is not None and per_epoch is not None:
                sig_epoch = sampler(per_epoch, epoch)
                sigma_sum = float(sig_epoch.sum())
                sig_epoch = sig_epoch.to(device, non_blocking=True)
            i = -1
            for i, (x, y) in enumerate(epoch_batches(train_batches, epoch)):
                if x.device != device:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if to_nchw:
                    x = as_nchw(x)
                if sampler is not None:
                    if per_epoch is not None:
                        sig = sig_epoch[seen:seen + len(x)]
                    else:
                        sig = sampler(len(x), epoch)
                        sigma_sum += float(sig.sum())
                        sig = sig.to(device, non_blocking=True)
                    set_sigma_(model, sig)
                out, loss = train_step(forward, opt, x, y, autocast, sam, model)
                loss_sum += loss.detach() * len(x)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(x)
                if (i % 25 == 24 or i == (steps or 0) - 1) and not torch.isfinite(loss_sum):
                    _diverged(loss, epoch, i, sig, scheduler)
                if bar is not None:
                    bar.update(1)
            if seen == 0:
                raise ValueError("train_batches gave no batches")
            if not torch.isfinite(loss_sum):
                _diverged(loss, epoch, i, sig, scheduler)
            scheduler.step()
            seconds = time.perf_counter() - tic
            row = dict(epoch=epoch + 1, lr=opt.param_groups[0]["lr"], train_loss=loss_sum.item() / seen,
                       train_acc=100.0 * correct.item() / seen, sigma_mean=sigma_sum / seen,
                       seconds=round(seconds, 3), images_per_s=round(seen / seconds, 1), test_acc=math.nan,
                       test_sigma=math.nan)
            if test_batches is not None and test_every and ((epoch + 1) % test_every == 0 or epoch + 1 == epochs):
                row["test_acc"] = accuracy(model, test_batches, test_sigma, seed=eval_seed, autocast=autocast,
                                           forward=forward)
                row["test_sigma"] = test_sigma
            history.append(row)
            if checkpoint is not None:
                save_atomic(dict(model=model.state_dict(), optimizer=opt.state_dict(),
                                 scheduler=scheduler.state_dict(),
                                 sampler=sampler.state_dict() if sampler is not None else None,
                                 rng=_rng_state(device), epoch=epoch + 1, history=history,
                                 config_hash=checkpoint_hash, **(checkpoint_extra or {})), checkpoint)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.1f}",
                                test=f"{row['test_acc']:.1f}")
            if on_epoch is not None:
                on_epoch(row)
    finally:
        if bar is not None:
            bar.close()
    return history


def _diverged(loss, epoch: int, i: int, sig, scheduler) -> None:
    where = "" if sig is None else f" (batch mean sigma={sig.float().mean().item():.4g})"
    raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch + 1} (batch {i + 1}){where}, "
                           f"lr={scheduler.get_last_lr()[0]:.3g}")


def train_step(forward: Callable, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               autocast: bool = False, sam: SAM | None = None,
               model: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (forward, cross-entropy, backward, update); returns (logits, loss).

    With ``sam``, the gradient is taken again at SAM's ascent point of ``model`` (the network that
    ``forward`` runs) before the update.
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        out = forward(x)
        loss = F.cross_entropy(out, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if sam is not None:  # SAM: the gradient again at w + e(w); same sigma draw, fresh noise
        with sam.perturbed(model):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss_at_ascent = F.cross_entropy(forward(x), y)
            loss_at_ascent.backward()
    optimizer.step()
    return out, loss
