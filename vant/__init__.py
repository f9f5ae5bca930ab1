"""vant: harden neural networks against noisy analog hardware (NT and Variance-Aware Noisy Training).

The library surface is small:

    import vant
    model = vant.create_model("resnet18")        # or any torchvision model: torchvision.models.resnet18()
    vant.inject_noise_(model)                      # the paper's sites; state_dict keys unchanged
    vant.set_sigma_(model, 0.5)                    # one sigma for every site, a [B] tensor, or {site: sigma}
"""
from .fastpath import compile_noisy
from .inject import INPUT, PAPER_TYPES, inject_noise_, list_modules, noise_sites, remove_noise_, select_sites, set_sigma_
from .models import create_model, list_models, register_model
from .noise import NoiseSite, additive, mixed, multiplicative
from .qat import quantize_
from .sam import SAM
from .samplers import ConstantSampler, EmpiricalSampler, VantSampler, WarmupSampler, make_sampler

__version__ = "0.1.0"

__all__ = [
    "INPUT", "PAPER_TYPES", "inject_noise_", "list_modules", "noise_sites", "remove_noise_", "select_sites",
    "set_sigma_", "create_model", "list_models", "register_model", "NoiseSite", "additive", "mixed",
    "multiplicative", "quantize_", "SAM", "ConstantSampler", "EmpiricalSampler", "VantSampler", "WarmupSampler", "make_sampler",
    "compile_noisy", "__version__",
]
