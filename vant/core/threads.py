"""CPU threading settings that must be made before torch is imported (no torch import here)."""
from __future__ import annotations

import os
import sys

#: libgomp's spin count that makes the multi-threaded noise draw pay on the CPU (README, Speed).
DEFAULT_SPIN = 10_000


def set_openmp_spin(count: int | None = DEFAULT_SPIN) -> bool:
    """Shorten how long torch's OpenMP workers spin-wait after each parallel op (``GOMP_SPINCOUNT``).

    A worker that spins holds the core that the multi-threaded noise draw
    (:func:`vant.core.noise.normal_`) needs: with a short spin, ResNet-18 VANT training on 2 CPU
    cores ran 0.85x clean instead of 0.77x. libgomp reads the setting once, when torch loads, so
    call this before ``import torch``; it returns False (and changes nothing) if torch is already
    loaded or the variable is already set. ``vant`` on the command line does this for you.
    """
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or count is None:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(int(count))
    return True
