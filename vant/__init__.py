"""vant: harden neural networks against noisy analog hardware (NT and Variance-Aware Noisy Training).

The library surface is small:

    import vant
    model = vant.create_model("resnet18")        # or any torchvision model: torchvision.models.resnet18()
    vant.inject_noise_(model)                      # the paper's sites; state_dict keys unchanged
    vant.set_sigma_(model, 0.5)                    # one sigma for every site, a [B] tensor, or {site: sigma}
    vant.fit(model, train_loader, epochs=10, sampler=vant.VantSampler(0.5, theta=0.25))
    rows = vant.sweep(model, test_loader, sigmas=[0.1, 0.5, 1.0], repeats=3, seed=0)

Importing vant changes nothing outside it (no environment variable, plotting backend or RNG) and
loads torch only when a name of the API is first used: ``vant --help`` answers at once, and the
command line can tune OpenMP before torch loads (:func:`set_openmp_spin`).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "vant.core.noise": ("NoiseSite", "additive", "mixed", "multiplicative", "set_cpu_noise_threads"),
    "vant.core.inject": ("INPUT", "PAPER_TYPES", "inject_noise_", "list_modules", "noise_sites", "remove_noise_",
                         "select_sites", "set_sigma_", "register_site_types"),
    "vant.core.samplers": ("ConstantSampler", "EmpiricalSampler", "VantSampler", "WarmupSampler", "make_sampler"),
    "vant.core.compile": ("compile_noisy",),
    "vant.core.threads": ("set_openmp_spin",),
    "vant.models": ("create_model", "list_models", "register_model"),
    "vant.baselines.qat": ("quantize_",),
    "vant.baselines.sam": ("SAM",),
    "vant.pipeline.train": ("fit",),
    "vant.pipeline.evaluate": ("sweep",),
}
_WHERE = {name: module for module, names in _API.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'vant' has no attribute {name!r}")
    if module != "vant.core.threads":
        importlib.import_module("vant.baselines")  # the baselines register their layer types with the core
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
