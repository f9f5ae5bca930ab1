"""The transform: put noise sites into any ``nn.Module`` from outside, and take them out again.

A site is a :class:`~vant.core.noise.NoiseSite` attached to a *host* module as a child named
``vant_noise`` (noise on the host's output, through a forward hook) or ``vant_input_noise``
(noise on the host's first input, through a forward pre-hook; used for the network input).
Sites own no persistent state, so ``state_dict`` keys never change: a clean checkpoint loads
into a noisy model and back. Hooks fire on every call, so a module called twice in one forward
(torchvision's shared block ReLU) draws fresh noise each time.
"""
from __future__ import annotations

import difflib
import fnmatch
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Union

import torch
from torch import Tensor, nn

from .noise import KINDS, NoiseSite, check_sigma

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
SITES_ACCEPTED = ('"paper", "all", a list of fnmatch patterns over module names ("input" = the network input), '
                  'or a callable filter_fn(module, name) -> bool')


def _check_model(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")


def _site_patterns(sites) -> list[str]:
    """``sites`` (neither "paper", "all" nor a callable) as a non-empty list of pattern strings."""
    if isinstance(sites, str):
        return [sites]
    if isinstance(sites, type):
        raise TypeError(f"sites must be {SITES_ACCEPTED}; got the class {sites.__name__} "
                        f"(to select modules by type, pass types=({sites.__name__},) with a pattern such as '*')")
    if sites is None or isinstance(sites, (bytes, Mapping)) or not isinstance(sites, Iterable):
        raise TypeError(f"sites must be {SITES_ACCEPTED}; got {type(sites).__name__} {sites!r}")
    patterns = list(sites)
    if not patterns:
        raise ValueError(f"sites is empty: no site patterns given; sites must be {SITES_ACCEPTED}")
    bad = [p for p in patterns if not isinstance(p, str)]
    if bad:
        raise TypeError(f"site patterns must be strings, got {type(bad[0]).__name__} {bad[0]!r} in {patterns!r}; "
                        f"sites must be {SITES_ACCEPTED}")
    return patterns


def _check_types(types) -> tuple[type, ...]:
    items = (types,) if isinstance(types, type) else types
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise TypeError(f"types must be a tuple of module classes, got {type(types).__name__} {types!r}")
    items = tuple(items)
    bad = [t for t in items if not (isinstance(t, type) and issubclass(t, nn.Module))]
    if bad or not items:
        what = f"{bad[0]!r} is not an nn.Module subclass" if bad else "it is empty"
        raise TypeError(f"types must be a non-empty tuple of nn.Module subclasses; {what}")
    return items


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
    _check_model(model, "select_sites")
    if types is not None:
        types = _check_types(types)
    named = isinstance(sites, str) and sites in ("paper", "all")
    is_filter = callable(sites) and not isinstance(sites, type)
    patterns = None if named or is_filter else _site_patterns(sites)  # refuse a bad sites before any work
    cands = _candidates(model)
    if named and sites == "paper":
        return [INPUT] + [n for n, m in cands if isinstance(m, paper_types())]
    if named:
        return [INPUT] + [n for n, m in cands if _is_leaf(m)]
    allowed = paper_types() if types is None else types
    if is_filter:
        chosen = [n for n, m in cands if isinstance(m, allowed) and sites(m, n)]
        if not chosen:
            raise ValueError("the site filter selected no module of types " + ", ".join(t.__name__ for t in allowed))
        return chosen
    chosen: list[str] = []
    for pat in patterns:
        hits = [INPUT] if fnmatch.fnmatchcase(INPUT, pat) else []
        hits += [n for n, m in cands if isinstance(m, allowed) and fnmatch.fnmatchcase(n, pat)]
        if not hits:
            close = [n for n, _ in cands if fnmatch.fnmatchcase(n, pat)]
            why = (f" (it matches {close[:3]} but none is of the allowed types)" if close else "")
            guess = difflib.get_close_matches(pat, ["paper", "all"], n=1, cutoff=0.6)
            hint = f"; did you mean {guess[0]!r}?" if guess and not close else ""
            raise ValueError(f"site pattern {pat!r} matches no module{why}{hint}; sites must be {SITES_ACCEPTED} "
                             "(see vant.list_modules(model) for the module names)")
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
    _check_model(model, "inject_noise_")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(map(repr, KINDS))}")
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mixed-noise ratio must be a number in [0, 1], got {ratio!r}")
    if not isinstance(mul_first, bool):
        raise TypeError(f"mul_first must be True or False, got {type(mul_first).__name__} {mul_first!r}")
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
    _check_model(model, "remove_noise_")
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

    Checked (:func:`~vant.core.noise.check_sigma`, once per call, not once per site): a number must
    be real, not a bool, finite and >= 0 (ValueError naming it, and the site for a mapping); a
    tensor must be real and 0-dim or ``[B]``; a CPU tensor must also be finite and >= 0 everywhere
    (one vectorised test; a CPU tensor is checked before it is copied to the model's device). A
    tensor already on CUDA is checked for dtype and shape only: its values are not read, since that
    would synchronise the device every batch; a negative entry then acts as its absolute value and
    a NaN or infinite one makes the outputs NaN. Whether ``B`` is the batch size is checked when
    the model runs. Mapping keys must name a site (KeyError listing the sites), a site at most once.
    """
    _check_model(model, "set_sigma_")
    sites = noise_sites(model)
    if not sites:
        raise RuntimeError("model has no noise sites; call vant.inject_noise_(model) first")
    device = next(iter(sites.values())).sigma.device

    def prepare(v, site=None):
        v = check_sigma(v, site)
        return v.to(device, non_blocking=True) if isinstance(v, Tensor) else v

    if isinstance(sigma, Mapping):
        names = list(sites)
        levels: dict[str, float | Tensor] = {}
        for key, value in sigma.items():
            name = _site_key(key, names)
            if name in levels:
                raise ValueError(f"site {name!r} is given twice in the sigma mapping (keys {list(sigma)!r})")
            levels[name] = prepare(value, name)
        for name, site in sites.items():
            site.set(levels.get(name, 0.0), check=False)
        return
    value = prepare(sigma)
    for site in sites.values():
        site.set(value, check=False)


def _site_key(key, names: list[str]) -> str:
    """The site name a mapping key (a name or an index into ``names``) stands for."""
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if isinstance(key, str):
        if key not in names:
            raise KeyError(f"no noise site named {key!r}; sites (index: name) are {listing}")
        return key
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise TypeError(f"sigma mapping keys are site names or indices, got {type(key).__name__} {key!r}; "
                        f"sites (index: name) are {listing}")
    n = len(names)
    if not -n <= key < n:
        raise KeyError(f"site index {key} out of range: the model has {n} sites, indices 0..{n - 1} "
                       f"(or -{n}..-1); sites (index: name) are {listing}")
    return names[int(key)]


def list_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, type)`` of every module a site pattern can name; handy for writing patterns."""
    _check_model(model, "list_modules")
    return [(INPUT, "input")] + [(n, type(m).__name__) for n, m in _candidates(model)]
