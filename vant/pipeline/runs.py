"""Runs: one directory per trained model, named by a hash of its resolved config, that explains itself.

    runs/<label>-<hash>/
        config.yaml      resolved config + library versions, vant's commit (or installed version), device
        epochs.csv       one row per epoch (loss, accuracy, test accuracy at sigma_train, speed)
        checkpoint.pt    plain dict: model, optimizer, scheduler, sampler/RNG states, epoch, config, config hash
        sweep.csv        one row per (sigma, repeat, seed) of noisy evaluation, every repeat kept
        summary.json     numbers for the current evaluation grid, made from the rows
        figures/         accuracy_vs_sigma.png, training.png (drawn from the CSV rows), each with its values (.csv)
        tensorboard/     event files, where log.tensorboard is on (vant.pipeline.loggers)

A finished run is never trained again, and evaluation rows already stored are never recomputed:
asking for a run again only fills what is missing. Bad input fails before the directory exists.

Nothing in a run directory executes: the checkpoint is read with ``weights_only=True``, the YAML with
``safe_load``. A run adopts only its own checkpoint (same config hash, tensors that fit the model).
A file that does not parse or does not belong is a one-line error naming it
(:class:`~vant.config.ConfigError` for config.yaml, :class:`~vant.pipeline.store.CheckpointError`
for the others) that says what to delete.
"""
from __future__ import annotations

import json
import math
import platform
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from torch import nn

from .. import __version__
from ..config import ConfigError, RunConfig, config_hash, resolve, to_dict
from ..core.inject import inject_noise_
from ..core.metrics import auc, mean_std_ci
from ..core.samplers import make_sampler
from ..data import ArrayData, DeviceBatches, check_dataset_name, load_dataset
from ..models import check_model, create_model, model_info, registered
from ..plots import accuracy_vs_sigma, training_curves
from . import provenance
from .evaluate import sweep
# the run directory's names and readers live in .rundir (no torch); re-exported here as before
from .rundir import (EPOCH_FIELDS, EPOCH_NUMERIC, SWEEP_FIELDS, SWEEP_NUMERIC, Run, _missing_rows, eval_sigmas, is_done,
                     label, run_dir)
from .init import apply_init, check_source_unchanged, load_source, with_init_hash
from .loggers import Trackers, check_trackers, open_trackers
from .store import CheckpointError, RunBusy, load_checkpoint, load_model_state, lock, read_csv, write_csv, write_text_atomic
from .train import TrainingDiverged, fit


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


def model_input_size(cfg: RunConfig) -> int | None:
    """The side the data must have: data.image_size if set, else what the model needs."""
    return cfg.data.image_size or model_info(cfg.model.name).input_size


def build_model(cfg: RunConfig, data: ArrayData) -> nn.Module:
    """The plain model of the config with the config's noise sites injected (all silent)."""
    torch.manual_seed(cfg.train.seed)
    try:
        model = create_model(cfg.model.name, num_classes=data.num_classes, in_channels=data.channels, **cfg.model.kwargs)
    except TypeError as e:
        raise ValueError(f"model.kwargs: {e}") from None
    if not registered(cfg.model.name):  # a model vant did not write: does it take this data and give logits?
        probe_model(model, data, cfg.model.name)
    if cfg.model.quant_bits is not None:  # QAT: the same model with Brevitas layers, same site names
        from ..baselines.qat import quantize_
        quantize_(model, cfg.model.quant_bits, cfg.model.quant_act_scale)
    inject_noise_(model, cfg.noise.sites, cfg.noise.kind)
    return model


def probe_model(model: nn.Module, data: ArrayData, name: str) -> None:
    """One forward pass of (up to) two training images through the plain model, before anything is written.

    A model that does not take the data's shape, or does not return logits ``[batch, classes]``, is
    a one-line ConfigError here instead of a traceback in the first training step. Nothing changes:
    eval mode (BatchNorm statistics untouched), no gradient, the RNG state restored.
    """
    mean = torch.tensor(data.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(data.std).view(1, -1, 1, 1) * 255
    x = (data.train_x[:2].float() - mean) / std
    shape = "[" + ", ".join(map(str, x.shape)) + "]"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(x)
    except Exception as e:  # any failure of a forward pass here means: this model does not fit this data
        why = " ".join(str(e).split())[:300] or type(e).__name__
        raise ConfigError(f"model.name={name!r} does not run on a {shape} batch of {data.name!r} "
                          f"({type(e).__name__}: {why}); set data.image_size or model.kwargs to fit it "
                          "(VANT_DEBUG=1 shows the traceback)") from e
    finally:
        model.train(was_training)
    k = data.num_classes
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), k):
        got = f"a tensor of shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model.name={name!r} returns {got} for a {shape} batch; vant needs logits of shape "
                          f"[batch, {k}] ({k} classes in {data.name!r})")


