"""VANT in a PyTorch Lightning loop: a callback that sets the noise level before every batch.

    net = build_my_network()
    vant.inject_noise_(net)                                   # the sites go into the network itself
    module = MyLightningModule(net)                           # any LightningModule holding it
    trainer = lightning.Trainer(callbacks=[VantCallback(vant.VantSampler(1.0, theta=0.4), eval_sigma=1.0)])

In training, every batch gets one sigma per sample drawn from the sampler (what :func:`vant.fit`
does); in validation, test and predict every site is at the fixed ``eval_sigma``. The sampler's
generator state is saved in Lightning's checkpoints and restored on resume.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..core.inject import noise_sites, set_sigma_
from ..core.noise import check_sigma
from ..core.samplers import ConstantSampler, SigmaSampler

try:
    import lightning.pytorch as pl
except ImportError as e:
    raise ImportError('vant.integrations.lightning needs Lightning, an optional extra: pip install "vant[lightning]"') from e


def batch_size(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (a tensor, or the first
    one found in a tuple, list or mapping, depth first)."""
    if isinstance(batch, Tensor):
        if batch.dim() == 0:
            raise ValueError("VantCallback: the batch's first tensor is 0-dim; it has no batch dimension")
        return batch.shape[0]
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        try:
            return batch_size(item)
        except TypeError:
            continue
    raise TypeError(f"VantCallback: no tensor in the batch ({type(batch).__name__}) to take the batch size from")


class VantCallback(pl.Callback):
    """Sets the noise sites of the LightningModule (wherever they are inside it) before every batch.

    ``sampler``: a :class:`~vant.core.samplers.SigmaSampler` (``VantSampler`` for VANT), a number
    (NT: every sample at that sigma) or None (clean training: sites silent). Called as
    ``sampler(batch_size, epoch)`` with Lightning's current epoch. ``eval_sigma``: the one sigma of
    every site in validation, test and predict (0 = clean evaluation).
    """

    def __init__(self, sampler: SigmaSampler | float | None, eval_sigma: float = 0.0):
        if isinstance(sampler, bool) or not (sampler is None or isinstance(sampler, (SigmaSampler, int, float))):
            raise TypeError(f"VantCallback: sampler must be a vant sampler, a number or None, got "
                            f"{type(sampler).__name__} {sampler!r}")
        self.sampler = ConstantSampler(float(sampler)) if isinstance(sampler, (int, float)) else sampler
        self.eval_sigma = check_sigma(eval_sigma)
        if isinstance(self.eval_sigma, Tensor):
            raise TypeError("VantCallback: eval_sigma must be a number (one sigma for the whole evaluation)")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not noise_sites(pl_module):
            raise RuntimeError("VantCallback: the LightningModule has no noise sites; call vant.inject_noise_(network) "
                               "on the network it holds first")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.sampler is None:
            set_sigma_(pl_module, 0.0)
            return
        sigma = self.sampler(batch_size(batch), trainer.current_epoch)
        set_sigma_(pl_module, sigma.to(pl_module.device, non_blocking=True))

    def _evaluate(self, trainer, pl_module, *args) -> None:
        set_sigma_(pl_module, self.eval_sigma)

    on_validation_batch_start = on_test_batch_start = on_predict_batch_start = _evaluate

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict() if self.sampler is not None else None}

    def load_state_dict(self, state_dict: dict) -> None:
        if self.sampler is not None and state_dict.get("sampler") is not None:
            self.sampler.load_state_dict(state_dict["sampler"])

    def __repr__(self) -> str:
        return f"VantCallback(sampler={self.sampler!r}, eval_sigma={self.eval_sigma})"


__all__ = ["VantCallback", "batch_size"]
