"""Sharpness-Aware Minimization (SAM, Foret et al. 2021) and its adaptive form (ASAM, Kwon et al. 2021).

SAM minimises the loss at the worst point of a small neighbourhood of the weights. Each step:

1. the usual forward/backward at w gives g = grad L(w);
2. the weights move to w + e(w), with e(w) = rho * T^2 g / ||T g||  (T = 1 for SAM, T = |w| + eta
   element-wise for ASAM; the authors' code, the widely used davda54 formulation, has eta = 0);
3. a second forward/backward at w + e(w) gives the gradient the base optimizer will use;
4. the weights go back to w, and the base optimizer (Adam here) steps with that second gradient.

This is not an optimizer class: :class:`SAM` only moves the weights out and back, so the base
optimizer, its state_dict, the LR scheduler and checkpoints are untouched. The training loop
reads::

    loss = loss_fn(model(x)); loss.backward()
    with sam.perturbed(model):                 # w -> w + e(w), BN running statistics frozen
        optimizer.zero_grad(); loss_fn(model(x)).backward()
    optimizer.step()                           # at w, with the gradient taken at w + e(w)

No PyPI package was used: none maintained implements SAM as a plain two-step helper (the PyPI
"sam" names are other projects); this is written from the papers' update rule.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class SAM:
    """Moves parameters to the SAM/ASAM ascent point and back. ``rho`` is the neighbourhood radius
    (in the T-scaled norm), ``adaptive`` selects ASAM, ``eta`` ASAM's offset for zero weights."""

    def __init__(self, params: Iterable[nn.Parameter], rho: float = 0.5, adaptive: bool = True, eta: float = 0.0):
        if not rho > 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        if eta < 0:
            raise ValueError(f"ASAM eta must be >= 0, got {eta}")
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("SAM got no trainable parameters")
        self.rho, self.adaptive, self.eta = float(rho), bool(adaptive), float(eta)
        self._saved: list[tuple[nn.Parameter, torch.Tensor]] | None = None

    @torch.no_grad()
    def ascent(self) -> float:
        """Add e(w) to every parameter that has a gradient; returns ||T g|| (0 leaves w unchanged)."""
        if self._saved is not None:
            raise RuntimeError("SAM.ascent called twice without restore()")
        with_grad = [p for p in self.params if p.grad is not None]
        if not with_grad:
            raise RuntimeError("SAM needs the first backward pass: no parameter has a gradient")
        scaled = [(p.abs() + self.eta) * p.grad if self.adaptive else p.grad for p in with_grad]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s.float()) for s in scaled]))
        factor = self.rho / (norm + 1e-12)
        offsets = [(s * (p.abs() + self.eta) if self.adaptive else s) * factor.to(p.dtype) for p, s in zip(with_grad, scaled)]
        self._saved = [(p, p.detach().clone()) for p in with_grad]  # restored by copy: w + e - e is not w in floats
        for p, e in zip(with_grad, offsets):
            p.add_(e)
        return float(norm)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights of before :meth:`ascent`, leaving the gradients (now those at
        w + e(w)) in place."""
        if self._saved is None:
            raise RuntimeError("SAM.restore called without ascent()")
        for p, old in self._saved:
            p.copy_(old)
        self._saved = None

    @contextmanager
    def perturbed(self, model: nn.Module | None = None) -> Iterator[None]:
        """``ascent()`` on entry and ``restore()`` on exit; with ``model``, its BatchNorm running
        statistics are frozen meanwhile, so the perturbed pass does not count twice in them."""
        self.ascent()
        try:
            with frozen_bn_stats(model) if model is not None else _nothing():
                yield
        finally:
            self.restore()


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Batch statistics still normalise the batch, but running mean/var are not updated."""
    saved = [(m, m.momentum) for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    counts = [m.num_batches_tracked.clone() for m, _ in saved if m.num_batches_tracked is not None]
    for m, _ in saved:
        m.momentum = 0.0
    try:
        yield
    finally:
        it = iter(counts)
        for m, momentum in saved:
            m.momentum = momentum
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(next(it))


@contextmanager
def _nothing() -> Iterator[None]:
    yield