def make_batches(cfg: RunConfig, data: ArrayData, device: torch.device, train: bool) -> DeviceBatches:
    cl = cfg.train.channels_last and device.type == "cuda"
    if train:
        return DeviceBatches(data.train_x, data.train_y, data.mean, data.std, cfg.train.batch_size, device, train=True,
                             augment=data.augment, flip=data.flip, seed=cfg.train.seed, channels_last=cl)
    return DeviceBatches(data.test_x, data.test_y, data.mean, data.std, cfg.eval.batch_size, device, train=False,
                         channels_last=cl)


def check_batches(cfg: RunConfig, data: ArrayData, model: nn.Module) -> None:
    """Refuse a batch size that leaves a last training batch of one image under BatchNorm (its
    batch statistics need two); the message names the key and the sizes that would work."""
    n, bs = len(data.train_x), cfg.train.batch_size
    if n % bs == 1 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError(f"train.batch_size={bs} leaves a last training batch of one image ({n} images), on which "
                          f"BatchNorm cannot train; choose another batch size, e.g. {bs + 1} or {bs - 1}")


def train_run(model: nn.Module, data: ArrayData, cfg: RunConfig, checkpoint: Path, device: torch.device,
              on_epoch=None, progress: bool = True) -> list[dict]:
    """:func:`~vant.pipeline.train.fit` with the run's settings and its device-resident batches."""
    t = cfg.train
    sampler = make_sampler(t.method, t.sigma, theta=t.theta, alpha=t.alpha, mode=t.sampler,
                           values=t.sigma_values, warmup_epochs=t.warmup_epochs, seed=t.seed)
    try:
        return fit(model, make_batches(cfg, data, device, train=True), t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                   sampler=sampler, optimizer=t.optimizer, sam_rho=t.sam_rho, sam_adaptive=t.sam_adaptive,
                   device=device, amp=t.amp, compile=t.compile,
                   test_batches=make_batches(cfg, data, device, train=False) if t.test_every else None,
                   test_every=t.test_every, test_sigma=t.sigma, eval_seed=cfg.eval.seed, checkpoint=checkpoint,
                   checkpoint_extra=dict(config=to_dict(cfg)), checkpoint_hash=config_hash(cfg),
                   noise_seed=t.seed + 1, on_epoch=on_epoch,
                   progress=progress, desc=cfg.name or f"{cfg.model.name}/{t.method}")
    except TrainingDiverged as e:  # the library's message says where; the run adds which recipe
        raise TrainingDiverged(f"{e}; method={t.method}, sigma_train={t.sigma:g}") from None


def _versions() -> dict:
    import torchvision

    meta = dict(vant=__version__, torch=str(torch.__version__), torchvision=str(torchvision.__version__),
                python=platform.python_version(), platform=platform.platform(),
                cpu_capability=torch.backends.cpu.get_cpu_capability())  # the vector ISA torch's CPU kernels use
    meta.update(provenance.source())  # vant's own commit, or the installed distribution: not a host repository's
    return meta


def run_data(cfg: RunConfig, download: bool = False) -> ArrayData:
    """The data a run trains and is evaluated on: its data set at the model's input size, with the
    configured subsets (``data.subset``, ``data.test_subset``)."""
    d = cfg.data
    return load_dataset(d.name, d.root, download, model_input_size(cfg), d.augment, subset=d.subset,
                        test_subset=d.test_subset, subset_seed=d.subset_seed)


