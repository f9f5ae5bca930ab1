"""The training loop: sample sigma, set it, forward, backward, step. One epoch, one checkpoint.

Everything random is seeded and saved: the model init (``train.seed``), each epoch's data order
and augmentation (seeded by ``(seed, epoch)``), the training-noise stream (the global torch RNG)
and the sigma sampler's generator. A run killed at any moment therefore resumes from its last
epoch checkpoint and ends with the same weights as an uninterrupted run (on the same device).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import RunConfig
from .data import ArrayData, DeviceBatches
from .evaluate import accuracy
from .fastpath import compile_noisy
from .inject import inject_noise_, set_sigma_
from .models import create_model, model_info
from .sam import SAM
from .samplers import make_sampler


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def model_input_size(cfg: RunConfig) -> int | None:
    """The side the data must have: data.image_size if set, else what the model needs."""
    return cfg.data.image_size or model_info(cfg.model.name).input_size


def build_model(cfg: RunConfig, data: ArrayData) -> nn.Module:
    """The plain model of the config with the config's noise sites injected (all silent)."""
    torch.manual_seed(cfg.train.seed)
    try:
        model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=data.channels, **cfg.model.kwargs)
    except TypeError as e:
        raise ValueError(f"model.kwargs: {e}") from None
    if cfg.model.quant_bits is not None:  # QAT: the same model with Brevitas layers, same site names
        from .qat import quantize_
        quantize_(model, cfg.model.quant_bits, cfg.model.quant_act_scale)
    inject_noise_(model, cfg.noise.sites, cfg.noise.kind)
    return model


def make_batches(cfg: RunConfig, data: ArrayData, device: torch.device, train: bool) -> DeviceBatches:
    cl = cfg.train.channels_last and device.type == "cuda"
    if train:
        return DeviceBatches(data.train_x, data.train_y, data.mean, data.std, cfg.train.batch_size, device, train=True,
                             augment=data.augment, flip=data.flip, seed=cfg.train.seed, channels_last=cl)
    return DeviceBatches(data.test_x, data.test_y, data.mean, data.std, cfg.eval.batch_size, device, train=False,
                         channels_last=cl)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated zip, garbage, wrong pickle: all the same to the user
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it (or the run "
                              "directory) to train again") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a vant checkpoint")
    return ckpt


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def fit(model: nn.Module, data: ArrayData, cfg: RunConfig, checkpoint: Path, device: torch.device,
        on_epoch: Callable[[dict], None] | None = None, progress: bool = True) -> list[dict]:
    """Train ``model`` per ``cfg``, resuming from ``checkpoint`` if it exists; returns the epoch rows.

    A checkpoint (model, optimizer, scheduler, sampler and RNG states, epoch rows, config) is
    written atomically after every epoch.
    """
    t = cfg.train
    model.to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    # fused: one kernel for the whole update on CUDA instead of a few per parameter group
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay,
                                 fused=True if device.type == "cuda" else None)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs)
    sam = SAM(model.parameters(), t.sam_rho, t.sam_adaptive) if t.optimizer == "sam" else None
    sampler = make_sampler(t.method, t.sigma, theta=t.theta, alpha=t.alpha, mode=t.sampler,
                           values=t.sigma_values, warmup_epochs=t.warmup_epochs, seed=t.seed)
    history: list[dict] = []
    start = 0
    if checkpoint.exists():
        ckpt = load_checkpoint(checkpoint, device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if sampler is not None and ckpt.get("sampler") is not None:
            sampler.load_state_dict(ckpt["sampler"])
        _set_rng_state(ckpt["rng"], device)
        history, start = list(ckpt["history"]), int(ckpt["epoch"])
    else:
        torch.manual_seed(t.seed + 1)  # the training-noise stream, independent of the init stream
    if start >= t.epochs:
        return history

    train_batches = make_batches(cfg, data, device, train=True)
    test_batches = make_batches(cfg, data, device, train=False) if t.test_every else None
    autocast = t.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    forward = compile_noisy(model, device) if t.compile else model
    if sampler is None:
        set_sigma_(model, 0.0)
    steps = len(train_batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=t.epochs * steps, initial=start * steps, unit="batch", dynamic_ncols=True,
                   desc=cfg.name or f"{cfg.model.name}/{t.method}", leave=False)
    try:
        for epoch in range(start, t.epochs):
            model.train()
            tic = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            sigma_sum = 0.0
            seen = 0
            if sampler is not None:  # one sigma per image of the epoch, sent to the device in one copy
                sig_epoch = sampler(len(data.train_x), epoch)
                sigma_sum = float(sig_epoch.sum())
                sig_epoch = sig_epoch.to(device, non_blocking=True)
            for i, (x, y) in enumerate(train_batches.epoch(epoch)):
                if sampler is not None:
                    sig = sig_epoch[seen:seen + len(x)]
                    set_sigma_(model, sig)
                out, loss = train_step(forward, optimizer, x, y, autocast, sam, model)
                loss_sum += loss.detach() * len(x)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(x)
                if (i % 25 == 24 or i == steps - 1) and not torch.isfinite(loss_sum):
                    where = f"sigma_train={t.sigma}" + (f", batch mean sigma={sig.mean().item():.4g}" if sampler else "")
                    raise TrainingDiverged(f"loss became {loss.item()} in epoch {epoch + 1} (batch {i + 1}) "
                                           f"with method={t.method}, {where}, lr={scheduler.get_last_lr()[0]:.3g}")
                if bar is not None:
                    bar.update(1)
            scheduler.step()
            seconds = time.perf_counter() - tic
            row = dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], train_loss=loss_sum.item() / seen,
                       train_acc=100.0 * correct.item() / seen, sigma_mean=sigma_sum / seen,
                       seconds=round(seconds, 3), images_per_s=round(seen / seconds, 1), test_acc=math.nan,
                       test_sigma=math.nan)
            if test_batches is not None and ((epoch + 1) % t.test_every == 0 or epoch + 1 == t.epochs):
                test_sigma = t.sigma
                row["test_acc"] = accuracy(model, test_batches, test_sigma, seed=cfg.eval.seed, autocast=autocast,
                                           forward=forward)
                row["test_sigma"] = test_sigma
            history.append(row)
            save_atomic(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                             scheduler=scheduler.state_dict(),
                             sampler=sampler.state_dict() if sampler is not None else None,
                             rng=_rng_state(device), epoch=epoch + 1, history=history,
                             config=_config_dict(cfg)), checkpoint)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.1f}",
                                test=f"{row['test_acc']:.1f}")
            if on_epoch is not None:
                on_epoch(row)
    finally:
        if bar is not None:
            bar.close()
    return history


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


def _config_dict(cfg: RunConfig) -> dict:
    from .config import to_dict
    return to_dict(cfg)
