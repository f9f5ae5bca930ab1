"""The peers of bench/speed.py: hardware-aware training and analog inference in IBM's toolkits,
built on the same model, batch and machine as vant's clean/NT/VANT rows (``speed.py --peers``).

- ``lightning``: aihwkit-lightning's hardware-aware training, its ``TorchInferenceRPUConfig`` with
  output noise 0.06 (full-scale output units) and additive weight noise 0.02 (of max |w|), learned
  input ranges (the toolkit requires them), its PyTorch kernels (no Triton here), trained with its
  ``AnalogOptimizer`` around Adam. Inference: the same model in eval mode.
- ``aihwkit``: aihwkit's pure-torch inference tile (``TorchInferenceRPUConfig``; its C++ tiles do
  not load with torch 2.14), configured as vant's PCM device model (vant/scenarios/analog.py:
  output noise 0.06, 7-bit DAC, 9-bit ADC, bound 12) plus additive weight noise 0.02 for training,
  converted with aihwkit's own ``convert_to_analog`` (its conv unfolds with ``F.unfold``) and trained
  with ``AnalogAdam``. Inference: programmed with PCM noise and drifted to one hour; a second
  inference row uses vant's bridge (the same tile, convolutions unfolded by tensor views).

Installing them (aihwkit-lightning 2.1.0 pins torch==2.13.0, which would replace the torch vant runs
on; its code runs on 2.14, so it is installed without its dependencies):

    pip install "vant[aihwkit]"                              # aihwkit 1.1.0 (see pyproject.toml)
    pip install --no-deps aihwkit-lightning==2.1.0 && pip install typing_extensions tqdm
    pip show torch                                           # check the torch version did not change
"""
from __future__ import annotations

import importlib.metadata as md
import warnings

import torch

PEERS = ("lightning", "aihwkit")
OUT_NOISE, WEIGHT_NOISE = 0.06, 0.02
INSTALL = {"lightning": "pip install --no-deps aihwkit-lightning==2.1.0 && pip install typing_extensions tqdm",
           "aihwkit": 'pip install "vant[aihwkit]"'}


def versions(peers) -> dict:
    out = {}
    for p in peers:
        dist = "aihwkit-lightning" if p == "lightning" else "aihwkit"
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def check(peers) -> None:
    """Import every requested peer now, so a missing one fails before any timing starts."""
    for p in peers:
        if p not in PEERS:
            raise SystemExit(f"speed.py: unknown peer {p!r}; choose from {', '.join(PEERS)}")
        try:
            if p == "lightning":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    import aihwkit_lightning.nn.conversion  # noqa: F401
            else:
                import aihwkit.nn.conversion  # noqa: F401
        except ImportError as e:
            raise SystemExit(f"speed.py: --peers {p} needs it installed: {INSTALL[p]} ({e})") from None


def lightning_model(model: torch.nn.Module) -> torch.nn.Module:
    from aihwkit_lightning.nn.conversion import convert_to_analog
    from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
    from aihwkit_lightning.simulator.parameters.enums import WeightNoiseInjectionType

    cfg = TorchInferenceRPUConfig()
    cfg.forward.out_noise = OUT_NOISE
    cfg.modifier.noise_type = WeightNoiseInjectionType.ADD_NORMAL
    cfg.modifier.std_dev = WEIGHT_NOISE
    cfg.pre_post.input_range.enable = True  # lightning's analog linear asserts learned input ranges
    return convert_to_analog(model, cfg)


def lightning_optimizer(model: torch.nn.Module, lr: float = 1e-3):
    from aihwkit_lightning.optim import AnalogOptimizer

    return AnalogOptimizer(torch.optim.Adam, model.analog_layers, model.parameters(), lr=lr)


def aihwkit_model(model: torch.nn.Module, training: bool, vant_conv: bool = False) -> torch.nn.Module:
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.simulator.parameters.enums import WeightModifierType

    from vant.scenarios.analog import DeviceModel, rpu_config, to_analog

    if vant_conv:
        return to_analog(model, DeviceModel())
    cfg = rpu_config(DeviceModel())
    if training:
        cfg.modifier.type = WeightModifierType.ADD_NORMAL
        cfg.modifier.std_dev = WEIGHT_NOISE
    return convert_to_analog(model, cfg)


def aihwkit_optimizer(model: torch.nn.Module, lr: float = 1e-3):
    from aihwkit.optim import AnalogAdam

    return AnalogAdam(model.parameters(), lr=lr)


def training_peer(peer: str, model: torch.nn.Module):
    """(model, optimizer) of a peer's hardware-aware training of the plain ``model``."""
    if peer == "lightning":
        m = lightning_model(model).train()
        return m, lightning_optimizer(m)
    m = aihwkit_model(model, training=True).train()
    return m, aihwkit_optimizer(m)


@torch.no_grad()
def inference_peer(peer: str, model: torch.nn.Module, vant_conv: bool = False) -> torch.nn.Module:
    """A peer's analog model for inference: aihwkit programmed and drifted to 1 h; lightning in eval
    mode (input ranges at their initial value: the speed does not depend on it)."""
    if peer == "lightning":
        return lightning_model(model).eval()
    m = aihwkit_model(model, training=False, vant_conv=vant_conv).eval()
    torch.manual_seed(0)
    m.program_analog_weights()
    m.drift_analog_weights(3600.0)
    return m
