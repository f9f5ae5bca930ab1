"""A trained run on a calibrated analog device model (IBM's aihwkit): accuracy over time after programming.

vant's own noise is a Gaussian added to activations at a σ you choose. A physical device is more
specific: a weight is programmed into conductances with a programming error, drifts away with time
(PCM: g(t) = g_prog·(t/t0)^-ν), picks up 1/f read noise, and every analog matrix product passes a
DAC, an ADC with a bound and output noise. aihwkit models all of that; this module asks it how a
vant run does on such a device, so NT and VANT can be checked against a model that was fitted to
measured hardware rather than against the noise they were trained on.

The run's trained network is copied, vant's noise sites are removed (the copy is exactly the
plain model, i.e. vant's σ = 0 everywhere), and every ``Conv2d``/``Linear`` is converted to an
aihwkit analog layer with :func:`rpu_config` (aihwkit's pure-torch inference tile: its C++ tiles do
not load with the torch vant is tested with). For each repeat r a fresh chip is programmed under
torch seed ``seed + r``; for each time t after programming the weights are drifted (from the same
programmed state) and the test images are run under the seed :func:`cell_seed` ``(seed + r, t)``, so
every (repeat, time) cell is reproducible on its own and asking for more times or repeats later
computes only those cells. Rows live in ``<run>/analog/<model>-<key>/rows.csv``; the key covers
the device model, the seed and the test images, not the times or repeats.

Needs the optional extra: ``pip install "vant[aihwkit]"`` (see pyproject.toml for the pins).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..baselines.qat import MissingDependency
from ..core.inject import remove_noise_
from ..core.noise import NoiseSite
from ..core.metrics import mean_std_ci
from ..pipeline.runs import Run, load_trained, run_threads
from ..pipeline.store import CheckpointError, lock, read_csv, write_csv, write_text_atomic
from ..tables import fmt, markdown

#: The times of the issue's question, in seconds after programming: 1 s, 1 h, 1 day, 30 days, 1 year.
DEFAULT_TIMES = (1.0, 3600.0, 86400.0, 2592000.0, 31536000.0)
#: Test images per analog forward pass (fixed: with iterative bound management the torch tile
#: rescales a whole batch when any output clips, so the batch is part of what is computed).
CHUNK = 500
ROW_FIELDS = ["time", "repeat", "seed", "read_seed", "correct", "total", "accuracy"]
ROW_NUMERIC = ROW_FIELDS
BOUND_MANAGEMENT = ("none", "iterative")
INSTALL = 'pip install "vant[aihwkit]"'


@dataclass(frozen=True)
class DeviceModel:
    """aihwkit's PCM inference model (``PCMLikeNoiseModel``, Nandakumar et al. 2019) and the
    analog tile periphery around it. The physics and its fitted coefficients are aihwkit's; these
    are the settings that matter for a first question, with their units. Output-referred quantities
    (``out_noise``, ``out_bound``, ``out_res``) are in units of a layer's full-scale output: its
    largest |weight| is mapped to the largest conductance and each input vector is divided by its
    largest |value| (aihwkit's abs-max noise management), so 1.0 is what one full weight times one
    full input gives; the result is scaled back digitally."""

    name: str = "pcm"
    drift_compensation: bool = True  # GlobalDriftCompensation: one digital gain per layer, re-read at each time
    g_max: float = 25.0  # µS, the conductance a layer's largest |weight| is programmed to (PCM fit made at 25 µS)
    prog_noise_scale: float = 1.0  # x the measured programming-noise std (0 = exact programming)
    read_noise_scale: float = 1.0  # x the measured 1/f read noise accumulated since programming (0 = none)
    drift_scale: float = 1.0  # x the measured drift exponent nu (0 = no drift)
    t0: float = 20.0  # s, first reading after programming; the model drifts as ((t + t0)/t0)^-nu
    out_noise: float = 0.06  # std of the Gaussian noise at every tile output, full-scale output units
    out_bound: float = 12.0  # ADC clipping bound, full-scale output units (0 = no bound)
    inp_res: float = 1 / 126  # DAC step as a fraction of the input range (1/126: 7 bits signed; <= 0: exact)
    out_res: float = 1 / 510  # ADC step as a fraction of the output range (1/510: 9 bits signed; <= 0: exact)
    bound_management: str = "none"  # none: clip at out_bound | iterative: halve the batch's input until nothing clips
    # (the torch tile tests clipping over the whole batch, so 'iterative' couples the images of a chunk)

    def describe(self) -> str:
        d = dataclasses.asdict(self)
        name = d.pop("name")
        default = dataclasses.asdict(DeviceModel())
        changed = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items()
                            if v != default[k])
        comp = "with" if self.drift_compensation else "without"
        return f"aihwkit {name.upper()} model {comp} global drift compensation" + (f" ({changed})" if changed else "")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


DEVICE_MODELS = {"pcm": DeviceModel}
_FIELDS = {f.name: f for f in dataclasses.fields(DeviceModel) if f.name != "name"}


def _parse_value(key: str, text, kind: type):
    if kind is bool:
        if isinstance(text, bool):
            return text
        v = str(text).strip().lower()
        if v in ("true", "on", "yes", "1"):
            return True
        if v in ("false", "off", "no", "0"):
            return False
        raise ValueError(f"device option {key}: expected true or false, got {text!r}")
    if kind is float:
        try:
            v = float(text)
        except (TypeError, ValueError):
            raise ValueError(f"device option {key}: expected a number, got {text!r}") from None
        if isinstance(text, bool) or not math.isfinite(v):
            raise ValueError(f"device option {key}: expected a finite number, got {text!r}")
        return v
    return str(text)


def device_model(name: str = "pcm", options: Mapping[str, object] | Sequence[str] = ()) -> DeviceModel:
    """A checked :class:`DeviceModel`; ``options`` are ``{field: value}`` or ``["field=value", ...]``
    (values parsed by the field's type). Needs no aihwkit: a bad option fails before anything runs."""
    if name not in DEVICE_MODELS:
        raise ValueError(f"unknown device model {name!r}; choose one of {', '.join(DEVICE_MODELS)}")
    if not isinstance(options, Mapping):
        pairs = {}
        for item in options:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"device option {item!r}: expected KEY=VALUE")
            pairs[key.strip()] = value.strip()
        options = pairs
    values = {}
    types = {"drift_compensation": bool, "bound_management": str}
    for key, raw in options.items():
        if key not in _FIELDS:
            raise ValueError(f"unknown device option {key!r}; known: {', '.join(_FIELDS)}")
        values[key] = _parse_value(key, raw, types.get(key, float))
    dm = DEVICE_MODELS[name](**values)
    for key in ("prog_noise_scale", "read_noise_scale", "drift_scale", "out_noise", "out_bound"):
        if getattr(dm, key) < 0:
            raise ValueError(f"device option {key} must be >= 0, got {getattr(dm, key):g}")
    for key in ("g_max", "t0"):
        if getattr(dm, key) <= 0:
            raise ValueError(f"device option {key} must be > 0, got {getattr(dm, key):g}")
    for key in ("inp_res", "out_res"):
        if getattr(dm, key) >= 1:
            raise ValueError(f"device option {key} is a step as a fraction of the range: < 1 (or <= 0 for exact), "
                             f"got {getattr(dm, key):g}")
    if dm.bound_management not in BOUND_MANAGEMENT:
        raise ValueError(f"device option bound_management: unknown {dm.bound_management!r}; choose one of "
                         f"{', '.join(BOUND_MANAGEMENT)}")
    return dm


def parse_times(text: str | Iterable[float]) -> list[float]:
    """Times after programming in seconds, e.g. ``"1,3600,86400"``: finite, >= 0, no repeats; sorted."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            t = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"--times: {item!r} is not a number of seconds") from None
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"--times: {item!r} must be a finite number of seconds >= 0")
        out.append(t)
    if not out:
        raise ValueError("--times: give at least one time in seconds, e.g. 1,3600")
    if len(set(out)) != len(out):
        raise ValueError(f"--times: {text!r} names a time twice")
    return sorted(out)


def time_label(t: float) -> str:
    """1 s, 1 h, 1 d, 30 d, 1 y: the unit that gives the shortest exact number, else seconds."""
    for unit, s in (("y", 31536000.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t >= s and (t / s) == round(t / s, 2):
            return f"{t / s:g} {unit}"
    return f"{t:g} s"


def cell_seed(seed: int, t: float) -> int:
    """The torch seed of one (chip, time) cell: drift read noise and the forward noise at time t of
    the chip programmed under ``seed``; depends on nothing else, so cells can be added later."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}:{float(t)!r}".encode()).digest()[:7], "big")


