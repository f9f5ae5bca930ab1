"""The fast path: a compiled noisy model whose noise is generated inside the fused kernels.

``torch.compile`` of a noisy model turns every site's ``x + sigma * eps`` into part of the kernel
that produces ``x``, so the noise costs no extra pass over memory. Three details decide whether it
is actually fast, and :func:`compile_noisy` handles them:

* Dynamo compiles the *root* module's input pre-hook (the ``input`` site) as a graph of its own;
  calling the model from a plain function puts the hook and the forward into one graph.
* Each call compiles for its own model: dynamo would otherwise hand a model the graph of another
  model of the same class, hooks (noise sites) or not. Inject the sites *before* compiling.
* sigma is a tensor buffer, so changing it (a number or one value per sample) never recompiles;
  ``dynamic=False`` gives the last, smaller batch its own static graph instead of turning the main
  one into a slower dynamic-shape graph.
* Where the random numbers come from. On CUDA inductor draws them with Philox inside the Triton
  kernel (fresh per call, seeded from the default CUDA generator, so ``torch.manual_seed`` still
  reproduces a run). On the CPU inductor's generator is a scalar Philox loop, measured several times
  slower than ``torch.randn``; there the graph keeps ATen's generator (``fallback_random``) and only
  the arithmetic around it is fused.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn


_serial = itertools.count()


def model_device(model: nn.Module) -> torch.device:
    """Where the model lives: its first parameter's device, else its first buffer's, else the CPU."""
    return next(itertools.chain((p.device for p in model.parameters()), (b.device for b in model.buffers()),
                                [torch.device("cpu")]))


def compile_noisy(model: nn.Module, device: torch.device | str | None = None, *, mode: str | None = None,
                  backend: str | Callable = "inductor", fallback_random: bool | None = None) -> Callable:
    """``torch.compile`` for a model with noise sites; returns a callable used like ``model(x)``.

    ``model`` itself is unchanged (train/eval it, save its ``state_dict``, set its sigma as usual);
    the callable runs it compiled. ``fallback_random`` (inductor only) keeps ATen's generator inside
    the graph; None chooses by ``device`` (default: where the parameters are): True on the CPU, False
    elsewhere. ``mode`` is passed to ``torch.compile`` (e.g. ``"max-autotune-no-cudagraphs"``).
    """
    if device is None:
        device = model_device(model)
    if fallback_random is None:
        fallback_random = torch.device(device).type == "cpu"

    def noisy_forward(*args, **kwargs):
        return model(*args, **kwargs)  # traced through nn.Module.__call__: the root's hooks are inlined

    # Dynamo keeps compiled graphs per code object and by default does not guard on module hooks, so
    # another model of the same class (a clean one, or one with other sites) would silently reuse this
    # graph, noise or no noise. A code object of its own ties this callable's graphs to this model.
    noisy_forward.__code__ = noisy_forward.__code__.replace(co_name=f"noisy_forward_{next(_serial)}")
    if backend != "inductor":
        return torch.compile(noisy_forward, dynamic=False, mode=mode, backend=backend)
    # torch.compile takes a mode or options, not both: spell the mode out as its options
    options = dict(torch._inductor.list_mode_options(mode, dynamic=False)) if mode else {}
    options["fallback_random"] = fallback_random
    return torch.compile(noisy_forward, dynamic=False, backend=backend, options=options)
