"""vant: harden neural networks against noisy analog hardware (NT and Variance-Aware Noisy Training).

The library surface is small:

    import vant
    model = vant.create_model("resnet18")        # or any torchvision model: torchvision.models.resnet18()
    vant.inject_noise_(model)                      # the paper's sites; state_dict keys unchanged
    vant.set_sigma_(model, 0.5)                    # one sigma for every site, a [B] tensor, or {site: sigma}
"""
import os as _os

# Before torch loads libgomp (it reads this once): an OpenMP worker that spin-waits after each
# parallel op holds the core that the multi-threaded noise draw (vant.noise.normal_) needs. With a
# short spin, ResNet-18 VANT training on 2 CPU cores ran 0.85x clean instead of 0.77x (README,
# Speed). Set GOMP_SPINCOUNT yourself to override; no effect if torch was imported first.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .fastpath import compile_noisy  # noqa: E402
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
