"""Experiment trackers: one small callback interface of a run, and loggers for TensorBoard and MLflow.

A run (:func:`vant.pipeline.runs.execute`) calls every selected :class:`RunLogger` at three points:
``on_start`` (the resolved config, and the epoch rows already stored when the run resumes),
``on_epoch`` (each epoch's row as it is trained) and ``on_end`` (the summary, the accuracy-vs-sigma
curve and the run's figures); ``close`` ends the session. The run directory stays the record;
trackers are views of it, selected by ``log.*`` of the config, off by default, and outside the
run's hash (turning one on never retrains anything).

Resuming does not duplicate epochs: TensorBoard's writer purges what an earlier session wrote and the
stored rows are logged again (``purge_step``); MLflow logs only the epochs its run lacks. A tracker
that fails after the start (a server gone away) is dropped with a one-line warning and the run goes
on; one that cannot start fails the run before it trains.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from ..config import ConfigError, RunConfig, config_hash

#: Per-epoch values logged, by column of epochs.csv (a NaN, e.g. an epoch without a test pass, is skipped).
EPOCH_METRICS = {"train_loss": "train/loss", "train_acc": "train/accuracy", "sigma_mean": "train/sigma_mean",
                 "lr": "train/lr", "seconds": "train/seconds", "test_acc": "test/accuracy_at_sigma_train"}
#: Summary values logged at the end (rAUC and PA need the other runs of a grid: they are in results.csv).
SUMMARY_METRICS = ("clean_accuracy", "acc_at_sigma_train", "acc_at_sigma_train_std", "auc", "final_train_loss",
                   "final_train_acc", "train_seconds")
#: Steps of the accuracy-vs-sigma curve: trackers take integer steps, so sigma is logged in thousandths.
SIGMA_STEP = 1000


class RunLogger(Protocol):
    """What a run tells a tracker."""

    def on_start(self, config: dict, history: list[dict]) -> None:
        """The resolved config (nested dict) and the epoch rows stored before this session."""

    def on_epoch(self, row: dict) -> None:
        """One trained epoch: the row written to epochs.csv."""

    def on_end(self, summary: dict, curve: dict, figures: Sequence[Path]) -> None:
        """The run's summary, its curve ``{sigmas, mean, std}`` and the paths of its figures (PNG)."""

    def close(self, status: str) -> None:
        """End the session: ``finished``, ``failed`` or ``killed``."""


def flat_config(config: dict, prefix: str = "") -> dict:
    """``{train: {sigma: 0.5}}`` -> ``{'train.sigma': '0.5'}``-like pairs; lists and mappings as JSON."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and not key.endswith("kwargs"):
            out.update(flat_config(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (dict, list, tuple)) else v
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_trackers(cfg: RunConfig) -> None:
    """Fail before a run starts when a selected tracker's package is missing (a one-line error)."""
    if cfg.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError('log.tensorboard needs TensorBoard: pip install "vant[tensorboard]"')
    if cfg.log.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('log.mlflow needs MLflow: pip install "vant[mlflow]"')


class TensorBoardLogger:
    """Event files in ``<run>/tensorboard``; ``tensorboard --logdir <out_dir>`` shows every run."""

    name = "TensorBoard"

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "tensorboard"
        self.writer = None
        self.config: dict = {}

    def on_start(self, config: dict, history: list[dict]) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        # A later session replaces what an earlier one wrote: purge from step 0 and log the stored
        # rows again, so a resumed run shows each epoch once whatever the earlier session reached.
        self.config = config
        earlier = self.dir.is_dir() and any(self.dir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(self.dir), purge_step=0 if earlier else None)
        self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)
        for row in history:
            self.on_epoch(row)

    def on_epoch(self, row: dict) -> None:
        for col, tag in EPOCH_METRICS.items():
            if _finite(row.get(col)):
                self.writer.add_scalar(tag, row[col], int(row["epoch"]))

    def on_end(self, summary: dict, curve: dict, figures: Sequence[Path]) -> None:
        from matplotlib.image import imread

        for s, m, sd in zip(curve["sigmas"], curve["mean"], curve["std"]):
            step = round(s * SIGMA_STEP)
            self.writer.add_scalar("eval/accuracy_vs_sigma", m, step)
            if _finite(sd):
                self.writer.add_scalar("eval/accuracy_std_vs_sigma", sd, step)
        metrics = {k: summary[k] for k in SUMMARY_METRICS if _finite(summary.get(k))}
        for k, v in metrics.items():
            self.writer.add_scalar(f"summary/{k}", v, summary.get("epochs") or 0)
        for png in figures:
            self.writer.add_image(f"figures/{Path(png).stem}", imread(png)[..., :3], 0, dataformats="HWC")
        params = {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                  for k, v in flat_config(self.config).items()}
        if params and metrics:
            self.writer.add_hparams(params, {f"hparam/{k}": v for k, v in metrics.items()}, run_name=".")
        self.writer.flush()

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()


