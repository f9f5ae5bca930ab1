"""Training-time noise-level samplers. Each draws one sigma per sample, ``sampler(batch, epoch)``
returns a float32 ``[B]`` CPU tensor, from its own seeded generator (saved in checkpoints).

VANT's default is the authors' code (spec 3.2): sigma_i = alpha*sigma_train + theta*|z_i|, a shifted
half-normal, drawn fresh per image and per batch and shared by every site. The paper's Eq. (1)
reads N(alpha*sigma_train, theta); its two non-negative readings are kept as named options.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

VANT_MODES = ("half_normal", "normal_abs", "normal_clamp0")


def _check(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class SigmaSampler:
    """Base: a seeded CPU generator and its checkpointable state."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())  # a CPU generator, wherever the state was loaded


class ConstantSampler(SigmaSampler):
    """Noisy Training (NT): every image at sigma_train."""

    def __init__(self, sigma: float, seed: int = 0):
        super().__init__(seed)
        self.sigma = _check("sigma", sigma)

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        return torch.full((batch_size,), self.sigma)

    def __repr__(self):
        return f"ConstantSampler(sigma={self.sigma})"


class VantSampler(SigmaSampler):
    """VANT: ``half_normal`` alpha*s + theta*|z| (default, the authors' code); ``normal_abs``
    |alpha*s + theta*z| and ``normal_clamp0`` max(0, alpha*s + theta*z) (paper-literal Eq. 1)."""

    def __init__(self, sigma_train: float, theta: float, alpha: float = 0.45, mode: str = "half_normal", seed: int = 0):
        super().__init__(seed)
        self.sigma_train = _check("sigma_train", sigma_train)
        self.theta = _check("theta", theta)
        self.alpha = _check("alpha", alpha)
        if mode not in VANT_MODES:
            raise ValueError(f"unknown VANT sampler {mode!r}; choose one of {VANT_MODES}")
        self.mode = mode

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        z = torch.randn(batch_size, generator=self.generator)
        centre = self.alpha * self.sigma_train
        if self.mode == "half_normal":
            return centre + self.theta * z.abs()
        s = centre + self.theta * z
        return s.abs() if self.mode == "normal_abs" else s.clamp_min(0.0)

    def __repr__(self):
        return f"VantSampler(sigma_train={self.sigma_train}, alpha={self.alpha}, theta={self.theta}, mode={self.mode!r})"


class EmpiricalSampler(SigmaSampler):
    """Draws uniformly from measured sigma values (e.g. a fleet's or a chip's logged noise)."""

    def __init__(self, values: Sequence[float], seed: int = 0):
        super().__init__(seed)
        if len(values) == 0:
            raise ValueError("empirical sampler needs at least one sigma value")
        self.values = torch.tensor([_check("sigma value", v) for v in values], dtype=torch.float32)

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        idx = torch.randint(len(self.values), (batch_size,), generator=self.generator)
        return self.values[idx]

    def __repr__(self):
        return f"EmpiricalSampler({len(self.values)} values, mean={self.values.mean().item():.4g})"


class WarmupSampler(SigmaSampler):
    """Linear ramp from 0 (epoch 0) to ``sigma_train`` (epoch ``epochs - 1``), every image at the
    ramp value; from epoch ``epochs`` on, ``inner`` takes over. Unlike the authors' code, epoch 0
    really is noise-free (spec 2, quirk not copied)."""

    def __init__(self, inner: SigmaSampler, sigma_train: float, epochs: int):
        super().__init__(0)
        if epochs < 1:
            raise ValueError(f"warm-up epochs must be >= 1, got {epochs}")
        self.inner, self.sigma_train, self.epochs = inner, _check("sigma_train", sigma_train), int(epochs)

    def ramp(self, epoch: int) -> float:
        return self.sigma_train * epoch / max(self.epochs - 1, 1)

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        if epoch < self.epochs:
            return torch.full((batch_size,), self.ramp(epoch))
        return self.inner(batch_size, epoch)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def __repr__(self):
        return f"WarmupSampler({self.inner!r}, epochs={self.epochs})"


def make_sampler(
    method: str,
    sigma_train: float = 0.0,
    *,
    theta: float = 0.0,
    alpha: float = 0.45,
    mode: str = "half_normal",
    values: Sequence[float] | None = None,
    warmup_epochs: int = 0,
    seed: int = 0,
) -> SigmaSampler | None:
    """The sampler for a training method: None for clean training, constant for NT, VANT's
    distribution for ``vant``, measured values for ``empirical``; wrapped in a warm-up ramp when
    ``warmup_epochs`` > 0."""
    if method == "clean":
        return None
    if method == "nt":
        inner: SigmaSampler = ConstantSampler(sigma_train, seed)
    elif method == "vant":
        inner = VantSampler(sigma_train, theta, alpha, mode, seed)
    elif method == "empirical":
        inner = EmpiricalSampler(values or [], seed)
        sigma_train = sigma_train or float(inner.values.mean())  # the ramp's target
    else:
        raise ValueError(f"unknown noise method {method!r}; choose clean, nt, vant or empirical")
    return WarmupSampler(inner, sigma_train, warmup_epochs) if warmup_epochs else inner