# ----------------------------------------------------------------------------- aihwkit


def require_aihwkit():
    """Import aihwkit, or fail with the install command."""
    try:
        import aihwkit.nn.conversion  # noqa: F401
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"the device-model evaluation needs aihwkit, an optional extra: {INSTALL} "
                                f"({type(e).__name__}: {e})".splitlines()[0]) from None
    import aihwkit

    return aihwkit


def rpu_config(dm: DeviceModel):
    """aihwkit's ``TorchInferenceRPUConfig`` for ``dm``: PCM noise model, drift compensation, the
    tile periphery; the largest |weight| of each layer is mapped to g_max (``weight_scaling_omega=1``)."""
    require_aihwkit()
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType

    cfg = TorchInferenceRPUConfig()
    cfg.noise_model = PCMLikeNoiseModel(g_max=dm.g_max, t_0=dm.t0, prog_noise_scale=dm.prog_noise_scale,
                                        read_noise_scale=dm.read_noise_scale, drift_scale=dm.drift_scale)
    cfg.drift_compensation = GlobalDriftCompensation() if dm.drift_compensation else None
    cfg.mapping.weight_scaling_omega = 1.0
    cfg.mapping.digital_bias = True
    f = cfg.forward
    f.out_noise, f.out_bound, f.inp_res, f.out_res = dm.out_noise, dm.out_bound, dm.inp_res, dm.out_res
    f.bound_management = BoundManagementType.ITERATIVE if dm.bound_management == "iterative" else BoundManagementType.NONE
    return cfg