class MLflowLogger:
    """One MLflow run per vant run directory, found again by its tags when the run resumes."""

    name = "MLflow"

    def __init__(self, uri: str, experiment: str, run_dir: Path, run_hash: str):
        self.uri, self.experiment, self.path, self.hash = uri, experiment, Path(run_dir), run_hash
        self.client = None
        self.run_id = None

    def on_start(self, config: dict, history: list[dict]) -> None:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(self.experiment)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
            name, where = self.path.name, str(self.path.resolve())
            found = [r for r in self.client.search_runs([exp_id], filter_string=f"tags.vant_hash = '{self.hash}'",
                                                        max_results=1000) if r.data.tags.get("vant_run_dir") == where]
        except Exception as e:  # a store that does not open: the run has not started, say why in one line
            raise ConfigError(f"log.mlflow={self.uri!r}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if found:
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=name, tags={"vant_run": name, "vant_hash": self.hash,
                                                                      "vant_run_dir": where})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flat_config(config).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
            self.client.log_batch(self.run_id, tags=[RunTag("mlflow.source.name", "vant")])
        logged = {m.step for m in self.client.get_metric_history(self.run_id, EPOCH_METRICS["train_loss"])}
        for row in history:
            if int(row["epoch"]) not in logged:
                self.on_epoch(row)

    def _metrics(self, values: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items() if _finite(v)]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def on_epoch(self, row: dict) -> None:
        self._metrics({tag: row.get(col) for col, tag in EPOCH_METRICS.items()}, int(row["epoch"]))

    def on_end(self, summary: dict, curve: dict, figures: Sequence[Path]) -> None:
        self._metrics({f"summary/{k}": summary.get(k) for k in SUMMARY_METRICS}, summary.get("epochs") or 0)
        for s, m, sd in zip(curve["sigmas"], curve["mean"], curve["std"]):
            self._metrics({"eval/accuracy_vs_sigma": m, "eval/accuracy_std_vs_sigma": sd}, round(s * SIGMA_STEP))
        for png in figures:
            self.client.log_artifact(self.run_id, str(png), "figures")
            data = Path(png).with_suffix(".csv")
            if data.is_file():
                self.client.log_artifact(self.run_id, str(data), "figures")
        for name in ("summary.json", "config.yaml", "epochs.csv", "sweep.csv"):
            if (self.path / name).is_file():
                self.client.log_artifact(self.run_id, str(self.path / name))

    def close(self, status: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status.upper())


class Trackers:
    """The run's loggers behind one object; with none selected every call does nothing."""

    def __init__(self, loggers: Sequence[RunLogger]):
        self.loggers = list(loggers)
        self.logged: set[int] = set()

    def start(self, config: dict, history: list[dict]) -> None:
        for lg in self.loggers:  # a tracker that cannot start stops the run before it trains
            lg.on_start(config, history)
        self.logged = {int(r["epoch"]) for r in history}

    def _call(self, method: str, *args) -> None:
        for lg in list(self.loggers):
            try:
                getattr(lg, method)(*args)
            except Exception as e:  # training goes on: the run directory keeps every row anyway
                self.loggers.remove(lg)
                msg = str(e).splitlines()[0] if str(e) else ""
                print(f"vant: warning: {getattr(lg, 'name', type(lg).__name__)} logging stopped "
                      f"({type(e).__name__}: {msg}); the run goes on", file=sys.stderr)

    def epoch(self, row: dict) -> None:
        if self.loggers and int(row["epoch"]) not in self.logged:
            self.logged.add(int(row["epoch"]))
            self._call("on_epoch", row)

    def end(self, summary: dict, epochs: list[dict], figures: Sequence[Path]) -> None:
        if not self.loggers:
            return
        for row in epochs:  # an epoch checkpointed just before a kill, never handed to on_epoch
            self.epoch(row)
        curve = {k: summary["eval"][k] for k in ("sigmas", "mean", "std")}
        self._call("on_end", summary, curve, list(figures))

    def close(self, status: str) -> None:
        self._call("close", status)


def make_loggers(cfg: RunConfig, run_dir: Path) -> list[RunLogger]:
    """The loggers ``cfg.log`` selects for the run in ``run_dir``."""
    loggers: list[RunLogger] = []
    if cfg.log.tensorboard:
        loggers.append(TensorBoardLogger(run_dir))
    if cfg.log.mlflow is not None:
        loggers.append(MLflowLogger(cfg.log.mlflow, cfg.log.experiment, run_dir, config_hash(cfg)))
    return loggers


@contextmanager
def open_trackers(cfg: RunConfig, run_dir: Path) -> Iterator[Trackers]:
    """The run's :class:`Trackers`, closed as ``finished``, ``failed`` (an error) or ``killed`` (an
    interrupt, a SLURM requeue)."""
    trackers = Trackers(make_loggers(cfg, run_dir))
    try:
        yield trackers
    except Exception:
        trackers.close("failed")
        raise
    except BaseException:
        trackers.close("killed")
        raise
    trackers.close("finished")


__all__ = ["RunLogger", "TensorBoardLogger", "MLflowLogger", "Trackers", "make_loggers", "open_trackers",
           "check_trackers", "flat_config"]
