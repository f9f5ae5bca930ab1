"""A run directory's name and what is stored in it, read without torch (``vant list`` needs no more).

:mod:`vant.pipeline.runs` trains and evaluates into these directories; this module only names
them and reads their files: the resolved config, the epoch and evaluation rows, the summary.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import ConfigError, RunConfig, config_hash, from_dict
from .store import CheckpointError, read_csv

SWEEP_FIELDS = ["sigma", "repeat", "seed", "correct", "total", "accuracy", "mode"]
SWEEP_NUMERIC = [f for f in SWEEP_FIELDS if f != "mode"]
EPOCH_FIELDS = ["epoch", "lr", "train_loss", "train_acc", "test_acc", "test_sigma", "sigma_mean", "seconds", "images_per_s"]
EPOCH_NUMERIC = ["epoch", "train_loss", "train_acc", "test_acc", "seconds"]  # what summaries and figures read


def label(cfg: RunConfig) -> str:
    if cfg.name:
        return cfg.name
    t = cfg.train
    m = t.method if t.method == "clean" else f"{t.method}{t.sigma:g}"
    if t.method == "vant":
        m += f"-a{t.alpha:g}-t{t.theta:g}"
    q = cfg.model.quant_bits
    if q is not None:  # QAT: w4a4, plus the constant activation step if there is one
        m += f"-w{q}a{q}" + (f"-s{cfg.model.quant_act_scale:g}" if cfg.model.quant_act_scale is not None else "")
    if t.optimizer == "sam":
        m += f"-{'asam' if t.sam_adaptive else 'sam'}{t.sam_rho:g}"
    if t.init_from is not None:  # fine-tuned from trained weights
        m += "-ft"
    return f"{cfg.model.name.replace(':', '_')}-{cfg.data.name.replace(':', '_')}-{m}"


def run_dir(cfg: RunConfig) -> Path:
    """Where the (resolved) config's run lives."""
    return Path(os.path.expanduser(cfg.out_dir)) / f"{label(cfg)}-{config_hash(cfg)}"


@dataclass
class Run:
    """A run directory and what is stored in it."""

    path: Path

    def _stored(self) -> dict:
        path = self.path / "config.yaml"
        try:
            raw = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); restore it or delete the run "
                              f"directory {self.path}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise ConfigError(f"{path} holds no 'config' mapping; restore it or delete the run directory {self.path}")
        return raw

    @property
    def config(self) -> RunConfig:
        path = self.path / "config.yaml"
        try:
            return from_dict(RunConfig, self._stored()["config"])
        except ConfigError as e:
            if str(e).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {e}; restore it or delete the run directory {self.path}") from None

    @property
    def meta(self) -> dict:
        meta = self._stored().get("meta")
        return meta if isinstance(meta, dict) else {}

    def epochs(self) -> list[dict]:
        return read_csv(self.path / "epochs.csv", EPOCH_NUMERIC)

    def rows(self) -> list[dict]:
        return read_csv(self.path / "sweep.csv", SWEEP_NUMERIC)

    def summary(self) -> dict:
        path = self.path / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise CheckpointError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); delete it and run "
                                  f"`vant sweep {self.path}` to write it again") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("eval"), dict):
            raise CheckpointError(f"{path} is not a run summary; delete it and run `vant sweep {self.path}` "
                                  "to write it again")
        return summary

    @property
    def trained(self) -> bool:
        done = self.path / "trained"
        return done.is_file()

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        p = Path(path)
        if not (p / "config.yaml").is_file():
            raise FileNotFoundError(f"{p} is not a run directory (no config.yaml)")
        return cls(p)


def eval_sigmas(cfg: RunConfig) -> list[float]:
    """What a summary needs: the grid, sigma = 0 (clean accuracy) and sigma_train."""
    extra = [0.0] + ([cfg.train.sigma] if cfg.train.method != "clean" else [])
    return sorted(set(cfg.eval.sigmas) | set(extra))


def _missing_rows(cfg: RunConfig, rows: list[dict]) -> dict[int, list[float]]:
    have = {(round(r["sigma"], 9), r["repeat"], r["seed"]) for r in rows}
    todo: dict[int, list[float]] = {}
    for s in eval_sigmas(cfg):
        reps = 1 if s == 0 else cfg.eval.repeats  # clean evaluation is deterministic
        for r in range(reps):
            if (round(s, 9), r, cfg.eval.seed + r) not in have:
                todo.setdefault(r, []).append(s)
    return todo


def is_done(cfg: RunConfig) -> bool:
    """True when the (resolved) config's run is trained and holds every evaluation row it asks for."""
    run = Run(run_dir(cfg))
    return run.trained and not _missing_rows(cfg, run.rows())