_CONV = None


def _unfold_conv_class():
    """aihwkit's ``AnalogConv2d`` with the patches taken by ``Tensor.unfold`` views instead of
    ``F.unfold``: the patch matrix, and so the analog product, is the same (``tests/scenarios/
    test_analog.py`` checks it). ``F.unfold``'s CPU im2col took 70% of a LeNet-5 analog forward in a
    profile on the loaded 2-core machine this was written on; on the idle machine the views made the
    whole forward 1.1-1.2x faster in two runs (bench/speed.py --peers: the aihwkit and
    aihwkit-vant-conv rows)."""
    global _CONV
    if _CONV is None:
        import torch.nn.functional as F
        from aihwkit.nn import AnalogConv2d

        class UnfoldAnalogConv2d(AnalogConv2d):
            def forward(self, x):
                if self.use_indexed or self.dilation != (1, 1) or x.dim() != 4 or self.analog_module.is_cuda:
                    return super().forward(x)
                (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
                if ph or pw:
                    x = F.pad(x, (pw, pw, ph, ph))
                p = x.unfold(2, kh, sh).unfold(3, kw, sw)  # B, C, H', W', kh, kw
                b, c, h, w = p.shape[:4]
                cols = p.permute(0, 2, 3, 1, 4, 5).reshape(b, h * w, c * kh * kw)  # F.unfold's (c, kh, kw) order
                out = self.analog_module(cols)
                return out.transpose(1, 2).reshape(b, self.out_channels, h, w)

        _CONV = UnfoldAnalogConv2d
    return _CONV


def plain_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` without vant's noise sites (vant's σ = 0: exactly the plain model)."""
    plain = copy.deepcopy(model)
    if any(isinstance(m, NoiseSite) for m in plain.modules()):
        remove_noise_(plain)
    return plain.eval()


def to_analog(model: nn.Module, dm: DeviceModel) -> nn.Module:
    """The analog twin of ``model`` (a copy; vant's sites removed): every Conv2d and Linear an aihwkit
    layer under :func:`rpu_config` ``(dm)``, everything else digital, in eval mode."""
    require_aihwkit()
    from aihwkit.nn.conversion import _DEFAULT_CONVERSION_MAP, convert_to_analog

    conversion = dict(_DEFAULT_CONVERSION_MAP)
    conversion[nn.Conv2d] = _unfold_conv_class()
    analog = convert_to_analog(plain_copy(model), rpu_config(dm), conversion_map=conversion)
    if any(isinstance(m, NoiseSite) for m in analog.modules()):
        raise RuntimeError("a vant noise site survived the conversion to analog")
    return analog.eval()


@torch.no_grad()
def program_(analog: nn.Module, seed: int) -> None:
    """Program a fresh chip: programming noise and drift exponents drawn under torch seed ``seed``."""
    torch.manual_seed(seed)
    analog.program_analog_weights()


@torch.no_grad()
def drift_(analog: nn.Module, t: float) -> None:
    """Drift the programmed weights to ``t`` seconds after programming (from the programmed state,
    so the order of the times does not matter) and re-read the drift compensation."""
    analog.drift_analog_weights(float(t))


def eval_subset(n: int, images: int | None) -> torch.Tensor | None:
    """Indices of the test images evaluated: all (None), or ``images`` of them drawn without
    replacement under seed 0 and sorted (the same subset for every run of the same test set)."""
    if images is None or images >= n:
        return None
    if images < 1:
        raise ValueError(f"--images must be >= 1, got {images}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:images].sort().values


def image_chunks(batches, index: torch.Tensor | None, chunk: int = CHUNK):
    """Normalised ``(x, y)`` chunks of the test set (or of its subset ``index``)."""
    n = len(batches.y) if index is None else len(index)
    for start in range(0, n, chunk):
        sel = slice(start, start + chunk) if index is None else index[start:start + chunk]
        yield batches.normalise(batches.x[sel]), batches.y[sel]


@torch.no_grad()
def count_correct(model: nn.Module, batches, index: torch.Tensor | None) -> tuple[int, int]:
    correct = total = 0
    for x, y in image_chunks(batches, index):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct, total


# ----------------------------------------------------------------------------- evaluation with stored rows


def device_dir(run: Run, dm: DeviceModel, seed: int, images: int | None) -> Path:
    blob = json.dumps(dict(device=dataclasses.asdict(dm), seed=seed, images=images, chunk=CHUNK), sort_keys=True)
    return run.path / "analog" / f"{dm.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def open_finished(run: Run | str | Path, repeats: int, times: Sequence[float] | str,
                  seed: int | None) -> tuple[Run, list[float], int]:
    """The run (opened, finished), the checked times and the base seed (default: the run's ``eval.seed``)."""
    run = run if isinstance(run, Run) else Run.open(run)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if not run.trained:
        raise ValueError(f"run {run.path} has not finished training; run `vant train` on its config first")
    return run, parse_times(times), run.config.eval.seed if seed is None else int(seed)


def missing_cells(rows: list[dict], times: Sequence[float], repeats: int, seed: int) -> dict[int, list[float]]:
    """Per chip, the times that have no row yet (a row is keyed by time, repeat and seed)."""
    have = {(r["time"], r["repeat"], r["seed"]) for r in rows}
    todo: dict[int, list[float]] = {}
    for r in range(repeats):
        for t in times:
            if (t, r, seed + r) not in have:
                todo.setdefault(r, []).append(t)
    return todo


def evaluate_device(run: Run | str | Path, dm: DeviceModel, times: Sequence[float] = DEFAULT_TIMES, repeats: int = 3,
                    seed: int | None = None, images: int | None = None, progress: bool = True) -> dict:
    """Accuracy of a finished run on ``dm`` at each time after programming, ``repeats`` chips each.

    Stored rows are reused: only (repeat, time) cells not in ``rows.csv`` are computed. Writes
    ``rows.csv``, ``device.json`` (the device model), ``reference.json`` (vant's σ = 0 accuracy on
    the same images), ``summary.json`` and ``accuracy_vs_time.png``; returns the summary (``dir``
    says where). ``seed`` defaults to the run's ``eval.seed``; the evaluation runs on the CPU.
    """
    run, times, seed = open_finished(run, repeats, times, seed)
    out = device_dir(run, dm, seed, images)
    out.mkdir(parents=True, exist_ok=True)
    with lock(out), torch.random.fork_rng(devices=[]), run_threads(run.config, torch.device("cpu")):
        rows = read_csv(out / "rows.csv", ROW_NUMERIC)
        todo = missing_cells(rows, times, repeats, seed)
        reference = _read_json(out / "reference.json")
        if todo or reference is None:
            require_aihwkit()
            same_backend(out, bool(rows), dict(device=dataclasses.asdict(dm), describe=dm.describe(), seed=seed,
                                                images=images, chunk=CHUNK))
            model, test, _ = load_trained(run, "cpu")
            index = eval_subset(len(test.y), images)
            if reference is None:
                correct, total = count_correct(plain_copy(model), test, index)
                reference = dict(correct=correct, total=total, accuracy=100.0 * correct / total)
                write_text_atomic(out / "reference.json", json.dumps(reference, indent=2))
            if todo:
                analog = to_analog(model, dm)
                bar = None
                if progress:
                    from ..progress import progress_bar
                    bar = progress_bar(total=sum(len(v) for v in todo.values()), unit="cell", leave=False,
                               desc=f"{run.path.name[:28]} on {dm.name}")
                try:
                    for r, ts in sorted(todo.items()):
                        program_(analog, seed + r)
                        for t in ts:
                            drift_(analog, t)
                            torch.manual_seed(cell_seed(seed + r, t))
                            correct, total = count_correct(analog, test, index)
                            rows.append(dict(time=t, repeat=r, seed=seed + r, read_seed=cell_seed(seed + r, t),
                                             correct=correct, total=total, accuracy=100.0 * correct / total))
                            write_csv(out / "rows.csv", rows, ROW_FIELDS)
                            if bar is not None:
                                bar.update(1)
                finally:
                    if bar is not None:
                        bar.close()
        summary = summarise_rows(rows, times, repeats, seed)
        stored = run.summary() if (run.path / "summary.json").is_file() else {}
        cfg = run.config
        summary.update(run=run.path.name, run_path=str(run.path), method=cfg.train.method, sigma_train=cfg.train.sigma,
                       alpha=cfg.train.alpha, theta=cfg.train.theta,
                       device=dataclasses.asdict(dm), describe=dm.describe(), images=reference["total"],
                       aihwkit=(_read_json(out / "device.json") or {}).get("aihwkit"),
                       digital_accuracy=reference["accuracy"], clean_accuracy=stored.get("clean_accuracy"))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
        device_figure([(run.path.name, summary)], out / "accuracy_vs_time.png", title=dm.describe())
    summary["dir"] = str(out)
    return summary


def aihwkit_version() -> str | None:
    try:
        return importlib.metadata.version("aihwkit")
    except importlib.metadata.PackageNotFoundError:
        return None


def same_backend(folder: Path, has_rows: bool, meta: dict) -> None:
    """Record the aihwkit version in ``folder/device.json`` before rows are added, and refuse to add
    rows beside rows that another aihwkit version computed (reading them needs no aihwkit)."""
    stored = _read_json(folder / "device.json") or {}
    have, now = stored.get("aihwkit"), aihwkit_version()
    if has_rows and have is not None and have != now:
        raise CheckpointError(f"{folder} holds rows computed with aihwkit {have}, and aihwkit {now} is installed; "
                              f"install aihwkit=={have} or delete that folder to compute them all again")
    write_text_atomic(folder / "device.json", json.dumps(dict(meta, aihwkit=now), indent=2))


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None  # recomputed (it is derived from the run alone)


def summarise_rows(rows: list[dict], times: Sequence[float], repeats: int, seed: int) -> dict:
    """Per time: mean, std and 95% t-interval of the accuracy over the chips (repeats 0..R-1 of ``seed``)."""
    per = dict(t=[], label=[], mean=[], std=[], ci95=[], n=[], values=[])
    for t in times:
        vals = [r["accuracy"] for r in sorted(rows, key=lambda r: r["repeat"])
                if r["time"] == t and r["repeat"] < repeats and r["seed"] == seed + r["repeat"]]
        if len(vals) != repeats:
            raise RuntimeError(f"rows for t={t:g} s hold {len(vals)} of {repeats} repeats after evaluation")
        m, sd, ci = mean_std_ci(vals)
        for k, v in (("t", t), ("label", time_label(t)), ("mean", m), ("std", sd),
                     ("ci95", None if math.isnan(ci) else ci), ("n", len(vals)), ("values", vals)):
            per[k].append(v)
    return dict(seed=seed, repeats=repeats, times=list(times), per_time=per)


def compare_on_device(runs: Sequence[Run | str | Path], dm: DeviceModel, labels: Sequence[str] | None = None,
                      out_dir: str | Path | None = None, progress: bool = True, **kwargs) -> dict:
    """Evaluate several runs on one device model; one table (``results.md``/``.json``) and one figure."""
    summaries = []
    for i, r in enumerate(runs):
        s = evaluate_device(r, dm, progress=progress, **kwargs)
        s["label"] = labels[i] if labels else run_label(s)
        summaries.append(s)
    result = dict(describe=dm.describe(), device=dataclasses.asdict(dm), rows=summaries)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result["report_dir"] = str(out)
        write_text_atomic(out / "results.json", json.dumps(result, indent=2))
        write_text_atomic(out / "results.md", dm.describe() + "\n\n" + format_table(summaries) + "\n")
        device_figure([(s["label"], s) for s in summaries], out / "accuracy_vs_time.png", title=dm.describe())
    return result


def run_label(s: dict) -> str:
    """clean, NT@1, VANT@1 (α 0.45, θ 0.4), empirical@0.5: what a table row calls a run."""
    m = s["method"]
    if m == "clean":
        return "clean"
    label = f"{'empirical' if m == 'empirical' else m.upper()}@{s['sigma_train']:g}"
    if m == "vant" and s.get("alpha") is not None and s.get("theta") is not None:
        label += f" (α {s['alpha']:.3g}, θ {s['theta']:.3g})"
    return label


def format_table(summaries: Sequence[dict]) -> str:
    """Runs as rows, times as columns: accuracy mean ± std over the programmed chips (percent)."""
    times = summaries[0]["per_time"]["label"]
    head = ["model", "vant σ=0 [%]"] + [f"{t} [%]" for t in times]
    rows = []
    for s in summaries:
        p = s["per_time"]
        rows.append([s.get("label", s["run"]), fmt(s.get("digital_accuracy"), ".2f")]
                    + [f"{m:.2f} ± {sd:.2f}" if sd == sd else f"{m:.2f}" for m, sd in zip(p["mean"], p["std"])])
    n, r = summaries[0]["images"], summaries[0]["repeats"]
    return markdown(head, rows) + f"\n\n(mean ± std over {r} programmed chips, {n} test images each; seeds " \
        f"{summaries[0]['seed']}..{summaries[0]['seed'] + r - 1})"


def device_figure(items: Sequence[tuple[str, dict]], path: Path, title: str = "") -> Path:
    """Accuracy vs time after programming (log axis), one line per run with a ±1 std band over the
    chips; the run's digital (σ = 0) accuracy as a dotted line of the same colour."""
    from ..plots import new_figure, save_figure

    fig = new_figure(figsize=(6.6, 4.3))
    ax = fig.subplots()
    data = []  # the plotted values, saved beside the figure
    for label, s in items:
        p = s["per_time"]
        t = np.maximum(np.asarray(p["t"], float), 0.1)  # t = 0 on a log axis
        m, sd = np.asarray(p["mean"]), np.nan_to_num(np.asarray(p["std"], float))
        data += [dict(run=label, time_s=float(tp), time=lab, accuracy_mean=float(a), accuracy_std=float(b),
                      digital_accuracy=s.get("digital_accuracy"))
                 for tp, lab, a, b in zip(p["t"], p["label"], m, sd)]
        line, = ax.plot(t, m, marker="o", ms=3, lw=1.6, label=label)
        ax.fill_between(t, m - sd, m + sd, color=line.get_color(), alpha=0.18, lw=0)
        if s.get("digital_accuracy") is not None:
            ax.axhline(s["digital_accuracy"], color=line.get_color(), lw=0.8, ls=":")
    p0 = items[0][1]["per_time"]
    ax.set_xscale("log")
    ax.set_xticks(np.maximum(np.asarray(p0["t"], float), 0.1), p0["label"])
    ax.set_xlabel("time after programming")
    ax.set_ylabel(f"top-1 accuracy [%] (mean ± std over {items[0][1]['repeats']} chips)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", title="dotted: vant σ=0 (digital)", title_fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, data)


__all__ = ["DeviceModel", "DEFAULT_TIMES", "device_model", "parse_times", "time_label", "cell_seed", "rpu_config",
           "to_analog", "plain_copy", "program_", "drift_", "evaluate_device", "compare_on_device", "format_table",
           "device_figure", "require_aihwkit", "device_dir", "eval_subset", "same_backend", "aihwkit_version"]
