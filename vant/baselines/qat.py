"""Quantization-aware training (QAT) with Brevitas, the paper's 4-bit baseline (spec 2), as a transform.

``quantize_(model, bits=4)`` swaps, in place and under the same names, every ``nn.Conv2d`` for a
Brevitas ``QuantConv2d`` (int weights, one scale per output channel), every ``nn.Linear`` for a
``QuantLinear`` (int weights, one scale per tensor) and every ``nn.ReLU`` for a ``QuantReLU`` (unsigned
activations at the same bit width). Inputs, biases, BatchNorm and pooling stay float, as in the
authors' QAT models. Weights are copied, so a float checkpoint can start a QAT fine-tune. The
model's own layout is kept: LeNet's pooling stays as configured (``model.kwargs: {pool: max}``
gives the authors' QAT LeNet pooling) and its last Linear keeps its bias (the authors' has none).

Activation scale: ``act_scale=None`` is Brevitas' default, a scale initialised from statistics of
the first 300 training forward calls and then learned; a number ``s`` is the spec's *constant*
scale, ``max_val = M_b * s`` with the authors' M_4 = 15, M_8 = 256, M_16 = 65536 (2^b - 1 for other
widths), so ``s`` is the step between activation levels ("QAT with constant scaling factors").

Noise sites land where they do in the float model: quantized convs and linears are still
``nn.Conv2d``/``nn.Linear``, :func:`site_types` makes ``QuantReLU`` an activation site for the
paper's placement, and the injector does not look inside quantized layers. Noise is therefore
added to the *dequantized* activation after each ``QuantReLU``, and the next layer's input is
not re-quantized (inputs are not quantized), as in the authors' code.

Brevitas is an optional extra: ``pip install "vant[qat]"``. Importing this module does not import it.
"""
from __future__ import annotations

import sys

import torch
from torch import nn

from ..core.inject import register_site_types

#: The authors' activation range multipliers M_b for a constant scale (spec 2); 2^b - 1 elsewhere.
ACT_RANGE = {4: 15, 8: 256, 16: 65536}
#: Module types :func:`quantize_` replaces; any other conv or activation makes it refuse.
_SWAPPED = (nn.Conv2d, nn.Linear, nn.ReLU)
_UNSUPPORTED = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.ReLU6,
                nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Tanh, nn.Sigmoid, nn.PReLU)
#: Brevitas activations that carry a noise site under the paper's placement, like their float forms.
_QUANT_ACTIVATIONS = ("QuantReLU", "QuantHardTanh", "QuantTanh", "QuantSigmoid")


class MissingDependency(ImportError):
    """An optional extra is needed and not installed; the message says how to install it."""


def require_brevitas():
    """Import and return ``brevitas.nn``, or fail with the install command."""
    try:
        import brevitas.nn as qnn
    except ImportError:
        raise MissingDependency('quantization-aware training needs Brevitas, an optional extra: '
                                'pip install "vant[qat]"') from None
    return qnn


def site_types() -> tuple[type, ...]:
    """Brevitas activation types to treat as activation sites; empty unless Brevitas is loaded (so
    a float model never pays for, or depends on, the import)."""
    qnn = sys.modules.get("brevitas.nn")
    if qnn is None:
        return ()
    return tuple(getattr(qnn, name) for name in _QUANT_ACTIVATIONS if hasattr(qnn, name))


def opaque_types() -> tuple[type, ...]:
    """Brevitas layers whose inner modules (quantizer proxies, the float ReLU inside a QuantReLU)
    are never sites: noise belongs on the layer's output, not inside its quantizer."""
    mixin = sys.modules.get("brevitas.nn.mixin.base")
    return (mixin.QuantLayerMixin,) if mixin is not None else ()


register_site_types(site_types, opaque_types)  # the core asks these at each placement


def act_max_val(bits: int, scale: float) -> float:
    """``M_b * s``: the top of the activation range for constant step ``s`` at ``bits`` bits."""
    return float(ACT_RANGE.get(bits, 2**bits - 1)) * float(scale)


def _check(bits: int, act_scale: float | None) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"QAT bit width must be an integer in [2, 16], got {bits!r}")
    if act_scale is not None and not 0 < float(act_scale) < float("inf"):
        raise ValueError(f"QAT constant activation scale must be > 0 (or None for a learned scale), got {act_scale!r}")


