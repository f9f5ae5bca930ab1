"""Grid specs: one YAML file expanded into resolved run configs, every point checked before any run.

A grid spec (the presets in ``vant/experiments/presets/`` are examples) is a mapping::

    description: one line shown before the grid runs
    cost: what the full grid costs, with the measurement behind it
    base: {...}                   # a RunConfig mapping shared by every run
    grid: {dotted.key: [v, ...]}  # Cartesian product, applied to every variant
    variants:                     # named, non-Cartesian sets of settings (optional)
      NT:   {train.method: nt, grid: {train.sigma: [0.1, 0.3]}}   # a variant may carry its own grid
      VANT: {train.method: vant, train.sigma: 0.5}
      VANT-ft: {train.method: vant, train.sigma: 0.5, init_from_variant: clean, train.epochs: 5}
    scenario: drifting_fleet      # optional: variants may take their training noise from it
    report: {kind: curves | heatmap | table1 | bars | compare | scenario, ...}   # see vant.experiments.report
    slurm: {partition: gpu, time: "8:00:00", mem: 16G}   # optional: --executor slurm's settings (vant.experiments.slurm)
    profiles:                     # partial specs merged over this one; `null` deletes a variant or grid key
      full: {}
      smoke: {base: {data: {name: digits}, train: {epochs: 2}}}

Runs = for each variant, the product of the top-level grid and the variant's grid. A run's config
is base < variant settings < grid point, checked like any run config (unknown keys are errors). A
variant ``{from_scenario: nt | vant | vant_fit | empirical}`` takes its training-noise settings from
the spec's scenario (:func:`vant.scenarios.fit.scenario_settings`); its own keys override them.
A variant ``{upper_bound: ladder}`` takes its rAUC and PA against the NT runs of variant ``ladder``
(:func:`_link_groups`). A variant ``{init_from_variant: clean}`` fine-tunes: each of its runs starts from the trained weights
of the run of variant ``clean`` that has the same values of the grid keys both variants have (the
same ``train.seed``, say); the grid trains those sources first (:func:`waves`).
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import yaml

from ..config import (NON_SEMANTIC, ConfigError, RunConfig, config_hash, from_dict, load_yaml, merge, parse_override, resolve,
                      pop_dotted, safe_component, set_dotted, to_dict)
from ..data import check_dataset_name
from ..models import check_model, model_info
from ..pipeline.loggers import check_trackers
from ..pipeline.rundir import run_dir

PRESETS = Path(__file__).parent / "presets"
#: The keys of the training-noise recipe: runs that differ only in these share an NT ladder (upper bound).
RECIPE_KEYS = ("train.method", "train.sigma", "train.alpha", "train.theta", "train.sampler", "train.sigma_values",
               "train.warmup_epochs")
#: The key whose values are repetitions of one setting, not settings (summarised over, paired by).
SEED = "train.seed"


def group_key(cfg: RunConfig) -> str:
    """Runs with the same group share an NT upper bound: the config without recipe, seed and bookkeeping keys."""
    data = to_dict(cfg)
    for key in RECIPE_KEYS + (SEED,) + tuple(k for k in NON_SEMANTIC if k != "eval") + ("eval.batch_size", "eval.batched"):
        pop_dotted(data, key)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


@dataclass
class GridSpec:
    name: str = ""  # defaults to the file's stem
    description: str = ""  # one line: what the grid reproduces
    cost: str = ""  # what the full grid costs and how that was measured
    base: dict = field(default_factory=dict)  # RunConfig mapping shared by every run
    grid: dict = field(default_factory=dict)  # dotted key -> list of values (Cartesian product)
    variants: dict = field(default_factory=dict)  # name -> {dotted key: value, grid: {...}}
    scenario: str = ""  # scenario name or file that `from_scenario` variants and the scenario report use
    report: dict = field(default_factory=dict)  # {kind: ..., options}; see vant.experiments.report
    slurm: dict = field(default_factory=dict)  # sbatch settings of --executor slurm; see vant.experiments.slurm
    profile: str = ""  # which profile was applied (set by load_spec)


@dataclass
class Job:
    """One grid point: its variant, its grid values and the resolved run config."""

    variant: str
    point: dict  # dotted key -> value, the grid values of this run
    config: RunConfig
    source: Union["Job", None] = None  # the job whose trained weights this one starts from (init_from_variant)
    source_variant: Union[str, None] = None  # the variant named by init_from_variant
    ub_variant: Union[str, None] = None  # the variant named by upper_bound
    group: str = ""  # the NT ladder it is measured against; "" = its own group (group_key)

    @property
    def path(self) -> Path:
        return run_dir(self.config)


def list_presets() -> dict[str, str]:
    out = {}
    for p in sorted(PRESETS.glob("*.yaml")):
        out[p.stem] = str((yaml.safe_load(p.read_text()) or {}).get("description", ""))
    return out


def find_spec(name_or_path: str) -> Path:
    """A preset name (``fig2``) or the path of a YAML file."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = PRESETS / f"{name_or_path}.yaml"
    if preset.is_file():
        return preset
    raise ConfigError(f"no grid spec {name_or_path!r}: not a file, and not a preset ({', '.join(list_presets())})")


