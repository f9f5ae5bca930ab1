"""What a grid costs, from throughput measured on this device (``vant grid <spec> --estimate``).

For each distinct model/data shape of the grid, the real training loop (:func:`vant.pipeline.train.fit`)
runs two short epochs on random images of the data set's shape (the first warms up: allocator,
cuDNN autotuning) and the real evaluation (:func:`vant.pipeline.evaluate.sweep`) runs a few batches. The
grid's cost is then runs x epochs x steps per epoch x seconds per step, plus the per-epoch test
pass and the final sweep (every sigma x repeats over the test set). Nothing is downloaded: the
sizes of the public data sets are below; others are read to learn their shape.
"""
from __future__ import annotations

import copy
import json
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig
from ..data import ArrayData
from ..pipeline.evaluate import sweep
from ..pipeline.runs import (build_model, eval_sigmas, is_done, make_batches, model_input_size, resolve_device, run_data,
                             train_run)
from .grid import default_grid_dir
from .spec import GridSpec, expand

#: (train images, test images, channels, native side, classes) of the public sets; the test split
#: is the one vant evaluates on (CINIC-10: valid).
DATA_SHAPES = {
    "cifar10": (50_000, 10_000, 3, 32, 10),
    "cinic10": (90_000, 90_000, 3, 32, 10),
    "tinyimagenet": (100_000, 10_000, 3, 64, 200),
    "mnist": (60_000, 10_000, 1, 28, 10),
    "fashionmnist": (60_000, 10_000, 1, 28, 10),
    "svhn": (73_257, 26_032, 3, 32, 10),
}


@dataclass
class Shape:
    train_n: int
    test_n: int
    channels: int
    side: int
    classes: int


def data_shape(cfg: RunConfig) -> Shape:
    if cfg.data.name in DATA_SHAPES:
        n, t, c, side, k = DATA_SHAPES[cfg.data.name]
        return Shape(cfg.data.subset or n, cfg.data.test_subset or t, c, model_input_size(cfg) or side, k)
    d = run_data(cfg)
    return Shape(len(d.train_x), len(d.test_x), d.channels, d.size, d.num_classes)


def _shape_key(cfg: RunConfig) -> str:
    """Runs with the same key cost the same per step: model (float or quantized), input shape, batch,
    noise, optimizer (SAM takes two passes) and speed settings."""
    t = cfg.train
    return json.dumps([cfg.model.name, cfg.model.kwargs, cfg.model.quant_bits, cfg.data.name, cfg.data.image_size,
                       t.batch_size, cfg.eval.batch_size, cfg.noise.sites, cfg.noise.kind, t.optimizer, t.amp,
                       t.channels_last, t.compile], sort_keys=True, default=str)


def measure(cfg: RunConfig, shape: Shape, steps: int = 3) -> dict:
    """Seconds per training step and evaluated images per second for ``cfg`` on its device."""
    device = resolve_device(cfg.device)
    bs = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    # evaluation is timed on one batch of the run's size on a GPU; on the CPU, where batch size
    # hardly changes images/s, on at most 200 images so slow models are timed in minutes
    n_train = bs * steps
    n_test = min(shape.test_n, cfg.eval.batch_size if device.type == "cuda" else 200)
    rand = lambda n: torch.randint(0, 256, (n, shape.channels, shape.side, shape.side), dtype=torch.uint8, generator=g)  # noqa: E731
    data = ArrayData(name=cfg.data.name, train_x=rand(n_train), train_y=torch.randint(0, shape.classes, (n_train,), generator=g),
                     test_x=rand(n_test), test_y=torch.randint(0, shape.classes, (n_test,), generator=g),
                     num_classes=shape.classes, mean=(0.5,) * shape.channels, std=(0.25,) * shape.channels,
                     augment=bool(cfg.data.augment), flip=bool(cfg.data.augment), test_split="synthetic")
    probe = copy.deepcopy(cfg)
    probe.train.epochs, probe.train.test_every, probe.train.warmup_epochs = 2, 0, 0
    if probe.train.method == "clean":  # price every run with noise on (clean runs are a little cheaper)
        probe.train.method, probe.train.sigma = "nt", 0.5
    model = build_model(probe, data)
    with tempfile.TemporaryDirectory() as tmp:
        history = train_run(model, data, probe, Path(tmp) / "probe.pt", device, progress=False)
    step_s = history[-1]["seconds"] / steps  # epoch 2; epoch 1 warmed up
    test = make_batches(probe, data, device, train=False)
    sigmas = [0.5]
    autocast = probe.train.amp and device.type == "cuda"
    if device.type == "cuda":
        sweep(model, test, sigmas, 1, 0, batched=cfg.eval.batched, autocast=autocast)  # warm-up
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    sweep(model, test, sigmas, 1, 0, batched=cfg.eval.batched, autocast=autocast)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    eval_ips = n_test * len(sigmas) / (time.perf_counter() - tic)
    return dict(step_s=step_s, train_ips=bs / step_s, eval_ips=eval_ips)