def quantize_(model: nn.Module, bits: int = 4, act_scale: float | None = None) -> nn.Module:
    """Replace Conv2d/Linear/ReLU in ``model`` by Brevitas QAT layers at ``bits`` bits, in place.

    Raises if the model holds a conv or activation type this transform does not quantize (it
    names the module), if it is already quantized, or if Brevitas is missing.
    """
    _check(bits, act_scale)
    qnn = require_brevitas()
    if any(isinstance(m, opaque_types()) for m in model.modules()):
        raise RuntimeError("model is already quantized (it holds Brevitas layers)")
    for name, m in model.named_modules():
        if isinstance(m, _UNSUPPORTED) or (isinstance(m, _SWAPPED) and type(m) not in _SWAPPED):
            raise ValueError(f"cannot quantize module {name!r} ({type(m).__name__}): vant's QAT handles "
                             "Conv2d, Linear and ReLU (BatchNorm and pooling stay float)")
    replaced: dict[int, nn.Module] = {}  # a module used at two places (shared ReLU) stays one module

    def swap(parent: nn.Module) -> None:
        for child_name, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) not in replaced and type(child) in _SWAPPED:
                replaced[id(child)] = _quantized(qnn, child, bits, act_scale)
            if id(child) in replaced:
                parent._modules[child_name] = replaced[id(child)]
            else:
                swap(child)

    swap(model)
    if not replaced:
        raise ValueError("the model has no Conv2d, Linear or ReLU to quantize")
    return model


def _quantized(qnn, m: nn.Module, bits: int, act_scale: float | None) -> nn.Module:
    from brevitas.quant import Int8WeightPerChannelFloat, Int8WeightPerTensorFloat

    # The Int8 quantizers with their bit width overridden: signed, narrow range (2^b - 1 levels),
    # scale from the weights' abs-max; scaling_min_val as in the authors' util.py.
    weight = dict(weight_bit_width=bits, weight_scaling_min_val=2e-16)
    if isinstance(m, nn.Conv2d):
        q = qnn.QuantConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                            bias=m.bias is not None, padding_mode=m.padding_mode,
                            weight_quant=Int8WeightPerChannelFloat, **weight)
    elif isinstance(m, nn.Linear):
        q = qnn.QuantLinear(m.in_features, m.out_features, bias=m.bias is not None,
                            weight_quant=Int8WeightPerTensorFloat, **weight)
    else:
        return _quant_relu(qnn, bits, act_scale)
    with torch.no_grad():
        q.weight.copy_(m.weight)
        if m.bias is not None:
            q.bias.copy_(m.bias)
    return q.to(m.weight.device)


def _quant_relu(qnn, bits: int, act_scale: float | None) -> nn.Module:
    cls = _resumable_relu_class(qnn)
    if act_scale is None:
        return cls(bit_width=bits)
    from brevitas.inject.enum import ScalingImplType

    return cls(bit_width=bits, scaling_impl_type=ScalingImplType.CONST, max_val=act_max_val(bits, act_scale))


_RELU_CLASS = None


def _resumable_relu_class(qnn):
    """``QuantReLU`` that checkpoints its statistics phase.

    Brevitas' learned activation scale first averages statistics over 300 training calls, but
    its state_dict keeps only the current estimate, and loading one ends the phase early. A run
    killed during that phase would then not resume to the weights of an uninterrupted run. This
    subclass stores each scaling module's call counter and running statistic as extra state and
    puts them back after Brevitas has loaded its own keys.
    """
    global _RELU_CLASS
    if _RELU_CLASS is not None:
        return _RELU_CLASS

    class QuantReLU(qnn.QuantReLU):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._vant_stash = None
            self.register_load_state_dict_post_hook(_restore_stats_phase)

        def _stats_modules(self):
            return [(n, m) for n, m in self.named_modules() if hasattr(m, "collect_stats_steps") and hasattr(m, "counter")]

        def get_extra_state(self):
            return {n: dict(counter=int(m.counter), buffer=m.buffer.detach().clone()) for n, m in self._stats_modules()}

        def set_extra_state(self, state):
            self._vant_stash = state  # applied by the post hook, after the children have loaded

    QuantReLU.__qualname__ = "QuantReLU"
    QuantReLU.__module__ = __name__
    _RELU_CLASS = QuantReLU
    return QuantReLU


def _restore_stats_phase(module, incompatible_keys) -> None:
    state, module._vant_stash = module._vant_stash, None
    if not state:
        return
    for name, m in module._stats_modules():
        if name in state:
            m.counter = int(state[name]["counter"])
            with torch.no_grad():
                m.buffer.copy_(state[name]["buffer"])


def weight_levels(module: nn.Module) -> torch.Tensor:
    """Distinct quantized weight values per output channel of a Brevitas conv/linear layer (a check)."""
    w = module.quant_weight().value.detach()
    return torch.tensor([torch.unique(w[i]).numel() for i in range(w.shape[0])])
