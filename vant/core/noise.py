"""Noise physics: pure functions on tensors, and the thin module that holds a site's sigma.

Every function draws fresh i.i.d. Gaussian noise for every element of ``x``, computes in
float32 (the spec keeps noise ops in fp32, also under autocast) and returns a new tensor of
``x``'s dtype. ``sigma`` is a tensor: a scalar (0-dim) or one value per sample (shape ``[B]``,
broadcast over every non-batch dimension). Sigma is the *standard deviation*, in the units of
the tensor it is applied to. Nothing here depends on a parameter, so the backward pass through
a noise op is the identity (additive) or a multiplication by the drawn factor (multiplicative).
"""
from __future__ import annotations

import math
import numbers
import os

import torch
from torch import Tensor, nn

KINDS = ("add", "mul", "mixed")


def broadcast_sigma(sigma: Tensor, x: Tensor) -> Tensor:
    """Shape ``sigma`` (0-dim or ``[B]``) so that it broadcasts against ``x`` of shape ``[B, ...]``."""
    if sigma.dim() == 0:
        return sigma
    if sigma.dim() != 1 or sigma.shape[0] != x.shape[0]:
        raise ValueError(
            f"per-sample sigma must have shape [batch]={x.shape[0]}, got {tuple(sigma.shape)}"
        )
    return sigma.view(-1, *([1] * (x.dim() - 1)))


# ---- drawing N(0, 1) on the CPU with several threads --------------------------------------------
# ATen's CPU normal_ runs on one thread (one MT19937 stream) whatever torch.set_num_threads says,
# and at ~250 M values/s it is what bounds eager noisy training on the CPU. Large draws are therefore
# split into chunks of a FIXED size (_CHUNK values; the last one shorter), chunk i filled from its
# own MT19937 stream whose seed is derived from (one value drawn from the default generator per
# call, i). The split and the seeds depend only on the number of values, never on the thread count:
# threads only share out the chunks, so 1, 2 or 16 threads (and a run moved between them) draw the
# same numbers, torch.manual_seed reproduces them and fork_rng isolates them. The chunks are
# independent standard normals, so the distribution is that of one stream; the values are not.
# ATen releases the GIL inside normal_, so the threads really run at once.
_CPU_NOISE_THREADS: int | None = None  # None: torch.get_num_threads(); 1: the same values, one thread
_PARALLEL_MIN = 1 << 18  # draws below this many values: one stream of the default generator (Tensor.normal_)
_CHUNK = 1 << 17  # values per chunk of a split draw: ~0.5 ms each, so per-chunk overhead is ~1% and threads balance
_POOL = None  # the worker threads of split draws, made on first use
_POOL_WORKERS = 0
_MASK64 = (1 << 64) - 1


def _drop_pool() -> None:
    global _POOL, _POOL_WORKERS
    _POOL, _POOL_WORKERS = None, 0


os.register_at_fork(after_in_child=_drop_pool)  # a forked child has none of the parent's threads


def set_cpu_noise_threads(n: int | None) -> None:
    """Threads that share the chunks of one large CPU draw (``None``: ``torch.get_num_threads()``).

    Only the speed depends on it: a draw of at least 2**18 values is split into chunks of a fixed
    size, each from its own seeded stream, whatever the thread count, so ``1`` draws exactly the
    values that ``2`` or ``None`` draw, on one thread. Smaller draws are ``Tensor.normal_``."""
    global _CPU_NOISE_THREADS
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"cpu noise threads must be a positive integer or None, got {n!r}")
    _CPU_NOISE_THREADS = n


def cpu_noise_threads() -> int:
    """Threads a large CPU draw is shared out over now (see set_cpu_noise_threads)."""
    return _CPU_NOISE_THREADS if _CPU_NOISE_THREADS is not None else torch.get_num_threads()


