"""Noise scenarios as data: how sigma varies across a fleet of devices and over their lifetime.

A scenario is a YAML file. It materialises into a matrix ``sigma[d, t]`` (devices x time points)
with weights that say how much each point counts: devices count equally, time points by the
trapezoid rule on their true times (so a time average is the integral of sigma(t) over the span,
divided by its length). Units are stated in the file and checked:

    name: drifting-fleet
    units: {sigma: activation_std, time: month}   # sigma: std of the additive activation noise, in
                                                  # activation units (= train.sigma, eval.sigmas)
    kind: fleet_trajectory                        # fixed | fleet | trajectory | fleet_trajectory

    sigma: 0.5                                    # kind fixed

    fleet:                                        # kind fleet (values in sigma units) ...
      distribution: lognormal                     # normal | lognormal | uniform  (mean/std or low/high)
      mean: 1.0
      std: 0.15
      devices: 16
      seed: 0
      draw: quantile                              # random (seeded draws) | quantile (stratified)
      # or: values: [0.41, 0.52, ...]   or: csv: fleet.csv   (a 'sigma' column; measured)

    trajectory:                                   # kind trajectory (sigma units) ...
      points: [[0, 0.40], [6, 0.45], [12, 0.52]]  # (t, sigma); or csv: log.csv with columns t,sigma
      # or a parametric drift over [start, start + duration], sampled at `steps` times:
      start: 0
      duration: 60
      steps: 13
      drift:                                      # components are summed
        - {kind: rise, from: 0.40, to: 0.55, power: 0.5}     # from + (to-from) * u**power, u in [0, 1]
        - {kind: cycle, amplitude: 0.05, period: 12, phase: 0, mean: 0}   # mean + A sin(2 pi (t-phase)/period)

    combine: scale                                # kind fleet_trajectory: sigma[d,t] = fleet[d] * traj(t)
                                                  # (fleet values are dimensionless factors), or
                                                  # offset: traj(t) + fleet[d] (fleet in sigma units)
    # kind fleet_trajectory may instead list measurements: csv: log.csv with columns device,t,sigma

Loading fills every default and inlines CSV contents, so ``save_scenario(load_scenario(f))`` is a
self-contained file that loads to the same matrix. Any malformed field is a :class:`ScenarioError`
whose one-line message names the file and the field.

The sigma distribution of a scenario also drives training: :func:`fit_vant` chooses VANT's alpha
and theta so that the half-normal sampler has the scenario's mean and spread, and
:func:`empirical_values` gives values for the empirical sampler.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import yaml

from ..config import ConfigError, safe_component

KINDS = ("fixed", "fleet", "trajectory", "fleet_trajectory")
SIGMA_UNIT = "activation_std"
DISTRIBUTIONS = {"normal": ("mean", "std"), "lognormal": ("mean", "std"), "uniform": ("low", "high")}
DRIFTS = {"rise": {"from": None, "to": None, "power": 1.0}, "cycle": {"amplitude": None, "period": None, "phase": 0.0, "mean": 0.0}}
TOP_KEYS = ("name", "description", "kind", "units", "sigma", "fleet", "trajectory", "combine", "measurements")
#: Bundled scenarios, loadable by name.
BUNDLED = Path(__file__).parent / "bundled"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field."""


# ----------------------------------------------------------------------------- checked field access