def execute(cfg: RunConfig, progress: bool = True, log=print, *, resolved: bool = False) -> Run:
    """Train (or resume) and evaluate ``cfg``; everything already stored is reused. ``resolved``:
    ``cfg`` is already the output of :func:`~vant.config.resolve` (a grid resolves each point once,
    at expansion)."""
    if not resolved:
        cfg = resolve(cfg)
        check_dataset_name(cfg.data.name)
        check_model(cfg.model.name, cfg.model.kwargs)
    cfg = with_init_hash(cfg)  # the source's content is part of the run's identity
    path = run_dir(cfg)
    run = Run(path)
    if run.trained and not _missing_rows(cfg, run.rows()):
        _summarise(run, cfg)
        return run
    device = resolve_device(cfg.device)
    with run_threads(cfg, device):  # all of the run's math, from the data's statistics on
        # Everything that can fail on bad input happens before the directory is created.
        data = run_data(cfg, cfg.data.download)
        model = build_model(cfg, data)
        if cfg.train.init_from is not None and not (path / "checkpoint.pt").is_file():  # a resume has its own weights
            check_source_unchanged(cfg)
            apply_init(model, load_source(cfg), cfg.train.init_skip, f"train.init_from={cfg.train.init_from}")
        check_batches(cfg, data, model)
        check_trackers(cfg)
        path.mkdir(parents=True, exist_ok=True)
        _train_and_sweep(cfg, run, path, data, model, device, progress)
    return run


def _train_and_sweep(cfg: RunConfig, run: Run, path: Path, data: ArrayData, model: nn.Module, device: torch.device,
                     progress: bool) -> None:
    with lock(path), open_trackers(cfg, path) as trackers:
        if not (path / "config.yaml").is_file():
            meta = dict(_versions(), device=str(device), created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        hash=config_hash(cfg), test_split=data.test_split)
            if cfg.model.name.startswith("timm:"):  # timm's version decides what the name builds
                import timm
                meta["timm"] = str(timm.__version__)
            write_text_atomic(path / "config.yaml", yaml.safe_dump({"config": to_dict(cfg), "meta": meta}, sort_keys=False))
        trackers.start(to_dict(cfg), run.epochs() if trackers.loggers else [])
        ckpt = path / "checkpoint.pt"
        if not run.trained:
            history = train_run(model, data, cfg, ckpt, device, on_epoch=lambda row: _epoch_done(path, row, trackers),
                                progress=progress)
            write_csv(path / "epochs.csv", history, EPOCH_FIELDS)
            (path / "trained").write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        else:
            _load_weights(model, run, cfg)
            model.to(device)
        rows = run.rows()
        todo = _missing_rows(cfg, rows)
        if todo:
            test = make_batches(cfg, data, device, train=False)
            autocast = cfg.train.amp and device.type == "cuda"
            bar = _sweep_bar(cfg, todo, len(data.test_x)) if progress else None
            try:
                for r, sig in sorted(todo.items()):
                    rows += sweep(model, test, sig, [r], cfg.eval.seed, batched=cfg.eval.batched, autocast=autocast,
                                  on_step=bar.update if bar is not None else None)
                    write_csv(path / "sweep.csv", rows, SWEEP_FIELDS)
            finally:
                if bar is not None:
                    bar.close()
        summary = _summarise(run, cfg)
        trackers.end(summary, run.epochs(), sorted((path / "figures").glob("*.png")))


def _sweep_bar(cfg: RunConfig, todo: dict[int, list[float]], n_test: int):
    """The final sweep's progress bar (stderr): test images evaluated, counted once per sigma, with
    tqdm's elapsed time and estimate; shown on a terminal and written as plain updates elsewhere."""
    from ..progress import progress_bar

    sigmas = sum(len(s) for s in todo.values())
    return progress_bar(total=sigmas * n_test, unit="img", unit_scale=True, leave=False,
                        desc=f"sweep {sigmas} (sigma, repeat) points", mininterval=1.0)


def _load_weights(model: nn.Module, run: Run, cfg: RunConfig) -> None:
    """The finished run's trained weights into ``model``, only from a checkpoint of this config."""
    path = run.path / "checkpoint.pt"
    advice = f"delete the run directory {run.path} to train it again"
    load_model_state(model, load_checkpoint(path, "cpu", expect_hash=config_hash(cfg), advice=advice)["model"], path,
                     advice)


@contextmanager
def run_threads(cfg: RunConfig, device: torch.device | str):
    """On the CPU, the run's math uses ``cfg.cpu_threads`` threads whatever this process has (the
    environment's OMP_NUM_THREADS, a grid worker's --threads, a resume elsewhere): oneDNN's weight
    gradients depend on the thread count, so a fixed count is what makes the numbers reproducible.
    Training, sweeps, scenario and sensitivity evaluations of a run all compute inside it."""
    device = resolve_device(device) if isinstance(device, str) else device
    if device.type != "cpu" or cfg.cpu_threads is None or cfg.cpu_threads == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.cpu_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _epoch_done(path: Path, row: dict, trackers: Trackers) -> None:
    _append_epoch(path, row)
    trackers.epoch(row)


