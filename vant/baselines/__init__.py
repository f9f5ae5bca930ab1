"""Baselines the paper compares against: quantization-aware training (QAT, Brevitas) and SAM.

Importing this package registers QAT's layer types with the core's site placement
(:func:`vant.core.inject.register_site_types`); the core never imports a baseline.
"""
from . import qat  # noqa: F401  (registers the quantized layer types with the core)
