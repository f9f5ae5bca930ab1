"""Calibrate vant's σ from an aihwkit device model, and check how well vant's noise predicts it.

vant's σ is **absolute**: the std of a Gaussian added to an activation, in that activation's own
units (spec 1.1; ``train.sigma``, scenario unit ``activation_std``). A device model does not add
noise in those units: aihwkit's errors scale with each layer's weight range and each input's
range, so the σ it amounts to depends on the network (a model trained with vant's noise learns
larger activations; on the CIFAR-10 LeNet-5 the NT model's layer outputs are 6-13 times the clean
model's). Calibration is therefore done for one trained run:

- For each programmed chip r (torch seed ``seed + r``, the same chips as
  :func:`~vant.scenarios.analog.evaluate_device`) and each time t, every ``Conv2d``/``Linear``
  of the analog twin is fed the *exact* input that layer gets in the digital network (so errors do
  not pile up from layer to layer), and its output is compared with the exact output:
  ``sigma`` = std of (analog - exact) over all output elements of ``images`` training images, in
  the layer's output units: the σ of vant's site on that layer's output. Beside it each row keeps
  ``act_std`` (the std of the exact output: sigma/act_std is the relative noise), ``gain`` (least
  squares slope of analog on exact: drift without compensation shrinks every output, a gain error
  that an additive σ can only mimic) and ``resid`` (the std left after that gain).
- The scenario: one σ per (chip, time), the root mean square of the layers' σ, written as a vant
  scenario file (``kind: fleet_trajectory`` with ``measurements``: each chip a device, time in
  seconds). Train against it as any scenario (``from_scenario: vant_fit`` or ``empirical`` in a grid,
  or the ``train.*`` overrides that :func:`calibrate` prints), evaluate with ``vant evaluate
  --scenario``. Scenario weights count time linearly, so its σ mean and spread are dominated by
  the long times (30 days to 1 year hold ~96% of the weight of 1 s..1 year).
- :func:`predict` asks how well vant's own evaluation foresees the device: per chip and time it
  evaluates the run with vant's noise at the calibrated σ, once per layer (each Conv2d/Linear
  output site at its own σ, the other sites silent) and once global (the scenario's σ at every
  site, as training uses it), beside the aihwkit accuracy of the same chips.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.inject import noise_sites, set_sigma_
from ..core.metrics import mean_std_ci
from ..pipeline.runs import Run, load_trained, run_threads
from ..pipeline.store import lock, read_csv, write_csv, write_text_atomic
from ..tables import fmt, markdown
from .analog import (CHUNK, DEFAULT_TIMES, DeviceModel, cell_seed, count_correct, drift_, eval_subset, evaluate_device,
                     missing_cells, open_finished, plain_copy, program_, require_aihwkit, same_backend, time_label,
                     to_analog)
from .fit import scenario_settings
from .spec import Scenario, save_scenario, scenario_from_dict

CAL_FIELDS = ["time", "repeat", "seed", "read_seed", "layer", "n", "sigma", "act_std", "gain", "resid"]
CAL_NUMERIC = [f for f in CAL_FIELDS if f != "layer"]
PRED_FIELDS = ["time", "repeat", "seed", "mode", "sigma", "correct", "total", "accuracy"]
PRED_NUMERIC = [f for f in PRED_FIELDS if f != "mode"]
MODES = ("per_layer", "global")
LAYER_TYPES = (nn.Conv2d, nn.Linear)
#: What calibrate() draws its images from: the training split, so calibration never looks at test images.
CALIBRATION_IMAGES = 500


def analog_layers(model: nn.Module) -> list[str]:
    """Names of the layers aihwkit converts (Conv2d, Linear) in module order; vant's paper placement
    puts a site on each of their outputs under the same name."""
    names = [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if not names:
        raise ValueError("the model has no Conv2d or Linear layer for aihwkit to convert")
    return names


class _Moments:
    """Running sums over output elements, in float64: enough for sigma, act_std, gain and resid."""

    def __init__(self):
        self.n = 0
        self.s = np.zeros(7)  # sum d, sum d^2, sum y, sum y^2, sum a*y, sum a^2, sum a

    def add(self, exact: torch.Tensor, analog: torch.Tensor) -> None:
        y, a = exact.double().ravel(), analog.double().ravel()
        d = a - y
        self.n += y.numel()
        self.s += np.array([float(v) for v in (d.sum(), (d * d).sum(), y.sum(), (y * y).sum(), (a * y).sum(),
                                                 (a * a).sum(), a.sum())])

    def stats(self) -> dict:
        n, (sd, sd2, sy, sy2, say, sa2, sa) = self.n, self.s
        var = lambda s1, s2: max(s2 / n - (s1 / n) ** 2, 0.0)  # noqa: E731
        gain = say / sy2 if sy2 > 0 else math.nan
        # residual a - g*y: sum = sa - g*sy, sum of squares = sa2 - 2g*say + g^2*sy2
        resid = var(sa - gain * sy, sa2 - 2 * gain * say + gain * gain * sy2)
        return dict(n=n, sigma=math.sqrt(var(sd, sd2)), act_std=math.sqrt(var(sy, sy2)), gain=gain,
                    resid=math.sqrt(resid))


@torch.no_grad()
def layer_errors(plain: nn.Module, analog: nn.Module, x_chunks, layers: Sequence[str]) -> dict[str, dict]:
    """Per layer: moments of (analog layer - exact layer) on the exact inputs of that layer."""
    modules, amodules = dict(plain.named_modules()), dict(analog.named_modules())
    missing = [n for n in layers if n not in amodules]
    if missing:
        raise RuntimeError(f"the analog model has no layer named {missing[0]!r}")
    moments = {n: _Moments() for n in layers}
    seen: dict[str, tuple] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, (i[0], o))) for n in layers]
    try:
        for x in x_chunks:
            seen.clear()
            plain(x)
            for n in layers:
                if n not in seen:
                    raise RuntimeError(f"layer {n!r} was not called in the forward pass")
                inp, out = seen[n]
                moments[n].add(out, amodules[n](inp))
    finally:
        for h in hooks:
            h.remove()
    return {n: m.stats() for n, m in moments.items()}


def calib_dir(run: Run, dm: DeviceModel, seed: int, images: int) -> Path:
    blob = json.dumps(dict(device=dataclasses.asdict(dm), seed=seed, images=images, chunk=CHUNK), sort_keys=True)
    return run.path / "analog" / f"{dm.name}-calibration-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def calibrate(run: Run | str | Path, dm: DeviceModel, times: Sequence[float] = DEFAULT_TIMES, repeats: int = 3,
              seed: int | None = None, images: int = CALIBRATION_IMAGES, progress: bool = True) -> dict:
    """Measure each layer's σ on ``dm`` per chip and time; write the rows, a scenario and a summary.

    ``images`` training images (a seeded subset) are pushed through; rows already stored are
    reused. Returns the summary: per time the layers' σ (mean over chips), the scenario σ (RMS over
    layers) per chip, the scenario file and the ``train.*`` settings of a VANT fitted to it.
    """
    if images < 1:
        raise ValueError(f"calibration images must be >= 1, got {images}")
    run, times, seed = open_finished(run, repeats, times, seed)
    out = calib_dir(run, dm, seed, images)
    out.mkdir(parents=True, exist_ok=True)
    with lock(out), torch.random.fork_rng(devices=[]), run_threads(run.config, torch.device("cpu")):
        rows = read_csv(out / "rows.csv", CAL_NUMERIC)
        todo = missing_cells(rows, times, repeats, seed)
        if todo:
            require_aihwkit()
            same_backend(out, bool(rows), dict(device=dataclasses.asdict(dm), describe=dm.describe(), seed=seed,
                                                images=images, chunk=CHUNK))
            model, test, data = load_trained(run, "cpu")
            plain = plain_copy(model)
            layers = analog_layers(plain)
            pick = eval_subset(len(data.train_y), images)
            pick = torch.arange(len(data.train_y)) if pick is None else pick
            x_chunks = [test.normalise(data.train_x[pick[s:s + CHUNK]]) for s in range(0, len(pick), CHUNK)]
            analog = to_analog(model, dm)
            bar = None
            if progress:
                from ..progress import progress_bar
                bar = progress_bar(total=sum(map(len, todo.values())), unit="cell", leave=False, desc=f"calibrate {run.path.name[:24]}")
            try:
                for r, ts in sorted(todo.items()):
                    program_(analog, seed + r)
                    for t in ts:
                        drift_(analog, t)
                        torch.manual_seed(cell_seed(seed + r, t))
                        for layer, st in layer_errors(plain, analog, x_chunks, layers).items():
                            rows.append(dict(time=t, repeat=r, seed=seed + r, read_seed=cell_seed(seed + r, t),
                                             layer=layer, **st))
                        write_csv(out / "rows.csv", rows, CAL_FIELDS)
                        if bar is not None:
                            bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
        summary = summarise_calibration(rows, times, repeats, seed)
        scenario = calibration_scenario(summary, dm, run.path.name)
        save_scenario(scenario, out / "scenario.yaml")
        summary.update(run=run.path.name, run_path=str(run.path), device=dataclasses.asdict(dm), describe=dm.describe(),
                       images=images, scenario_file=str(out / "scenario.yaml"), scenario=scenario.describe(),
                       scenario_mean=scenario.mean(), scenario_std=scenario.std(),
                       vant_fit=scenario_settings(scenario, "vant_fit"))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    summary["dir"] = str(out)
    return summary


def summarise_calibration(rows: list[dict], times: Sequence[float], repeats: int, seed: int) -> dict:
    """``sigma[r][t][layer]`` and the derived per-time numbers from stored rows."""
    layers: list[str] = []
    for r in rows:
        if r["layer"] not in layers:
            layers.append(r["layer"])
    cell = {(r["time"], r["repeat"], r["layer"]): r for r in rows if r["seed"] == seed + r["repeat"]}
    sigma = np.full((repeats, len(times), len(layers)), np.nan)
    rel, gain, resid = (np.full_like(sigma, np.nan) for _ in range(3))
    for i in range(repeats):
        for j, t in enumerate(times):
            for k, n in enumerate(layers):
                c = cell.get((t, i, n))
                if c is None:
                    raise RuntimeError(f"calibration rows miss layer {n!r} at t={t:g} s, repeat {i}")
                sigma[i, j, k], gain[i, j, k], resid[i, j, k] = c["sigma"], c["gain"], c["resid"]
                rel[i, j, k] = c["sigma"] / c["act_std"] if c["act_std"] > 0 else math.nan
    rms = np.sqrt(np.mean(sigma ** 2, axis=2))  # [chip, time]: the scenario's sigma
    return dict(seed=seed, repeats=repeats, times=list(times), labels=[time_label(t) for t in times], layers=layers,
                sigma=sigma.tolist(), rms=rms.tolist(), sigma_mean=sigma.mean(0).tolist(), relative_mean=rel.mean(0).tolist(),
                gain_mean=gain.mean(0).tolist(), resid_mean=resid.mean(0).tolist(), rms_mean=rms.mean(0).tolist(),
                rms_std=(rms.std(0, ddof=1) if repeats > 1 else np.zeros(len(times))).tolist())


def calibration_scenario(summary: dict, dm: DeviceModel, run_name: str) -> Scenario:
    """The calibration as a vant scenario: each chip a device, its σ (RMS over layers) at each time."""
    rows = [[float(r), float(t), round(float(summary["rms"][r][j]), 6)]
            for r in range(summary["repeats"]) for j, t in enumerate(summary["times"])]
    spec = dict(name=f"{dm.name}-calibrated", kind="fleet_trajectory",
                description=(f"{dm.describe()}, calibrated on run {run_name}: per chip (programmed under seed "
                             f"{summary['seed']}+chip) and time, the RMS over the Conv2d/Linear layers of the std of "
                             "(analog - exact) layer output, each layer fed its exact input; layers "
                             + ", ".join(summary["layers"])),
                units=dict(sigma="activation_std", time="s"), measurements=dict(rows=rows))
    return scenario_from_dict(spec, source="calibration")


# ----------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict(run: Run | str | Path, dm: DeviceModel, calibration: dict, repeats: int | None = None,
            seed: int | None = None, images: int | None = None, progress: bool = True) -> dict:
    """aihwkit accuracy of each chip and time (:func:`evaluate_device`, stored rows reused) beside
    vant's accuracy at the calibrated σ of the same chip and time: ``per_layer`` (each Conv2d/Linear
    output site at its own σ, the other sites silent) and ``global`` (the scenario's σ at every site).
    The vant rows are stored beside the calibration (``prediction-<images>.csv``) and reused."""
    run = run if isinstance(run, Run) else Run.open(run)
    times, layers = calibration["times"], calibration["layers"]
    repeats = calibration["repeats"] if repeats is None else repeats
    if repeats > calibration["repeats"]:
        raise ValueError(f"the calibration has {calibration['repeats']} chips, {repeats} asked")
    seed = calibration["seed"] if seed is None else seed
    device = evaluate_device(run, dm, times, repeats, seed, images, progress)
    path = Path(calibration["dir"]) / f"prediction-{images or 'all'}.csv"
    with lock(Path(calibration["dir"])), torch.random.fork_rng(devices=[]), run_threads(run.config, torch.device("cpu")):
        rows = read_csv(path, PRED_NUMERIC)
        have = {(r["time"], r["repeat"], r["mode"]) for r in rows if r["seed"] == seed + r["repeat"]}
        todo = [(r, j, mode) for r in range(repeats) for j in range(len(times)) for mode in MODES
                if (times[j], r, mode) not in have]
        if todo:
            model, test, _ = load_trained(run, "cpu")
            sites = noise_sites(model)
            absent = [n for n in layers if n not in sites]
            if absent:
                raise ValueError(f"run {run.path.name} has no vant noise site on layer {absent[0]!r} "
                                 f"(its noise.sites are {run.config.noise.sites!r}); per-layer prediction needs one")
            index = eval_subset(len(test.y), images)
            for r, j, mode in todo:
                t = times[j]
                if mode == "per_layer":
                    level = {n: float(calibration["sigma"][r][j][k]) for k, n in enumerate(layers)}
                    shown = float(calibration["rms"][r][j])
                else:
                    level = shown = float(calibration["rms"][r][j])
                torch.manual_seed(cell_seed(seed + r, t))
                set_sigma_(model, level)
                correct, total = count_correct(model, test, index)
                rows.append(dict(time=t, repeat=r, seed=seed + r, mode=mode, sigma=shown, correct=correct, total=total,
                                 accuracy=100.0 * correct / total))
            set_sigma_(model, 0.0)
            write_csv(path, rows, PRED_FIELDS)
    per = {mode: [] for mode in MODES}
    for mode in MODES:
        for t in times:
            vals = [r["accuracy"] for r in sorted(rows, key=lambda r: r["repeat"])
                    if r["mode"] == mode and r["time"] == t and r["repeat"] < repeats and r["seed"] == seed + r["repeat"]]
            per[mode].append(mean_std_ci(vals)[:2])
    result = dict(run=run.path.name, times=times, labels=[time_label(t) for t in times], repeats=repeats,
                  images=device["images"], aihwkit=list(zip(device["per_time"]["mean"], device["per_time"]["std"])),
                  per_layer=per["per_layer"], global_=per["global"], digital_accuracy=device["digital_accuracy"],
                  rms_mean=calibration["rms_mean"][:len(times)])
    a, p, g = (np.array([m for m, _ in result[k]]) for k in ("aihwkit", "per_layer", "global_"))
    result["mean_abs_error_per_layer"] = float(np.mean(np.abs(p - a)))
    result["mean_abs_error_global"] = float(np.mean(np.abs(g - a)))
    write_text_atomic(Path(calibration["dir"]) / f"prediction-{images or 'all'}.json", json.dumps(result, indent=2))
    return result


def format_calibration(summary: dict) -> str:
    """Per time: each layer's σ (mean over chips) and σ/act_std, the gain, and the scenario σ."""
    head = ["time"] + [f"σ {n}" for n in summary["layers"]] + ["σ rms (± chips)", "σ/act std (layers)", "gain (layers)"]
    rows = []
    for j, lab in enumerate(summary["labels"]):
        rel = " / ".join(f"{v:.2f}" for v in summary["relative_mean"][j])
        gain = " / ".join(f"{v:.2f}" for v in summary["gain_mean"][j])
        rows.append([lab] + [f"{v:.3g}" for v in summary["sigma_mean"][j]]
                    + [f"{summary['rms_mean'][j]:.3g} ± {summary['rms_std'][j]:.2g}", rel, gain])
    return markdown(head, rows)


def format_prediction(result: dict) -> str:
    head = ["time", "σ rms", "aihwkit [%]", "vant per-layer σ [%]", "vant global σ [%]"]
    rows = [[lab, f"{s:.3g}", f"{a[0]:.2f} ± {a[1]:.2f}", f"{p[0]:.2f} ± {p[1]:.2f}", f"{g[0]:.2f} ± {g[1]:.2f}"]
            for lab, s, a, p, g in zip(result["labels"], result["rms_mean"], result["aihwkit"], result["per_layer"],
                                       result["global_"])]
    return markdown(head, rows) + (f"\n\nmean |vant - aihwkit|: per-layer {fmt(result['mean_abs_error_per_layer'], '.2f')} pp, "
                                   f"global {fmt(result['mean_abs_error_global'], '.2f')} pp ({result['repeats']} chips, "
                                   f"{result['images']} test images; vant σ=0: {result['digital_accuracy']:.2f} %)")


__all__ = ["calibrate", "predict", "analog_layers", "layer_errors", "calibration_scenario", "summarise_calibration",
           "format_calibration", "format_prediction", "calib_dir", "CALIBRATION_IMAGES"]