class _Fields:
    """Reads one mapping of the spec, naming ``where`` in every error and rejecting unknown keys."""

    def __init__(self, data, where: str, source: str):
        if not isinstance(data, dict):
            raise ScenarioError(f"{source}: {where}: expected a mapping, got {data!r}")
        self.data, self.where, self.source = data, where, source
        self.used: set[str] = set()

    def error(self, key: str, why: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {self.where}{key}: {why}")

    def get(self, key: str, default=None, required: bool = False):
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if required:
                typo = difflib.get_close_matches(key, [str(k) for k in self.data if k != key], n=1)
                raise self.error(key, "is required" + (f" (found {typo[0]!r}: a typo?)" if typo else ""))
            return default
        return self.data[key]

    def number(self, key: str, default=None, required: bool = False, minimum: float | None = None,
               positive: bool = False) -> float:
        v = self.get(key, default, required)
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.error(key, f"expected a number, got {v!r}")
        if minimum is not None and v < minimum:
            raise self.error(key, f"must be >= {minimum:g}, got {v!r}")
        if positive and v <= 0:
            raise self.error(key, f"must be > 0, got {v!r}")
        return float(v)

    def integer(self, key: str, default=None, minimum: int = 1) -> int:
        v = self.get(key, default, default is None)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(key, f"expected an integer >= {minimum}, got {v!r}")
        return v

    def choice(self, key: str, options, default=None) -> str:
        v = self.get(key, default, default is None)
        if v not in options:
            raise self.error(key, f"unknown value {v!r}; choose one of {', '.join(options)}")
        return v

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used, key=str)
        if extra:
            raise self.error(str(extra[0]), f"unknown key here (known: {', '.join(sorted(self.used))})")