def _append_epoch(path: Path, row: dict) -> None:
    rows = read_csv(path / "epochs.csv", EPOCH_NUMERIC)
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    write_csv(path / "epochs.csv", rows, EPOCH_FIELDS)


def curve(rows: list[dict], sigmas: list[float], seed: int, repeats: int) -> dict:
    """Per-sigma mean, std and 95% CI half-width over the repeats belonging to (seed, repeats)."""
    out = {"sigmas": [], "mean": [], "std": [], "ci95": [], "n": []}
    for s in sigmas:
        vals = [r["accuracy"] for r in rows if abs(r["sigma"] - s) < 1e-9 and r["repeat"] < repeats
                and r["seed"] == seed + r["repeat"]]
        if not vals:
            raise KeyError(f"no evaluation rows at sigma={s}")
        m, sd, ci = mean_std_ci(vals)
        for k, v in (("sigmas", s), ("mean", m), ("std", sd), ("ci95", ci), ("n", len(vals))):
            out[k].append(v)
    return out


def summary_of(run: Run, cfg: RunConfig) -> dict:
    """The summary of ``run`` for ``cfg``'s evaluation settings, computed from the stored rows only."""
    rows, epochs = run.rows(), run.epochs()
    t = cfg.train
    grid = curve(rows, cfg.eval.sigmas, cfg.eval.seed, cfg.eval.repeats)
    clean = curve(rows, [0.0], cfg.eval.seed, 1)
    at_train = curve(rows, [t.sigma], cfg.eval.seed, cfg.eval.repeats) if t.method != "clean" else clean
    last = epochs[-1] if epochs else {}
    summary = dict(
        run=run.path.name, hash=config_hash(cfg), model=cfg.model.name, dataset=cfg.data.name, method=t.method,
        sigma_train=t.sigma, alpha=t.alpha, theta=t.theta, sampler=t.sampler, epochs=t.epochs, seed=t.seed,
        quant_bits=cfg.model.quant_bits, quant_act_scale=cfg.model.quant_act_scale, optimizer=t.optimizer,
        sam_rho=t.sam_rho if t.optimizer == "sam" else None, sam_adaptive=t.sam_adaptive if t.optimizer == "sam" else None,
        final_train_loss=last.get("train_loss"), final_train_acc=last.get("train_acc"),
        train_seconds=round(sum(r["seconds"] for r in epochs), 2) if epochs else None,
        clean_accuracy=clean["mean"][0],
        acc_at_sigma_train=at_train["mean"][0], acc_at_sigma_train_std=at_train["std"][0],
        auc=auc(grid["sigmas"], grid["mean"]) if len(grid["sigmas"]) > 1 else None,
        eval=dict(sigmas=grid["sigmas"], mean=grid["mean"], std=grid["std"], ci95=_nan_none(grid["ci95"]),
                  repeats=cfg.eval.repeats, seed=cfg.eval.seed, batched=cfg.eval.batched),
    )
    return summary


def _summarise(run: Run, cfg: RunConfig) -> dict:
    summary = summary_of(run, cfg)
    t = cfg.train
    grid = dict(sigmas=summary["eval"]["sigmas"], mean=summary["eval"]["mean"], std=summary["eval"]["std"])
    epochs = run.epochs()
    write_text_atomic(run.path / "summary.json", json.dumps(summary, indent=2))
    figures = run.path / "figures"
    accuracy_vs_sigma([dict(label=label(cfg), **grid)], figures / "accuracy_vs_sigma.png",
                      title=f"{cfg.model.name} on {cfg.data.name}: {t.method}" + (f" @ sigma={t.sigma:g}" if t.method != "clean" else ""),
                      mark=t.sigma if t.method != "clean" else None)
    if epochs:
        training_curves(epochs, figures / "training.png", title=run.path.name)
    return summary


def _nan_none(values):
    return [None if (isinstance(v, float) and math.isnan(v)) else v for v in values]


def load_trained(run: Run, device: str | torch.device = "auto"):
    """The trained model of a finished run (noise sites injected, all silent), its test batches
    and data set: what re-evaluating a run needs. Returns ``(model, test_batches, data)``."""
    if not run.trained:
        raise ValueError(f"run {run.path} has not finished training; run `vant train` on its config first")
    cfg = resolve(run.config)
    dev = resolve_device(device if device != "auto" else cfg.device)
    data = run_data(cfg)
    model = build_model(cfg, data)
    _load_weights(model, run, cfg)
    model.to(dev).eval()
    return model, make_batches(cfg, data, dev, train=False), data
