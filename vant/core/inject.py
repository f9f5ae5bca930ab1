"""The transform: put noise sites into any ``nn.Module`` from outside, and take them out again.

A site is a :class:`~vant.core.noise.NoiseSite` attached to a *host* module as a child named
``vant_noise`` (noise on the host's output, through a forward hook) or ``vant_input_noise``
(noise on the host's first input, through a forward pre-hook; used for the network input).
Sites own no persistent state, so ``state_dict`` keys never change: a clean checkpoint loads
into a noisy model and back. Hooks fire on every call, so a module called twice in one forward
(torchvision's shared block ReLU) draws fresh noise each time.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Union

import torch
from torch import Tensor, nn

from .noise import NoiseSite

OUTPUT_ATTR = "vant_noise"
INPUT_ATTR = "vant_input_noise"
INPUT = "input"  # the name of the network-input site

CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.Tanh, nn.Sigmoid)
POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool2d,
)
#: Module types that carry a site under the paper's placement (spec 1.3): every conv/linear
#: output (before any BatchNorm, since BN is a separate module), every activation call, every
#: pooling output; the logits are the last Linear's output. BatchNorm outputs are never sites.
PAPER_TYPES = CONV_LINEAR + ACTIVATIONS + POOLS
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

# Layers defined outside the core (quantized layers, say) tell the core how to treat them by
# registering here (vant/baselines/qat.py does); the core never imports them.
_SITE_TYPE_PROVIDERS: list[Callable[[], tuple[type, ...]]] = []
_OPAQUE_TYPE_PROVIDERS: list[Callable[[], tuple[type, ...]]] = []


def register_site_types(site_types: Callable[[], tuple[type, ...]] | None = None,
                        opaque_types: Callable[[], tuple[type, ...]] | None = None) -> None:
    """Teach the paper placement about layer types defined elsewhere.

    ``site_types()`` returns extra module types that carry a site under ``sites="paper"`` (e.g.
    quantized activations); ``opaque_types()`` returns types whose inner modules are never sites
    (e.g. a quantized layer's quantizer proxies). Both are called at each placement, so they can
    answer lazily (empty until an optional library is loaded).
    """
    if site_types is not None and site_types not in _SITE_TYPE_PROVIDERS:
        _SITE_TYPE_PROVIDERS.append(site_types)
    if opaque_types is not None and opaque_types not in _OPAQUE_TYPE_PROVIDERS:
        _OPAQUE_TYPE_PROVIDERS.append(opaque_types)


def _opaque_types() -> tuple[type, ...]:
    return tuple(t for f in _OPAQUE_TYPE_PROVIDERS for t in f())


SiteFilter = Callable[[nn.Module, str], bool]
Sites = Union[str, Iterable[str], SiteFilter]


def _output_hook(module: nn.Module, args, output):
    if not isinstance(output, Tensor):
        site = module._modules[OUTPUT_ATTR]
        raise TypeError(f"noise site {site.name!r}: output is {type(output).__name__}, not a Tensor")
    return module._modules[OUTPUT_ATTR](output)


def _input_hook(module: nn.Module, args):
    return (module._modules[INPUT_ATTR](args[0]),) + tuple(args[1:])


def _host(module: nn.Module, end: int) -> nn.Module:
    """A Sequential runs its children, so a site cannot live on it: its input is the input of its
    first module and its output the output of its last (recursively)."""
    while isinstance(module, nn.Sequential):
        if len(module) == 0:
            raise ValueError("cannot place noise on an empty nn.Sequential")
        module = module[end]
    return module


def paper_types() -> tuple[type, ...]:
    """:data:`PAPER_TYPES` plus the types registered with :func:`register_site_types` (Brevitas'
    quantized activations once Brevitas is loaded; its quantized convs and linears already subclass
    ``nn.Conv2d``/``nn.Linear``)."""
    return PAPER_TYPES + tuple(t for f in _SITE_TYPE_PROVIDERS for t in f())


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    opaque = _opaque_types()  # quantized layers: their inner modules (quantizer proxies) are not sites
    inside: list[str] = []
    out = []
    for name, m in model.named_modules():
        if not name or isinstance(m, NoiseSite) or isinstance(m, (nn.ModuleList, nn.ModuleDict)):
            continue
        if any(name.startswith(p) for p in inside):
            continue
        if opaque and isinstance(m, opaque):
            inside.append(name + ".")
        out.append((name, m))
    return out


def _is_leaf(m: nn.Module) -> bool:
    opaque = _opaque_types()
    return not any(True for _ in m.children()) or bool(opaque and isinstance(m, opaque))


def select_sites(model: nn.Module, sites: Sites = "paper", types: tuple[type, ...] | None = None) -> list[str]:
    """Names of the modules (plus ``"input"``) that ``sites`` selects, in module order.

    ``sites`` is ``"paper"`` (the spec's placement: input + :data:`PAPER_TYPES`), ``"all"`` (input +
    every leaf module), a list of ``fnmatch`` patterns over module names (``"input"`` names the
    network input), or a callable ``filter_fn(module, name) -> bool``. ``types`` restricts the
    modules a pattern or filter may select (default :data:`PAPER_TYPES`). A pattern that matches
    nothing is an error that names it.
    """
    cands = _candidates(model)
    if isinstance(sites, str) and sites == "paper":
        return [INPUT] + [n for n, m in cands if isinstance(m, paper_types())]
    if isinstance(sites, str) and sites == "all":
        return [INPUT] + [n for n, m in cands if _is_leaf(m)]
    allowed = paper_types() if types is None else tuple(types)
    if callable(sites):
        chosen = [n for n, m in cands if isinstance(m, allowed) and sites(m, n)]
        if not chosen:
            raise ValueError("the site filter selected no module of types " + ", ".join(t.__name__ for t in allowed))
        return chosen
    patterns = [sites] if isinstance(sites, str) else list(sites)
    if not patterns:
        raise ValueError("no site patterns given")
    chosen: list[str] = []
    for pat in patterns:
        hits = [INPUT] if fnmatch.fnmatchcase(INPUT, pat) else []
        hits += [n for n, m in cands if isinstance(m, allowed) and fnmatch.fnmatchcase(n, pat)]
        if not hits:
            close = [n for n, _ in cands if fnmatch.fnmatchcase(n, pat)]
            why = (f" (it matches {close[:3]} but none is of the allowed types)" if close else "")
            raise ValueError(f"site pattern {pat!r} matches no module{why}; see vant.list_modules(model)")
        chosen += [h for h in hits if h not in chosen]
    order = {n: i for i, (n, _) in enumerate(cands)}
    return sorted(chosen, key=lambda n: -1 if n == INPUT else order[n])


def inject_noise_(
    model: nn.Module,
    sites: Sites = "paper",
    kind: str = "add",
    *,
    types: tuple[type, ...] | None = None,
    ratio: float = 0.5,
    mul_first: bool = True,
) -> list[str]:
    """Attach noise sites to ``model`` in place and return their names (``"input"`` first).

    All sites start silent (sigma = 0); turn them on with :func:`set_sigma_`. See
    :func:`select_sites` for ``sites``/``types``; ``kind`` is ``"add"``, ``"mul"`` or ``"mixed"``
    (``ratio`` is sigma_add / amplitude for mixed noise).
    """
    if noise_sites(model):
        raise RuntimeError("model already has noise sites; call vant.remove_noise_(model) before injecting again")
    names = select_sites(model, sites, types)
    modules = dict(model.named_modules())
    placed: dict[int, str] = {}
    plan = []
    for name in names:
        attr = INPUT_ATTR if name == INPUT else OUTPUT_ATTR
        host = _host(model if name == INPUT else modules[name], 0 if name == INPUT else -1)
        key = id(host) * 2 + (attr == INPUT_ATTR)
        if key in placed:
            raise ValueError(f"sites {placed[key]!r} and {name!r} are the same point in the network")
        placed[key] = name
        plan.append((name, attr, host))
    device = next((t.device for t in model.parameters()), None) or next((t.device for t in model.buffers()), torch.device("cpu"))
    for name, attr, host in plan:
        site = NoiseSite(name, kind, ratio=ratio, mul_first=mul_first).to(device)
        host.add_module(attr, site)
        hook = _input_hook if attr == INPUT_ATTR else _output_hook
        site._vant_handle = (host.register_forward_pre_hook(hook) if attr == INPUT_ATTR
                             else host.register_forward_hook(hook))
    return names


def noise_sites(model: nn.Module) -> dict[str, NoiseSite]:
    """The model's sites by name, ``"input"`` first, then in module order (the walking-noise index)."""
    found = [m for m in model.modules() if isinstance(m, NoiseSite)]
    found.sort(key=lambda s: s.name != INPUT)
    return {s.name: s for s in found}


def remove_noise_(model: nn.Module) -> nn.Module:
    """Detach every site and hook; the model is then exactly the plain model again."""
    hosts = [m for m in model.modules() if not isinstance(m, NoiseSite)]
    removed = 0
    for host in hosts:
        for attr in (OUTPUT_ATTR, INPUT_ATTR):
            site = host._modules.get(attr)
            if isinstance(site, NoiseSite):
                site._vant_handle.remove()
                del host._modules[attr]
                removed += 1
    if not removed:
        raise RuntimeError("model has no noise sites to remove")
    return model


def set_sigma_(model: nn.Module, sigma: float | Tensor | Mapping[str | int, float | Tensor]) -> None:
    """Set the noise level of every site.

    ``sigma`` is a number, a 0-dim tensor, a ``[B]`` tensor (one level per sample, shared by all
    sites), or a mapping from site name or index to a level, in which case every site not named
    is silent: ``set_sigma_(model, {3: 0.5})`` is walking (layer-wise) noise at site 3.
    """
    sites = noise_sites(model)
    if not sites:
        raise RuntimeError("model has no noise sites; call vant.inject_noise_(model) first")
    device = next(iter(sites.values())).sigma.device

    def prepare(v):
        return v.to(device, non_blocking=True) if isinstance(v, Tensor) else v

    if isinstance(sigma, Mapping):
        names = list(sites)
        levels: dict[str, float | Tensor] = {}
        for key, value in sigma.items():
            if isinstance(key, int):
                if not -len(names) <= key < len(names):
                    raise KeyError(f"site index {key} out of range: the model has {len(names)} sites")
                key = names[key]
            if key not in sites:
                raise KeyError(f"no noise site named {key!r}; sites are {names}")
            levels[key] = prepare(value)
        for name, site in sites.items():
            site.set(levels.get(name, 0.0))
        return
    value = prepare(sigma)
    for site in sites.values():
        site.set(value)


def list_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, type)`` of every module a site pattern can name; handy for writing patterns."""
    return [(INPUT, "input")] + [(n, type(m).__name__) for n, m in _candidates(model)]