def _sigma_list(values, fields: _Fields, key: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or not values:
        raise fields.error(key, f"expected a non-empty list of numbers, got {values!r}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise fields.error(f"{key}[{i}]", f"expected a number >= 0, got {v!r}")
        out.append(float(v))
    return out


def _read_csv(path: Path, columns: tuple[str, ...], fields: _Fields, key: str) -> list[list[float]]:
    if not path.is_file():
        raise fields.error(key, f"file {path} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        aliases = {"t": ("t", "time"), "sigma": ("sigma",), "device": ("device",)}
        cols = []
        for c in columns:
            found = next((h for h in header if h in aliases[c]), None)
            if found is None:
                raise fields.error(key, f"{path.name} needs a column {c!r} in its header (has {header})")
            cols.append(found)
        rows = []
        for n, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            try:
                rows.append([float(row[c]) for c in cols])
            except (TypeError, ValueError):
                raise fields.error(key, f"{path.name} line {n}: not a number in {[row.get(c) for c in cols]}") from None
    if not rows:
        raise fields.error(key, f"{path.name} has no data rows")
    return rows


# ----------------------------------------------------------------------------- the parts of a spec

def _fleet(data, source: str, base: Path | None, unit: str) -> tuple[dict, np.ndarray]:
    f = _Fields(data, "fleet.", source)
    csv_path, values, src = f.get("csv"), f.get("values"), f.get("source")
    if csv_path is not None or values is not None:
        if csv_path is not None and values is not None:
            raise f.error("values", "give either values or csv, not both")
        spec: dict = {}
        if csv_path is not None:
            path = Path(str(csv_path))
            path = path if path.is_absolute() or base is None else base / path
            values = [r[0] for r in _read_csv(path, ("sigma",), f, "csv")]
            spec["source"] = str(csv_path)
        elif src is not None:
            spec["source"] = str(src)
        spec["values"] = _sigma_list(values, f, "values" if csv_path is None else "csv")
        f.done()
        return spec, np.asarray(spec["values"])
    dist = f.choice("distribution", tuple(DISTRIBUTIONS))
    spec = {"distribution": dist}
    if dist == "uniform":
        spec["low"] = f.number("low", required=True, minimum=0)
        spec["high"] = f.number("high", required=True, minimum=0)
        if spec["high"] < spec["low"]:
            raise f.error("high", f"must be >= low={spec['low']:g}, got {spec['high']:g}")
    else:
        spec["mean"] = f.number("mean", required=True, positive=dist == "lognormal")
        spec["std"] = f.number("std", required=True, minimum=0)
    spec["devices"] = f.integer("devices")
    spec["draw"] = f.choice("draw", ("random", "quantile"), "random")
    spec["seed"] = f.integer("seed", 0, minimum=0)
    f.done()
    n = spec["devices"]
    if spec["draw"] == "quantile":  # stratified: the (i + 1/2)/n quantiles of the distribution
        u = (np.arange(n) + 0.5) / n
        z = np.array([NormalDist().inv_cdf(q) for q in u])
    else:
        rng = np.random.default_rng(spec["seed"])
        u, z = rng.random(n), rng.standard_normal(n)
    if dist == "uniform":
        vals = spec["low"] + (spec["high"] - spec["low"]) * u
    elif dist == "normal":
        vals = spec["mean"] + spec["std"] * z
    else:  # lognormal with the given mean and std of the values themselves (not of their log)
        s2 = math.log1p((spec["std"] / spec["mean"]) ** 2)
        vals = np.exp(math.log(spec["mean"]) - s2 / 2 + math.sqrt(s2) * z)
    if np.any(vals < 0):
        raise f.error("distribution", f"normal(mean={spec['mean']:g}, std={spec['std']:g}) gave a negative {unit} "
                      f"for {int(np.sum(vals < 0))} of {n} devices; use lognormal, or a smaller std")
    return spec, vals


def _drift(data, i: int, source: str) -> dict:
    f = _Fields(data, f"trajectory.drift[{i}].", source)
    kind = f.choice("kind", tuple(DRIFTS))
    spec = {"kind": kind}
    for key, default in DRIFTS[kind].items():
        spec[key] = f.number(key, default, required=default is None,
                             minimum=0 if key in ("amplitude", "power", "from", "to") else None,
                             positive=key in ("period", "power"))
    f.done()
    return spec


def _drift_value(comp: dict, t: np.ndarray, start: float, duration: float) -> np.ndarray:
    if comp["kind"] == "rise":
        u = np.clip((t - start) / duration, 0.0, 1.0)
        return comp["from"] + (comp["to"] - comp["from"]) * u ** comp["power"]
    return comp["mean"] + comp["amplitude"] * np.sin(2 * math.pi * (t - comp["phase"]) / comp["period"])


def _trajectory(data, source: str, base: Path | None) -> tuple[dict, np.ndarray, np.ndarray]:
    f = _Fields(data, "trajectory.", source)
    csv_path, points, drift, src = f.get("csv"), f.get("points"), f.get("drift"), f.get("source")
    given = [k for k, v in (("points", points), ("csv", csv_path), ("drift", drift)) if v is not None]
    if len(given) != 1:
        raise f.error("points", "give exactly one of points, csv or drift" + (f" (got {', '.join(given)})" if given else ""))
    if drift is not None:
        comps = drift if isinstance(drift, list) else [drift]
        if not comps:
            raise f.error("drift", "expected at least one component")
        spec = {"start": f.number("start", 0.0), "duration": f.number("duration", required=True, positive=True),
                "steps": f.integer("steps", 25, minimum=2), "drift": [_drift(c, i, source) for i, c in enumerate(comps)]}
        f.done()
        t = np.linspace(spec["start"], spec["start"] + spec["duration"], spec["steps"])
        sig = sum(_drift_value(c, t, spec["start"], spec["duration"]) for c in spec["drift"])
        bad = np.flatnonzero(sig < 0)
        if bad.size:
            raise f.error("drift", f"sigma(t) is negative ({sig[bad[0]]:.4g}) at t={t[bad[0]]:g}; raise the rise "
                          "or the cycle's mean above its amplitude")
        return spec, t, np.asarray(sig, dtype=float)
    spec = {}
    if csv_path is not None:
        path = Path(str(csv_path))
        path = path if path.is_absolute() or base is None else base / path
        points = _read_csv(path, ("t", "sigma"), f, "csv")
        spec["source"] = str(csv_path)
    elif src is not None:
        spec["source"] = str(src)
    key = "points" if csv_path is None else "csv"
    if not isinstance(points, (list, tuple)) or not points:
        raise f.error(key, f"expected a non-empty list of [t, sigma] pairs, got {points!r}")
    pts = []
    for i, p in enumerate(points):
        if not isinstance(p, (list, tuple)) or len(p) != 2 or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in p):
            raise f.error(f"{key}[{i}]", f"expected [t, sigma], got {p!r}")
        if p[1] < 0:
            raise f.error(f"{key}[{i}]", f"sigma must be >= 0, got {p[1]!r}")
        pts.append([float(p[0]), float(p[1])])
    t = np.array([p[0] for p in pts])
    if np.any(np.diff(t) <= 0):
        raise f.error(key, "times must be strictly increasing")
    f.done()
    spec["points"] = pts
    return spec, t, np.array([p[1] for p in pts])


def _measurements(data, source: str, base: Path | None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per-device logs ``[device, t, sigma]``; every device must be logged at the same times."""
    f = _Fields(data, "measurements.", source)
    csv_path, rows, src = f.get("csv"), f.get("rows"), f.get("source")
    spec: dict = {}
    if (csv_path is None) == (rows is None):
        raise f.error("csv", "give exactly one of csv or rows")
    if csv_path is not None:
        path = Path(str(csv_path))
        path = path if path.is_absolute() or base is None else base / path
        rows = _read_csv(path, ("device", "t", "sigma"), f, "csv")
        spec["source"] = str(csv_path)
    elif src is not None:
        spec["source"] = str(src)
    f.done()
    key = "rows" if csv_path is None else "csv"
    if not isinstance(rows, list) or not rows or any(not isinstance(r, (list, tuple)) or len(r) != 3 for r in rows):
        raise f.error(key, "expected a non-empty list of [device, t, sigma] rows")
    table: dict = {}
    for i, (d, t, s) in enumerate(rows):
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in (d, t, s)) or s < 0:
            raise f.error(f"{key}[{i}]", f"expected numbers with sigma >= 0, got {[d, t, s]!r}")
        table.setdefault(float(d), {})[float(t)] = float(s)
    devices = sorted(table)
    times = sorted(table[devices[0]])
    for d in devices:
        if sorted(table[d]) != times:
            raise f.error(key, f"device {d:g} is logged at other times than device {devices[0]:g}; every device "
                          "needs the same time points")
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        raise f.error(key, "times must be strictly increasing")
    spec["rows"] = [[d, t, table[d][t]] for d in devices for t in times]
    return spec, np.array(times), np.array([[table[d][t] for t in times] for d in devices])


def _time_weights(t: np.ndarray) -> np.ndarray:
    """Trapezoid weights on the true times, normalised to sum to 1 (a single point weighs 1)."""
    if len(t) == 1:
        return np.ones(1)
    gaps = np.diff(t)
    w = np.zeros(len(t))
    w[:-1] += gaps / 2
    w[1:] += gaps / 2
    return w / w.sum()


# ----------------------------------------------------------------------------- the scenario

@dataclass(frozen=True)
class Scenario:
    """A materialised scenario: ``sigma[d, t]``, ``times[t]`` and ``weights[d, t]`` (summing to 1)."""

    spec: dict  # normalised spec: every default filled, CSV contents inlined (round-trips through YAML)
    sigma: np.ndarray
    times: np.ndarray
    weights: np.ndarray

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    @property
    def time_unit(self) -> str | None:
        return self.spec["units"].get("time")

    @property
    def devices(self) -> int:
        return self.sigma.shape[0]

    def mean(self) -> float:
        """Weighted mean of sigma over devices and time."""
        return float(np.sum(self.weights * self.sigma))

    def std(self) -> float:
        """Weighted standard deviation of sigma over devices and time (population form)."""
        return float(math.sqrt(max(np.sum(self.weights * (self.sigma - self.mean()) ** 2), 0.0)))

    def digest(self) -> str:
        """A short hash of the spec: what a cache of results for this scenario is keyed on."""
        return hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode()).hexdigest()[:10]

    def describe(self) -> str:
        t = f", {len(self.times)} time points over {self.times[0]:g}..{self.times[-1]:g} {self.time_unit}" if len(self.times) > 1 else ""
        return (f"scenario {self.name!r} ({self.kind}): {self.devices} device(s){t}; sigma mean {self.mean():.4g}, "
                f"std {self.std():.4g}, range {self.sigma.min():.4g}..{self.sigma.max():.4g} [{SIGMA_UNIT}]")


def scenario_from_dict(data, source: str = "scenario", base: Path | None = None) -> Scenario:
    """Check and materialise a spec mapping; relative CSV paths are read from ``base``."""
    f = _Fields(data, "", source)
    name = f.get("name", "scenario")
    if not isinstance(name, str) or not name.strip():
        raise f.error("name", f"expected a non-empty string, got {name!r}")
    try:
        safe_component(name, "name")  # it names the folder of the scenario's rows inside each run
    except ConfigError as e:
        raise f.error("name", str(e).removeprefix("name ")) from None
    description = f.get("description", "")
    kind = f.choice("kind", KINDS)
    units = _Fields(f.get("units", required=True), "units.", source)
    sigma_unit = units.get("sigma", required=True)
    if sigma_unit != SIGMA_UNIT:
        raise units.error("sigma", f"unsupported unit {sigma_unit!r}; sigma must be given as {SIGMA_UNIT!r} "
                          "(std of the additive activation noise, in activation units, as train.sigma)")
    unit_spec = {"sigma": SIGMA_UNIT}
    tu = units.get("time", required=kind in ("trajectory", "fleet_trajectory"))
    if tu is not None:
        if not isinstance(tu, str) or not tu.strip():
            raise units.error("time", f"expected the name of the time unit (e.g. h, day, month), got {tu!r}")
        unit_spec["time"] = tu
    units.done()
    spec = {"name": name, **({"description": str(description)} if description else {}), "kind": kind, "units": unit_spec}
    times = np.zeros(1)
    if kind == "fixed":
        s = f.number("sigma", required=True, minimum=0)
        spec["sigma"] = s
        sigma = np.full((1, 1), s)
    elif kind == "fleet":
        spec["fleet"], vals = _fleet(f.get("fleet", required=True), source, base, "sigma")
        sigma = vals[:, None]
    elif kind == "trajectory":
        spec["trajectory"], times, traj = _trajectory(f.get("trajectory", required=True), source, base)
        sigma = traj[None, :]
    elif f.get("measurements") is not None:
        spec["measurements"], times, sigma = _measurements(f.get("measurements"), source, base)
    else:
        combine = f.choice("combine", ("scale", "offset"), "scale")
        spec["fleet"], vals = _fleet(f.get("fleet", required=True), source, base,
                                     "scale factor" if combine == "scale" else "sigma offset")
        spec["trajectory"], times, traj = _trajectory(f.get("trajectory", required=True), source, base)
        spec["combine"] = combine
        sigma = vals[:, None] * traj[None, :] if combine == "scale" else vals[:, None] + traj[None, :]
        if np.any(sigma < 0):
            raise f.error("combine", "offset fleet x trajectory gives a negative sigma; raise the trajectory or the offsets")
    for key in TOP_KEYS:
        if key in f.data and key not in f.used:
            raise f.error(key, f"not used by kind {kind!r}" + (" with measurements" if "measurements" in spec else ""))
    f.done()
    weights = np.outer(np.full(sigma.shape[0], 1.0 / sigma.shape[0]), _time_weights(times))
    return Scenario(spec=spec, sigma=np.asarray(sigma, dtype=float), times=np.asarray(times, dtype=float), weights=weights)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario YAML file (or the name of a bundled one, see ``vant list scenarios``)."""
    p = Path(path)
    if not p.is_file() and not p.suffix and (BUNDLED / f"{p.name}.yaml").is_file():
        p = BUNDLED / f"{p.name}.yaml"
    if not p.is_file():
        raise ScenarioError(f"scenario file {p} does not exist (bundled: {', '.join(list_scenarios())})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{p.name}: not valid YAML: {str(e).splitlines()[0]}") from None
    return scenario_from_dict(data, source=p.name, base=p.parent)


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write the normalised, self-contained spec (CSV contents inlined)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(scenario.spec, sort_keys=False))
    return p


def list_scenarios() -> list[str]:
    return sorted(q.stem for q in BUNDLED.glob("*.yaml"))


# ----------------------------------------------------------------------------- training from a profile

def weighted_quantile(values: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    """Lower inverse CDF of a weighted discrete distribution: the smallest value whose cumulative
    weight reaches q (for equal weights and q = (i + 1/2)/n this returns the i-th smallest value)."""
    v, w = np.asarray(values, float).ravel(), np.asarray(weights, float).ravel()
    order = np.argsort(v, kind="stable")
    v, c = v[order], np.cumsum(w[order]) / w.sum()
    idx = np.searchsorted(c, np.atleast_1d(q) - 1e-12, side="left").clip(0, len(v) - 1)
    return v[idx]
