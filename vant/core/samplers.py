"""Training-time noise-level samplers. Each draws one sigma per sample, ``sampler(batch, epoch)``
returns a float32 ``[B]`` CPU tensor, from its own seeded generator (saved in checkpoints).

VANT's default is the authors' code (spec 3.2): sigma_i = alpha*sigma_train + theta*|z_i|, a shifted
half-normal, drawn fresh per image and per batch and shared by every site. The paper's Eq. (1)
reads N(alpha*sigma_train, theta); its two non-negative readings are kept as named options.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

VANT_MODES = ("half_normal", "normal_abs", "normal_clamp0")


def _check(name: str, value: float) -> float:
    """A finite number >= 0 (a bool, a string or None is a TypeError, not a number)."""
    if isinstance(value, Tensor) and value.dim() == 0 and not value.dtype.is_complex and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _count(name: str, value, minimum: int) -> int:
    """An integer >= ``minimum`` (a bool or a float such as 2.5 is refused, not truncated)."""
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


class SigmaSampler:
    """Base: a seeded CPU generator and its checkpointable state."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(_count("seed", seed, 0))

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _batch(batch_size: int, epoch: int) -> int:
        """``batch_size`` checked as a positive int and ``epoch`` as an int >= 0 (cheap: once per batch)."""
        if type(batch_size) is not int or batch_size < 1:
            _count("batch_size", batch_size, 1)
        if type(epoch) is not int or epoch < 0:
            _count("epoch", epoch, 0)
        return int(batch_size)

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
        return torch.full((self._batch(batch_size, epoch),), self.sigma)

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
        if not isinstance(mode, str) or mode not in VANT_MODES:
            raise ValueError(f"unknown VANT sampler {mode!r}; choose one of {VANT_MODES}")
        self.mode = mode

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        z = torch.randn(self._batch(batch_size, epoch), generator=self.generator)
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
        if isinstance(values, Tensor):
            if values.dtype == torch.bool or values.dtype.is_complex:
                raise TypeError(f"empirical sigma values must be real numbers, got a {values.dtype} tensor")
            values = values.detach().cpu().flatten().tolist()
        elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"empirical sigma values must be a sequence of numbers, got {type(values).__name__} {values!r}")
        values = list(values)
        if len(values) == 0:
            raise ValueError("empirical sampler needs at least one sigma value, got none")
        self.values = torch.tensor([_check(f"empirical sigma value [{i}]", v) for i, v in enumerate(values)],
                                   dtype=torch.float32)

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        idx = torch.randint(len(self.values), (self._batch(batch_size, epoch),), generator=self.generator)
        return self.values[idx]

    def __repr__(self):
        return f"EmpiricalSampler({len(self.values)} values, mean={self.values.mean().item():.4g})"


class WarmupSampler(SigmaSampler):
    """Linear ramp from 0 (epoch 0) to ``sigma_train`` (epoch ``epochs - 1``), every image at the
    ramp value; from epoch ``epochs`` on, ``inner`` takes over. Unlike the authors' code, epoch 0
    really is noise-free (spec 2, quirk not copied)."""

    def __init__(self, inner: SigmaSampler, sigma_train: float, epochs: int):
        super().__init__(0)
        if not isinstance(inner, SigmaSampler):
            raise TypeError(f"the sampler after warm-up must be a SigmaSampler, got {type(inner).__name__} {inner!r}")
        self.inner, self.sigma_train = inner, _check("sigma_train", sigma_train)
        self.epochs = _count("warm-up epochs", epochs, 1)

    def ramp(self, epoch: int) -> float:
        return self.sigma_train * epoch / max(self.epochs - 1, 1)

    def __call__(self, batch_size: int, epoch: int = 0) -> Tensor:
        batch_size = self._batch(batch_size, epoch)
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
    if not isinstance(method, str) or method not in ("clean", "nt", "vant", "empirical"):
        raise ValueError(f"unknown noise method {method!r}; choose clean, nt, vant or empirical")
    warmup_epochs = _count("warmup_epochs", warmup_epochs, 0)
    if method == "clean":
        return None
    if method == "nt":
        inner: SigmaSampler = ConstantSampler(sigma_train, seed)
    elif method == "vant":
        inner = VantSampler(sigma_train, theta, alpha, mode, seed)
    elif method == "empirical":
        inner = EmpiricalSampler([] if values is None else values, seed)
        sigma_train = sigma_train or float(inner.values.mean())  # the ramp's target
    else:
        raise ValueError(f"unknown noise method {method!r}; choose clean, nt, vant or empirical")
    return WarmupSampler(inner, sigma_train, warmup_epochs) if warmup_epochs else inner
