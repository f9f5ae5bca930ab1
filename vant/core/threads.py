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


#: Set to 1 for CPU runs whose numbers do not depend on the thread count (README, Speed), at a cost.
DETERMINISTIC_ENV = "VANT_CPU_DETERMINISTIC"


def cpu_deterministic() -> bool:
    """Whether ``VANT_CPU_DETERMINISTIC`` asks for thread-count-independent CPU math."""
    return os.environ.get(DETERMINISTIC_ENV, "").strip() not in ("", "0")


def set_mkl_reproducible() -> bool:
    """With ``VANT_CPU_DETERMINISTIC=1``: MKL's strict reproducible mode (``MKL_CBWR=AUTO,STRICT``),
    in which its GEMM gives the same bits for any thread count. MKL reads the setting when it first
    runs, so call this before any matrix product (``vant`` on the command line does); it returns
    False and changes nothing if the variable is already set or determinism was not asked for."""
    if not cpu_deterministic() or "MKL_CBWR" in os.environ:
        return False
    os.environ["MKL_CBWR"] = "AUTO,STRICT"
    return True