def _merge_profile(spec: dict, profile: dict) -> dict:
    """Deep-merge ``profile`` over ``spec``; a ``null`` entry of ``variants`` or ``grid`` deletes it.
    Options of ``report`` are replaced, not merged."""
    out = copy.deepcopy(spec)
    for key, value in profile.items():
        if key in ("variants", "grid") and isinstance(value, dict):
            target = dict(out.get(key) or {})
            for k, v in value.items():
                if v is None:
                    target.pop(k, None)
                elif key == "variants" and isinstance(target.get(k), dict) and isinstance(v, dict):
                    target[k] = _merge_variant(target[k], v)
                else:
                    target[k] = v
            out[key] = target
        elif key == "report" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}  # a profile's report option replaces the whole option (panels)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _merge_variant(variant: dict, update: dict) -> dict:
    out = dict(variant)
    for k, v in update.items():
        if k == "grid" and isinstance(v, dict):
            g = dict(out.get("grid") or {})
            for gk, gv in v.items():
                if gv is None:
                    g.pop(gk, None)
                else:
                    g[gk] = gv
            out["grid"] = g
        else:
            out[k] = v
    return out


def load_spec(name_or_path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> GridSpec:
    """Read a spec, apply a profile (default ``full`` when the spec has one) and ``key=value`` overrides."""
    path = find_spec(str(name_or_path))
    data = load_yaml(path)
    if not isinstance(data, dict) or not any(data.get(k) for k in ("base", "grid", "variants")):
        raise ConfigError(f"{path}: a grid spec needs at least one of base, grid or variants (the file has "
                          f"{', '.join(map(str, data)) if isinstance(data, dict) and data else 'nothing'})")
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{path}: profiles must be a mapping of name -> partial spec")
    if profile is None:
        profile = "full" if "full" in profiles else ""
    if profile:
        if profile not in profiles:
            raise ConfigError(f"{path.name} has no profile {profile!r}; it has {sorted(profiles) or 'none'}")
        data = _merge_profile(data, profiles[profile] or {})
    for text in overrides or []:
        key, value = parse_override(text)
        parts = key.split(".")
        if parts[0] == "variants" and len(parts) > 2 and parts[1] not in (data.get("variants") or {}):
            # a misspelt variant would otherwise become a new one, trained with nothing but this key
            raise ConfigError(f"{path.name}: override {key}: the spec has no variant {parts[1]!r} (it has "
                              f"{sorted(data.get('variants') or {})}); add new variants in a spec file")
        set_dotted(data, key, value)  # grid.train.sigma=[..] nests; _flatten reads both forms, the later wins
    data.setdefault("name", path.stem)
    data["profile"] = profile
    try:
        spec = from_dict(GridSpec, data)
        safe_component(spec.name, "name")  # the grid directory is <out_dir>/grids/<name>-<profile>
        if spec.profile:
            safe_component(spec.profile, "profile")
        return spec
    except ConfigError as e:
        hint = " (run settings go under base., e.g. base.train.epochs=3)" if "unknown config key" in str(e) else ""
        raise ConfigError(f"{path.name}: {e}{hint}") from None


def spec_dict(spec: GridSpec) -> dict:
    return to_dict(spec)


def _flatten(mapping: dict, prefix: str = "") -> dict:
    """``{train: {sigma: [..]}}`` and ``{train.sigma: [..]}`` both become ``{'train.sigma': [..]}``."""
    out = {}
    for k, v in (mapping or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and not key.endswith("kwargs"):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _nested(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        set_dotted(out, k, copy.deepcopy(v))
    return out


def _check_grid(grid: dict, where: str) -> dict:
    flat = _flatten(grid)
    for k, v in flat.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}.{k}: a grid key needs a non-empty list of values, got {v!r}")
    return flat


def expand(spec: GridSpec) -> list[Job]:
    """Every grid point of the spec as a resolved run config; bad keys or values fail here, before any run."""
    top = _check_grid(spec.grid, "grid")
    variants = spec.variants or {"": {}}
    jobs = []
    scenario = None
    for vname, settings in variants.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"variants.{vname}: expected a mapping of settings, got {settings!r}")
        settings = dict(settings)
        derived = settings.pop("from_scenario", None)
        if derived is not None:
            if not spec.scenario:
                raise ConfigError(f"variants.{vname}.from_scenario needs the spec's `scenario` (a name or file)")
            from ..scenarios.fit import scenario_settings
            from ..scenarios.spec import load_scenario

            scenario = scenario or load_scenario(spec.scenario)
            try:
                settings = {**scenario_settings(scenario, derived), **settings}
            except ValueError as e:
                raise ConfigError(f"variants.{vname}.from_scenario: {e}") from None
        source_variant = settings.pop("init_from_variant", None)
        ub_variant = settings.pop("upper_bound", None)
        vgrid = _check_grid(settings.pop("grid", None) or {}, f"variants.{vname}.grid")
        fixed = _flatten(settings)
        if source_variant is not None:
            if fixed.get("train.init_from") is not None:
                raise ConfigError(f"{spec.name}: variants.{vname}: init_from_variant and train.init_from both name a "
                                  "source; give one")
            fixed["train.init_from"] = f"variant:{source_variant}"  # the run directory is known once all points are
        grid = {**top, **vgrid}
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            data = merge(merge(copy.deepcopy(spec.base), _nested(fixed)), _nested(point))
            where = f"variant {vname!r}, " if vname else ""
            try:
                cfg = resolve(from_dict(RunConfig, data))
                check_dataset_name(cfg.data.name)
                check_model(cfg.model.name, cfg.model.kwargs)
                check_trackers(cfg)
            except (ConfigError, ValueError) as e:
                raise ConfigError(f"{spec.name}: {where}point {point}: {e}") from None
            jobs.append(Job(vname, point, cfg, source_variant=source_variant, ub_variant=ub_variant))
    if not jobs:
        raise ConfigError(f"{spec.name}: the grid has no runs")
    _link_sources(spec, jobs)
    _link_groups(spec, jobs)
    return jobs


def _named_variant(spec: GridSpec, job: Job, name: str, key: str) -> str:
    """The error prefix of ``variants.<job's>.<key>``, once ``name`` is known to be a variant of the spec."""
    where = f"{spec.name}: variants.{job.variant}.{key}"
    if name not in (spec.variants or {}):
        raise ConfigError(f"{where}: no variant {name!r} (the grid has {sorted(spec.variants or {})})")
    return where


def _agree(job: Job, other: Job, ignore: set = frozenset()) -> bool:
    """Whether ``other`` has ``job``'s values on every grid key both points have (but ``ignore``)."""
    return all(str(other.point[k]) == str(v) for k, v in job.point.items() if k in other.point and k not in ignore)


def _link_groups(spec: GridSpec, jobs: list[Job]) -> None:
    """A variant ``{upper_bound: ladder}`` is measured against the NT runs of variant ``ladder`` (rAUC
    against their matched diagonal, PA against their NT at sigma_train), whatever its own training
    length, learning rate or initialisation: a fine-tune against the NT trained from scratch."""
    ignore = set(RECIPE_KEYS) | {SEED}
    for job in jobs:
        ub = job.ub_variant
        if ub is None:
            continue
        where = _named_variant(spec, job, ub, "upper_bound")
        groups = {group_key(j.config) for j in jobs if j.variant == ub and j.ub_variant is None and _agree(job, j, ignore)}
        if len(groups) != 1:
            raise ConfigError(f"{where}: point {job.point} matches {len(groups)} NT ladders of {ub!r}; it must match one")
        job.group = groups.pop()


def _link_sources(spec: GridSpec, jobs: list[Job]) -> None:
    """Point every job of an ``init_from_variant`` variant at its source run (same values of the
    shared grid keys), and set its ``train.init_from``/``init_hash`` to that run's directory/config."""
    for job in jobs:
        src = job.source_variant
        if src is None:
            continue
        where = _named_variant(spec, job, src, "init_from_variant")
        if src == job.variant:
            raise ConfigError(f"{where}: a variant cannot start from its own runs")
        candidates = [j for j in jobs if j.variant == src and _agree(job, j)]
        if len(candidates) != 1:
            shared = sorted(k for k in job.point if any(k in j.point for j in jobs if j.variant == src))
            raise ConfigError(f"{where}: point {job.point} matches {len(candidates)} runs of {src!r} on the grid keys "
                              f"they share ({shared or 'none'}); it must match exactly one")
        if candidates[0].source_variant is not None:
            raise ConfigError(f"{where}: {src!r} itself starts from another variant; chains are not supported")
        job.source = candidates[0]
        job.config.train.init_from = str(candidates[0].path.expanduser().resolve())
        job.config.train.init_hash = "run:" + config_hash(candidates[0].config)


def waves(jobs: list[Job]) -> list[list[Job]]:
    """The jobs in the order they can run: sources first, then the runs that start from them."""
    first = [j for j in jobs if j.source is None]
    then = [j for j in jobs if j.source is not None]
    return [w for w in (first, then) if w]