def run_seconds(cfg: RunConfig, shape: Shape, m: dict) -> float:
    t = cfg.train
    train = t.epochs * math.ceil(shape.train_n / t.batch_size) * m["step_s"]
    tests = (t.epochs // t.test_every + (1 if t.epochs % t.test_every else 0)) if t.test_every else 0
    n_eval = sum(1 if s == 0 else cfg.eval.repeats for s in eval_sigmas(cfg))
    return train + (tests + n_eval) * shape.test_n / m["eval_ips"]


def device_name(cfg: RunConfig) -> str:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def estimate(spec: GridSpec, steps: int | None = None, log=print) -> dict:
    """Measure each shape of the grid once and price every run; returns a dict (see format_estimate).

    ``steps`` timed training steps per shape: default 20 on a GPU (short steps need more to time), 3 on the CPU.
    """
    jobs = list({j.path: j for j in expand(spec)}.values())
    if steps is None:
        steps = 20 if resolve_device(jobs[0].config.device).type == "cuda" else 3
    groups: dict[str, list] = {}
    for j in jobs:
        groups.setdefault(_shape_key(j.config), []).append(j)
    rows = []
    for key, members in groups.items():
        cfg = members[0].config
        shape = data_shape(cfg)
        q = cfg.model.quant_bits
        name = cfg.model.name + (f" W{q}A{q}" if q else "") + (" SAM" if cfg.train.optimizer == "sam" else "")
        log(f"timing {name} on {cfg.data.name} ({shape.channels}x{shape.side}x{shape.side}, "
            f"batch {cfg.train.batch_size}): {steps} steps ...")
        m = measure(cfg, shape, steps)
        secs = [run_seconds(j.config, shape, m) for j in members]
        todo = [s for j, s in zip(members, secs) if not is_done(j.config)]
        rows.append(dict(model=name, kwargs=cfg.model.kwargs, data=cfg.data.name, side=shape.side,
                         batch=cfg.train.batch_size, runs=len(members), runs_todo=len(todo),
                         epochs=sorted({j.config.train.epochs for j in members}), **{k: round(v, 4) for k, v in m.items()},
                         hours=sum(secs) / 3600, hours_todo=sum(todo) / 3600))
    result = dict(grid=spec.name, profile=spec.profile, device=device_name(jobs[0].config), steps=steps,
                  measured=time.strftime("%Y-%m-%d %H:%M"), torch=str(torch.__version__), shapes=rows,
                  hours=sum(r["hours"] for r in rows), hours_todo=sum(r["hours_todo"] for r in rows),
                  runs=len(jobs))
    out = default_grid_dir(spec)
    out.mkdir(parents=True, exist_ok=True)
    (out / "estimate.json").write_text(json.dumps(result, indent=2))
    return result


def format_estimate(e: dict) -> str:
    lines = [f"Estimate for grid {e['grid']}" + (f" ({e['profile']})" if e["profile"] else "")
             + f", measured {e['measured']} on {e['device']} (torch {e['torch']}, {e['steps']} timed steps per shape):",
             "", "| model | data | side | batch | runs (to do) | epochs | s/step | train img/s | eval img/s | device-hours (to do) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in e["shapes"]:
        name = r["model"] + (f" {json.dumps(r['kwargs'])}" if r["kwargs"] else "")
        lines.append(f"| {name} | {r['data']} | {r['side']} | {r['batch']} | {r['runs']} ({r['runs_todo']}) | "
                     f"{'/'.join(map(str, r['epochs']))} | {r['step_s']:.3g} | {r['train_ips']:.0f} | {r['eval_ips']:.0f} | "
                     f"{r['hours']:.3g} ({r['hours_todo']:.3g}) |")
    lines += ["", f"Total: {e['hours']:.3g} device-hours for {e['runs']} runs ({e['hours_todo']:.3g} for those not done), "
              "one run at a time on this device. Several small runs sharing a GPU (--workers, or Ray with "
              "--gpus-per-run 0.1) can finish sooner than this when one run does not fill the device."]
    return "\n".join(lines)


__all__ = ["estimate", "format_estimate", "measure", "DATA_SHAPES"]