def _chunk_seed(base: int, i: int) -> int:
    """Seed of chunk ``i`` of a draw (splitmix64 of base + i: well-mixed low bits, which MT19937 uses)."""
    z = (base + (i + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def normal_(buf: Tensor) -> Tensor:
    """Fill a contiguous fp32 tensor with N(0, 1) in place. On the CPU a buffer of at least 2**18
    values is drawn in fixed-size chunks, each from its own stream seeded from one draw of the
    default generator, shared out over ``cpu_noise_threads()`` threads: the values do not depend on
    the thread count. Elsewhere (CUDA, small or non-contiguous buffers) it is ``Tensor.normal_``."""
    n = buf.numel()
    if buf.device.type != "cpu" or n < _PARALLEL_MIN or not buf.is_contiguous():
        return buf.normal_()
    flat = buf.view(-1)
    chunks = -(-n // _CHUNK)
    base = int(torch.randint(-(1 << 63), (1 << 63) - 1, (), dtype=torch.int64)) & _MASK64  # the one default-generator draw
    k = min(cpu_noise_threads(), chunks)
    taken = iter(range(chunks))  # next() on a range iterator is atomic under the GIL: each chunk is taken once

    def work() -> None:
        g = torch.Generator()
        for i in taken:
            g.manual_seed(_chunk_seed(base, i))
            flat[i * _CHUNK:(i + 1) * _CHUNK].normal_(generator=g)

    if k <= 1:
        work()
        return buf
    global _POOL, _POOL_WORKERS
    if _POOL_WORKERS < k - 1:
        from concurrent.futures import ThreadPoolExecutor
        _POOL, _POOL_WORKERS = ThreadPoolExecutor(max_workers=k - 1, thread_name_prefix="vant-noise"), k - 1
    futures = [_POOL.submit(work) for _ in range(k - 1)]
    work()
    for f in futures:
        f.result()
    return buf


def _standard_normal(x: Tensor) -> Tensor:
    # Contiguous fp32 draw regardless of x's layout: randn_like on a channels-last CPU tensor
    # was measured ~6x slower (spec, "Observed in practice").
    if torch.compiler.is_compiling():
        return torch.randn(x.shape, device=x.device, dtype=torch.float32)
    return normal_(torch.empty(x.shape, device=x.device, dtype=torch.float32))


def additive(x: Tensor, sigma: Tensor) -> Tensor:
    """``x + sigma * eps`` with ``eps ~ N(0, 1)`` per element (the paper's noise).

    Two implementations with the same distribution: under ``torch.compile`` the plain expression,
    which inductor fuses with its neighbours (on CUDA the normal draws are generated inside the fused
    kernel); in eager mode :class:`_AddNoise`, which draws into one fresh buffer and adds ``x`` in
    place (one allocation and two passes instead of three and three).
    """
    s = broadcast_sigma(sigma.to(device=x.device, dtype=torch.float32), x)
    if torch.compiler.is_compiling() or s.requires_grad:
        return (x.float() + s * _standard_normal(x)).to(x.dtype)
    return _AddNoise.apply(x, s)


class _AddNoise(torch.autograd.Function):
    """Eager additive noise with an identity backward (the noise does not depend on ``x``)."""

    @staticmethod
    def forward(ctx, x: Tensor, s: Tensor) -> Tensor:
        # Dense layouts keep x's memory format (channels-last on CUDA); randn_like on a channels-last
        # CPU tensor is slow (spec, "Observed in practice"), so there the draw is contiguous.
        dense_ok = x.device.type != "cpu" or x.is_contiguous()
        eps = torch.empty_like(x, dtype=torch.float32) if dense_ok else torch.empty(x.shape, dtype=torch.float32)
        normal_(eps)
        if eps.stride() == x.stride():
            out = torch.addcmul(x, s, eps, out=eps)  # in place over the draw: x + s * eps
        else:
            out = torch.addcmul(x, s, eps)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def multiplicative(x: Tensor, sigma: Tensor) -> Tensor:
    """``x * eta`` with ``eta ~ N(1, sigma^2)`` per element (mean one, unlike the authors' broken op)."""
    s = broadcast_sigma(sigma.to(device=x.device, dtype=torch.float32), x)
    return (x.float() * (1.0 + s * _standard_normal(x))).to(x.dtype)


def mixed(x: Tensor, sigma_mul: Tensor, sigma_add: Tensor, mul_first: bool = True) -> Tensor:
    """``x * eta + eps`` (``mul_first``) or ``(x + eps) * eta``; eta ~ N(1, sigma_mul^2), eps ~ N(0, sigma_add^2)."""
    sm = broadcast_sigma(sigma_mul.to(device=x.device, dtype=torch.float32), x)
    sa = broadcast_sigma(sigma_add.to(device=x.device, dtype=torch.float32), x)
    xf = x.float()
    eta = 1.0 + sm * _standard_normal(x)
    eps = sa * _standard_normal(x)
    y = xf * eta + eps if mul_first else (xf + eps) * eta
    return y.to(x.dtype)


class NoiseSite(nn.Module):
    """One injection point. Holds sigma as a non-persistent buffer, so ``state_dict`` is unchanged.

    ``sigma`` is either 0-dim or ``[B]``. For ``kind="mixed"`` sigma is the amplitude A and
    ``ratio`` r splits it: sigma_add = A*r, sigma_mul = A*(1-r) (Walking Noise convention).
    ``active`` is a Python flag cleared when sigma is set to the number 0, so silent sites (clean
    evaluation, walking noise) cost nothing. :func:`check_sigma` vets what :meth:`set` is given; a tensor
    on CUDA is checked for dtype and shape only, never read (no device sync).
    """

    def __init__(self, name: str, kind: str = "add", ratio: float = 0.5, mul_first: bool = True):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown noise kind {kind!r}; choose one of {KINDS}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"mixed-noise ratio must lie in [0, 1], got {ratio}")
        self.name = name
        self.kind = kind
        self.ratio = float(ratio)
        self.mul_first = mul_first
        self.active = False
        self._owned = True
        self.register_buffer("sigma", torch.zeros(()), persistent=False)

    def set(self, sigma: Tensor | float, check: bool = True) -> None:
        """Set sigma. A tensor is stored as given (shared, no copy); a number fills a buffer this
        site owns, in place, so per-batch changes neither allocate nor recompile. ``check=False``
        skips :func:`check_sigma` (for a caller that has already checked the value)."""
        if check:
            sigma = check_sigma(sigma, self.name)
        if isinstance(sigma, Tensor):
            if not torch.is_floating_point(sigma):
                sigma = sigma.float()
            self.sigma = sigma.to(self.sigma.device)
            self._owned = False
            self.active = True
            return
        value = float(sigma)
        if self.sigma.dim() != 0 or not self._owned:
            self.sigma = torch.zeros((), device=self.sigma.device)
            self._owned = True
        self.sigma.fill_(value)
        self.active = value != 0.0

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return x
        if self.kind == "add":
            return additive(x, self.sigma)
        if self.kind == "mul":
            return multiplicative(x, self.sigma)
        return mixed(x, self.sigma * (1.0 - self.ratio), self.sigma * self.ratio, self.mul_first)

    def extra_repr(self) -> str:
        s = self.sigma
        shown = f"{s.item():.4g}" if s.dim() == 0 else f"per-sample[{s.shape[0]}]"
        extra = f", ratio={self.ratio}" if self.kind == "mixed" else ""
        return f"site={self.name!r}, kind={self.kind}, sigma={shown}{extra}, active={self.active}"


def check_sigma(sigma, site: str | None = None):
    """Refuse what is not a noise level; return ``sigma`` (a number as a float, a tensor as given).

    A number must be real (not a bool), finite and >= 0. A tensor must be real (not bool or
    complex) and 0-dim or ``[batch]``; on the CPU its values are checked too, with one vectorised
    ``aminmax`` (NaN propagates through min and max). On any other device (CUDA) only dtype and shape
    are checked: reading the values would synchronise the device once per batch. There a negative
    entry acts as its absolute value (every noise op is symmetric in sigma) and a NaN or infinite
    entry makes the output NaN. ``site`` names the site in the message.
    """
    where = "" if site is None else f" for site {site!r}"
    if isinstance(sigma, Tensor):
        if sigma.dtype == torch.bool or sigma.is_complex():
            raise TypeError(f"sigma{where} must be a real tensor, got dtype {sigma.dtype}")
        if sigma.dim() > 1:
            raise ValueError(f"sigma{where} must be a 0-dim or a [batch] tensor, got shape {tuple(sigma.shape)}")
        if sigma.device.type == "cpu" and sigma.numel():
            # One aminmax kernel (min and max propagate NaN): measured ~8 us for [128], where
            # isfinite(t).all() and (t >= 0).all() took ~50 us (isfinite is several kernels).
            lo, hi = torch.aminmax(sigma.detach())
            if not (lo.item() >= 0 and hi.item() < math.inf):
                raise ValueError(f"sigma{where} must be finite and >= 0; {_bad_entries(sigma)}")
        return sigma
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        what = "a number, a 0-dim or [batch] tensor" + (", or a mapping {site name or index: sigma}" if site is None else "")
        raise TypeError(f"sigma{where} must be {what}; got {type(sigma).__name__} {sigma!r}")
    value = float(sigma)
    if not 0.0 <= value < math.inf:  # NaN fails both comparisons
        raise ValueError(f"sigma{where} must be a finite number >= 0, got {value}")
    return value


def _bad_entries(sigma: Tensor) -> str:
    """``"got -1.0"`` for a 0-dim tensor; for a vector how many entries are bad and the first few."""
    t = sigma.detach().float()
    if t.dim() == 0:
        return f"got {t.item()}"
    bad = (~(torch.isfinite(t) & (t >= 0))).nonzero().flatten()
    shown = ", ".join(f"sigma[{i}] = {t[i].item():.6g}" for i in bad[:3].tolist())
    return f"{len(bad)} of {t.numel()} entries are negative, NaN or infinite ({shown}{', ...' if len(bad) > 3 else ''})"
