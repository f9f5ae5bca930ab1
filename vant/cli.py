"""``vant``: a thin command line over the library. Each subcommand parses and calls one function."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

def _print_curve(summary: dict) -> None:
    e = summary["eval"]
    print(f"{'sigma':>7} {'acc mean':>9} {'std':>6} {'95% CI':>7}   (n={e['repeats']} repeats, seed {e['seed']})")
    for s, m, sd, ci in zip(e["sigmas"], e["mean"], e["std"], e["ci95"]):
        print(f"{s:7.3g} {m:9.2f} {sd:6.2f} {'' if ci is None else f'±{ci:.2f}':>7}")


def _print_summary(run) -> None:
    s = run.summary()
    print(f"run: {run.path}")
    print(f"{s['model']} on {s['dataset']}, method={s['method']}, sigma_train={s['sigma_train']:g}"
          + (f", alpha={s['alpha']:g}, theta={s['theta']:g}" if s["method"] == "vant" else "")
          + (f", QAT w{s['quant_bits']}a{s['quant_bits']}" if s.get("quant_bits") else "")
          + (f", {'ASAM' if s['sam_adaptive'] else 'SAM'} rho={s['sam_rho']:g}" if s.get("optimizer") == "sam" else ""))
    print(f"clean accuracy {s['clean_accuracy']:.2f} %, at sigma_train {s['acc_at_sigma_train']:.2f} "
          f"± {s['acc_at_sigma_train_std']:.2f} %" + (f", AUC {s['auc']:.2f}" if s["auc"] is not None else ""))
    _print_curve(s)


def cmd_train(args) -> int:
    from .config import build_config
    from .pipeline.runs import execute

    cfg = build_config(args.config, args.overrides + (["data.download=true"] if args.download else []))
    if args.device:
        cfg.device = args.device
    _print_summary(execute(cfg, progress=not args.quiet))
    return 0


def cmd_sweep(args) -> int:
    from .config import build_config, to_dict
    from .pipeline.runs import Run, execute

    run = Run.open(args.run)
    overrides = list(args.overrides)
    if args.sigmas:
        overrides.append(f"eval.sigmas=[{args.sigmas}]")
    if args.repeats is not None:
        overrides.append(f"eval.repeats={args.repeats}")
    if args.seed is not None:
        overrides.append(f"eval.seed={args.seed}")
    if args.loop:
        overrides.append("eval.batched=false")
    stored = run.config
    cfg = build_config(None, overrides, base=to_dict(stored))
    cfg.out_dir = str(run.path.parent)  # the run stays where it is
    if args.device:
        cfg.device = args.device
    for key in ("model", "data", "noise", "train"):
        if getattr(cfg, key) != getattr(stored, key):
            print(f"vant: error: sweep may change only eval.* settings, not {key}.*", file=sys.stderr)
            return 2
    _print_summary(execute(cfg, progress=not args.quiet))
    return 0


def cmd_plot(args) -> int:
    from .plots import accuracy_vs_sigma
    from .pipeline.runs import Run

    curves = []
    for path in args.runs:
        s = Run.open(path).summary()
        curves.append(dict(label=s["run"], sigmas=s["eval"]["sigmas"], mean=s["eval"]["mean"], std=s["eval"]["std"]))
    out = accuracy_vs_sigma(curves, Path(args.output), title=args.title)
    print(out)
    print(out.with_suffix(".csv"))  # the plotted values, written beside the figure
    return 0


def cmd_list(args) -> int:
    if args.what == "models":
        from .models import list_models, model_info
        for name in list_models():
            print(f"{name:12s} {model_info(name).description}")
        print(f"{'tv:<name>':12s} any torchvision classification model, e.g. tv:resnet18, tv:mobilenet_v3_small")
        print(f"{'timm:<name>':12s} any timm model (pip install \"vant[timm]\"), e.g. timm:resnet18, timm:vit_tiny_patch16_224")
        print(f"{'pkg.mod:fn':12s} your factory, called as fn(num_classes=, in_channels=, **model.kwargs) -> nn.Module")
    elif args.what == "presets":
        from .experiments.spec import list_presets
        for name, desc in list_presets().items():
            print(f"{name:8s} {desc}")
    elif args.what == "scenarios":
        from .scenarios.spec import list_scenarios, load_scenario
        for name in list_scenarios():
            print(f"{name:18s} {load_scenario(name).describe()}")
    elif args.what == "datasets":
        from .data import list_datasets
        for name, desc in list_datasets().items():
            print(f"{name:13s} {desc}")
        print(f"{'torchvision:<Class>':13s} a torchvision.datasets class with root= and train= or split=, e.g. torchvision:KMNIST")
        print(f"{'pkg.mod:fn':13s} your factory, called as fn(root=data.root) -> (train, test) Datasets or (images, labels) pairs")
    else:
        from .pipeline.rundir import Run  # reads the run files only: no torch
        from .pipeline.store import CheckpointError

        root = Path(args.out_dir)
        for p in sorted(root.glob("*/config.yaml")) if root.is_dir() else []:
            s = p.parent / "summary.json"
            if s.is_file():
                try:
                    d = Run(p.parent).summary()
                except CheckpointError:
                    print(f"{p.parent.name:50s} (summary.json unreadable)")
                    continue
                print(f"{p.parent.name:50s} clean {d['clean_accuracy']:6.2f}  @sigma_train {d['acc_at_sigma_train']:6.2f}  AUC {d['auc'] if d['auc'] is not None else float('nan'):7.2f}")
            else:
                print(f"{p.parent.name:50s} (unfinished)")
    return 0


def cmd_config_show(args) -> int:
    """The config a ``vant train`` with these arguments would run: every recipe default filled in."""
    import yaml

    from .config import build_config, resolve, to_dict
    from .data import check_dataset_name
    from .models import model_info

    cfg = resolve(build_config(args.config, args.overrides))
    check_dataset_name(cfg.data.name)
    model_info(cfg.model.name)
    class Dumper(yaml.SafeDumper):  # sections as blocks, lists (the sigma grid) on one line
        pass

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    print(yaml.dump(to_dict(cfg), Dumper=Dumper, sort_keys=False), end="")
    return 0


def cmd_completion(args) -> int:
    try:
        import shtab
    except ImportError:
        print('vant: error: shell completion needs shtab: pip install "vant[completion]"', file=sys.stderr)
        return 2
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _run_preset(args, preset: str, extra: list[str] | None = None):
    """Run a bundled grid preset (``vant grid <preset>``) into ``--out-dir`` (default runs/<preset>):
    its runs under <out-dir>/runs, its results table and report beside them."""
    from .experiments.grid import run_grid
    from .experiments.spec import load_spec

    overrides = list(args.overrides) + list(extra or [])
    if args.out_dir:
        overrides.append(f"base.out_dir={args.out_dir}/runs")
    spec = load_spec(preset, args.profile, overrides)
    return run_grid(spec, args.out_dir or f"runs/{preset}", progress=not args.quiet)


def _print_preset(result, tic: float, table: str | None = None) -> int:
    """What every preset command prints at the end: its table, where the report went, its time."""
    if result.failures:
        return _grid_failures(result)
    md = next((p for p in result.report if p.suffix == ".md"), None)
    print()
    print(table if table is not None else md.read_text() if md else "")
    print("report: " + "  ".join(str(p) for p in result.report) + f"   ({time.perf_counter() - tic:.0f} s)")
    return 0


def _grid_failures(result) -> int:
    print(f"vant: {len(result.failures)} of {len(result.rows)} grid points did not finish "
          f"(details in {result.grid_dir / 'errors.log'}); run the same command again to retry them:", file=sys.stderr)
    for r in result.failures:
        print(f"  {r['run']}: {r['status']} {r['error'] or ''}", file=sys.stderr)
    return 1


def cmd_demo(args) -> int:
    from .experiments.report import compare_table

    tic = time.perf_counter()
    result = _run_preset(args, "demo", [f"base.train.seed={args.seed}"] if args.seed is not None else [])
    return _print_preset(result, tic, None if result.failures else compare_table(result.rows)[0])


def cmd_baselines(args) -> int:
    tic = time.perf_counter()
    return _print_preset(_run_preset(args, "baselines"), tic)


def cmd_scenario_compare(args) -> int:
    tic = time.perf_counter()
    extra = [f"scenario={args.scenario}"] if args.scenario else []
    return _print_preset(_run_preset(args, "scenario_compare", extra), tic)


def cmd_grid(args) -> int:
    from .experiments.grid import dry_run, run_grid
    from .experiments.spec import load_spec

    overrides = list(args.overrides)
    if args.out_dir:
        overrides.append(f"base.out_dir={args.out_dir}")
    if args.device:
        overrides.append(f"base.device={args.device}")
    spec = load_spec(args.spec, args.profile, overrides)
    if args.dry_run:
        dry_run(spec)
        return 0
    if args.estimate:
        from .experiments.cost import estimate, format_estimate

        print(format_estimate(estimate(spec, steps=args.estimate_steps, log=print)))
        return 0
    slurm = dict(partition=args.slurm_partition, account=args.slurm_account, gpus=args.slurm_gpus, cpus=args.slurm_cpus,
                 time=args.slurm_time, mem=args.slurm_mem, array_parallelism=args.slurm_array_parallelism,
                 local=args.slurm_local or None)
    result = run_grid(spec, args.dir, executor=args.executor, workers=args.workers, address=args.address,
                      cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, threads=args.threads,
                      progress=not args.quiet, report=not args.no_report, slurm=slurm)
    print(f"table: {result.grid_dir / 'results.csv'}")
    if result.report:
        print("report: " + "  ".join(str(p) for p in result.report))
    if result.failures:
        return _grid_failures(result)
    return 0


def cmd_report(args) -> int:
    from .experiments.report import make_report

    paths = make_report(args.grid_dir)
    md = next((p for p in paths if p.suffix == ".md"), None)
    if md is not None and not args.quiet:
        print(md.read_text())
    print("report: " + "  ".join(str(p) for p in paths))
    return 0


def cmd_collect(args) -> int:
    from .experiments.collect import collect_table

    path, rows, skipped = collect_table(args.source, args.output)
    for why in skipped:
        print(f"skipped {why}", file=sys.stderr)
    runs = len({(r.get("variant"), r["run"]) for r in rows})
    print(f"{path}: {len(rows)} rows ({runs} runs x sigma x repeat), {len(rows[0])} columns")
    from .experiments.collect import summary_path

    if summary_path(path).is_file():
        print(f"{summary_path(path)}: the mean and 95 % interval over seeds of each setting")
    return 0


def cmd_evaluate(args) -> int:
    if (args.scenario is None) == (args.device_model is None):
        print("vant: error: evaluate needs either --scenario or --device-model", file=sys.stderr)
        return 2
    if args.device_model is not None:
        return _evaluate_device(args)
    if args.device_option or args.times or args.images is not None:
        print("vant: error: --times, -D/--device-option and --images go with --device-model", file=sys.stderr)
        return 2
    from .scenarios.evaluate import compare_on_scenario, format_table
    from .scenarios.spec import load_scenario

    scenario = load_scenario(args.scenario)
    print(scenario.describe())
    out = args.out_dir or (None if len(args.runs) == 1 else f"runs/compare-{scenario.name}")
    result = compare_on_scenario(args.runs, scenario, out_dir=out, progress=not args.quiet, repeats=args.repeats,
                                 seed=args.seed, threshold=args.threshold, worst_q=args.worst,
                                 device=args.device or "auto")
    print(format_table(result["rows"]))
    where = result.get("report_dir") or result["rows"][0]["dir"]
    print(f"\nfigure: {where}/scenario.png   rows and summary: " + ", ".join(r["dir"] for r in result["rows"]))
    return 0


def _evaluate_device(args) -> int:
    """``vant evaluate --device-model``: the runs on an aihwkit device model over time after programming."""
    from .scenarios.analog import DEFAULT_TIMES, compare_on_device, device_model, parse_times

    dm = device_model(args.device_model, args.device_option or [])
    times = parse_times(args.times) if args.times else list(DEFAULT_TIMES)
    if args.images is not None and args.images < 1:
        raise ValueError(f"--images must be >= 1, got {args.images}")
    for opt in ("threshold", "device"):
        if getattr(args, opt) is not None:
            print(f"vant: error: --{opt} does not apply to --device-model (it runs on the CPU)", file=sys.stderr)
            return 2
    print(dm.describe())
    out = args.out_dir or (None if len(args.runs) == 1 else f"runs/compare-{dm.name}-{dm.key()}")
    result = compare_on_device(args.runs, dm, out_dir=out, progress=not args.quiet, times=times,
                               repeats=args.repeats, seed=args.seed, images=args.images)
    for s in result["rows"]:
        p = s["per_time"]
        print(f"\n{s['label']} ({s['run']}): vant sigma=0 accuracy {s['digital_accuracy']:.2f} % on {s['images']} images")
        print(f"{'time [s]':>10} {'':>6} {'acc mean':>9} {'std':>6}   (n={s['repeats']} chips, seeds "
              f"{s['seed']}..{s['seed'] + s['repeats'] - 1})")
        for t, lab, m, sd in zip(p["t"], p["label"], p["mean"], p["std"]):
            print(f"{t:10.4g} {lab:>6} {m:9.2f} {sd:6.2f}")
    where = result.get("report_dir") or result["rows"][0]["dir"]
    print(f"\nfigure: {where}/accuracy_vs_time.png   rows: " + ", ".join(r["dir"] for r in result["rows"]))
    return 0


def cmd_calibrate(args) -> int:
    """``vant calibrate``: the σ an aihwkit device model puts on each layer of a run, as a vant scenario."""
    import shutil

    from .scenarios.analog import DEFAULT_TIMES, device_model, parse_times
    from .scenarios.calibrate import calibrate, format_calibration, format_prediction, predict

    dm = device_model(args.device_model, args.device_option or [])
    times = parse_times(args.times) if args.times else list(DEFAULT_TIMES)
    for opt in ("images", "eval_images"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            raise ValueError(f"--{opt.replace('_', '-')} must be >= 1, got {getattr(args, opt)}")
    print(dm.describe())
    cal = calibrate(args.run, dm, times, repeats=args.repeats, seed=args.seed,
                    images=args.images or 500, progress=not args.quiet)
    print(f"\nsigma of (analog - exact) per layer output [activation units], mean over {cal['repeats']} chips, "
          f"{cal['images']} training images:")
    print(format_calibration(cal))
    print(f"\n{cal['scenario']}\nscenario: {cal['scenario_file']}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cal["scenario_file"], args.output)
        print(f"copied to {args.output}")
    fit = cal["vant_fit"]
    print("VANT fitted to it: vant train <the run's settings> " + " ".join(f"{k}={v}" for k, v in fit.items()))
    if args.predict:
        print(f"\nvant's noise at the calibrated sigma vs aihwkit, same chips:")
        print(format_prediction(predict(args.run, dm, cal, images=args.eval_images, progress=not args.quiet)))
    return 0


def cmd_sensitivity(args) -> int:
    from .scenarios.sensitivity import format_table, log_grid, sensitivity

    sigmas = log_grid(args.min, args.max, args.per_decade)
    summary = sensitivity(args.run, sigmas, repeats=args.repeats, seed=args.seed, sites=args.sites,
                          device=args.device or "auto", progress=not args.quiet)
    print(format_table(summary))
    print(f"\nfigure: {summary['dir']}/sensitivity.png")
    return 0


def _preset_parser(sub, name: str, func, preset: str, help: str, example: str):
    """A subcommand that runs a bundled grid preset: the same as ``vant grid <preset>``."""
    a = sub.add_parser(name, help=f"{help} (= vant grid {preset})")
    a.add_argument("--out-dir", help=f"where runs, results table and report go (default runs/{preset})")
    a.add_argument("-p", "--profile", help="profile of the preset: full (default) or smoke (seconds, checks the pipeline)")
    a.add_argument("-q", "--quiet", action="store_true")
    a.add_argument("overrides", nargs="*", help=f"grid spec overrides, e.g. {example}")
    a.set_defaults(func=func)
    return a


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="vant", description="Harden neural networks against noisy analog hardware.")
    p.add_argument("--version", action="version", version=f"vant {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (clean, NT or VANT), then evaluate it over the sigma grid")
    t.add_argument("-c", "--config", help="YAML config file (see vant/configs/)")
    t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.method=nt train.sigma=0.5")
    t.add_argument("--download", action="store_true", help="download the data set if torchvision can")
    t.add_argument("--device", help="cpu, cuda, cuda:1 (default: auto)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sweep", help="evaluate a trained run over another sigma grid or more repeats")
    s.add_argument("run", help="run directory")
    s.add_argument("--sigmas", help="comma-separated sigma grid")
    s.add_argument("--repeats", type=int, help="noisy passes per sigma")
    s.add_argument("--seed", type=int, help="base seed of the evaluation noise")
    s.add_argument("--loop", action="store_true", help="one sigma per forward pass (the authors' protocol)")
    s.add_argument("--device")
    s.add_argument("-q", "--quiet", action="store_true")
    s.add_argument("overrides", nargs="*", help="eval.* overrides")
    s.set_defaults(func=cmd_sweep)

    pl = sub.add_parser("plot", help="overlay the accuracy-vs-sigma curves of runs")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("-o", "--output", default="accuracy_vs_sigma.png")
    pl.add_argument("--title", default="")
    pl.set_defaults(func=cmd_plot)

    g = sub.add_parser("grid", help="run a grid of runs (a preset such as fig2, or a YAML spec), resumably")
    g.add_argument("spec", help="preset name (`vant list presets`) or path of a grid YAML")
    g.add_argument("overrides", nargs="*", help="spec overrides, e.g. base.train.epochs=5 grid.train.seed=[0,1]")
    g.add_argument("-p", "--profile", help="profile of the spec: full (the paper's settings, default) or smoke")
    g.add_argument("--dir", help="grid directory (default <out_dir>/grids/<name>-<profile>)")
    g.add_argument("--out-dir", help="where the runs go (base.out_dir)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (base.device)")
    g.add_argument("--executor", default="local", choices=["local", "ray", "slurm"],
                   help="local processes, a Ray cluster, or SLURM jobs (through submitit)")
    g.add_argument("--workers", type=int, default=1, help="local: runs at once, each in its own process")
    g.add_argument("--threads", type=int, help="local --workers: CPU threads per run (default cores / workers)")
    g.add_argument("--address", help="ray: cluster address for ray.init (default: start a local instance)")
    g.add_argument("--cpus-per-run", type=float, default=1.0, help="ray: CPUs each run declares")
    g.add_argument("--gpus-per-run", type=float, help="ray: GPUs each run declares (0.1 packs 10 per GPU; "
                   "default 1 if the cluster has GPUs, else 0)")
    sl = g.add_argument_group("--executor slurm (over the spec's slurm: section; `pip install \"vant[slurm]\"`)")
    sl.add_argument("--slurm-partition", metavar="NAME", help="partition the jobs go to (default: the cluster's)")
    sl.add_argument("--slurm-account", metavar="NAME", help="account the jobs are billed to")
    sl.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per run (default 1, or 0 when the runs have device=cpu)")
    sl.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per run (default: the runs' cpu_threads)")
    sl.add_argument("--slurm-time", metavar="TIME", help="time limit per job: minutes or H:MM:SS (default 4:00:00); a run it "
                    "cuts is requeued and resumes from its checkpoint")
    sl.add_argument("--slurm-mem", metavar="MEM", help="memory per run, e.g. 16G (default: the partition's)")
    sl.add_argument("--slurm-array-parallelism", type=int, metavar="N", help="jobs running at once (default: all)")
    sl.add_argument("--slurm-local", action="store_true", help="submitit's local executor: the same path on a "
                    "machine without SLURM")
    g.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
    g.add_argument("--estimate", action="store_true", help="time a few training steps per model/data shape on "
                   "this device and estimate the grid's device-hours; run nothing")
    g.add_argument("--estimate-steps", type=int, help="timed training steps per shape (default 20 on a GPU, 3 on the CPU)")
    g.add_argument("--no-report", action="store_true", help="do not draw the report at the end")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    g.set_defaults(func=cmd_grid)

    rp = sub.add_parser("report", help="draw a grid's figure and Markdown table from its results.csv")
    rp.add_argument("grid_dir", help="grid directory (holds grid.yaml and results.csv)")
    rp.add_argument("-q", "--quiet", action="store_true", help="do not print the table")
    rp.set_defaults(func=cmd_report)

    co = sub.add_parser("collect", help="one long table (CSV or parquet) of a grid's or a directory's runs: "
                        "a row per run x sigma x repeat, with the config, the seed and the summary metrics")
    co.add_argument("source", help="grid directory, directory of runs, or one run directory")
    co.add_argument("-o", "--output", help="table.csv or table.parquet (default <source>/table.csv)")
    co.set_defaults(func=cmd_collect)

    cf = sub.add_parser("config", help="show the resolved run config (recipe defaults filled in) as YAML")
    cf_sub = cf.add_subparsers(dest="config_command", required=True)
    cs = cf_sub.add_parser("show", help="print the config `vant train` would run with these arguments")
    cs.add_argument("-c", "--config", help="YAML config file (see vant/configs/)")
    cs.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.sigma=0.7")
    cs.set_defaults(func=cmd_config_show)

    ls = sub.add_parser("list", help="list models, data sets, grid presets, runs or bundled scenarios")
    ls.add_argument("what", choices=["models", "datasets", "presets", "runs", "scenarios"])
    ls.add_argument("--out-dir", default="runs")
    ls.set_defaults(func=cmd_list)

    d = _preset_parser(sub, "demo", cmd_demo, "demo", "clean vs NT vs VANT on the bundled digits, on the CPU, in minutes",
                       "base.train.epochs=10")
    d.add_argument("--seed", type=int, help="training seed of every run (base.train.seed)")

    _preset_parser(sub, "baselines", cmd_baselines, "baselines",
                   "clean vs NT vs 4-bit QAT vs SAM (Fig. 3), best SAM rho and QAT scale by AUC",
                   "variants.SAM.grid.train.sam_rho=[0.5] base.train.epochs=10")

    ev = sub.add_parser("evaluate", help="evaluate runs on a noise scenario (fleet of devices, drift over time), "
                        "or on an aihwkit device model over time after programming")
    ev.add_argument("runs", nargs="+", help="run directories (several: one table and figure)")
    ev.add_argument("--scenario", help="scenario YAML file, or a bundled name (vant list scenarios)")
    ev.add_argument("--device-model", choices=["pcm"], help="evaluate on aihwkit's PCM inference model instead "
                    '(vant\'s noise off; needs pip install "vant[aihwkit]")')
    ev.add_argument("--times", help="--device-model: seconds after programming, comma-separated "
                    "(default 1,3600,86400,2592000,31536000: 1 s to 1 year)")
    ev.add_argument("-D", "--device-option", action="append", metavar="KEY=VALUE",
                    help="--device-model setting, e.g. -D drift_compensation=false -D out_noise=0.04 "
                    "(fields, units and defaults: vant/scenarios/analog.py DeviceModel)")
    ev.add_argument("--images", type=int, help="--device-model: evaluate this many test images (a fixed seeded "
                    "subset; default all)")
    ev.add_argument("--repeats", type=int, default=3, help="noisy passes over the test set per (device, time) point")
    ev.add_argument("--seed", type=int, help="base seed of the evaluation noise (default: the run's eval.seed)")
    ev.add_argument("--threshold", type=float, help="accuracy [%%]: report the share of device-time below it")
    ev.add_argument("--worst", type=float, default=0.05, help="share of device-time for the worst-case accuracy")
    ev.add_argument("-o", "--out-dir", help="where the comparison table and figure go (default for several runs: "
                    "runs/compare-<scenario>, or runs/compare-pcm-<key of the device settings>; one run: its "
                    "scenarios/ or analog/ folder)")
    ev.add_argument("--device")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    ca = sub.add_parser("calibrate", help="measure the noise an aihwkit device model puts on each layer of a run "
                        "and write it as a vant scenario (sigma per chip and time)")
    ca.add_argument("run", help="run directory")
    ca.add_argument("--device-model", default="pcm", choices=["pcm"], help="aihwkit device model (default pcm)")
    ca.add_argument("--times", help="seconds after programming, comma-separated (default 1,3600,86400,2592000,31536000)")
    ca.add_argument("-D", "--device-option", action="append", metavar="KEY=VALUE",
                    help="device-model setting, e.g. -D drift_compensation=false (see vant evaluate --help)")
    ca.add_argument("--repeats", type=int, default=3, help="programmed chips")
    ca.add_argument("--seed", type=int, help="seed of chip 0 (default: the run's eval.seed)")
    ca.add_argument("--images", type=int, help="training images pushed through each layer (default 500)")
    ca.add_argument("-o", "--output", help="also copy the scenario YAML here")
    ca.add_argument("--predict", action="store_true", help="also compare vant's accuracy at the calibrated sigma "
                    "with the aihwkit accuracy of the same chips (runs vant evaluate --device-model if needed)")
    ca.add_argument("--eval-images", type=int, help="--predict: test images (a fixed seeded subset; default all)")
    ca.add_argument("-q", "--quiet", action="store_true")
    ca.set_defaults(func=cmd_calibrate)

    se = sub.add_parser("sensitivity", help="walking noise: noise at one site at a time, sigma_mid per site")
    se.add_argument("run", help="run directory")
    se.add_argument("--min", type=float, default=0.01, help="smallest sigma of the log grid")
    se.add_argument("--max", type=float, default=100.0, help="largest sigma of the log grid")
    se.add_argument("--per-decade", type=int, default=4, help="grid points per decade")
    se.add_argument("--repeats", type=int, default=2, help="noisy passes per (site, sigma)")
    se.add_argument("--seed", type=int, help="base seed of the evaluation noise (default: the run's eval.seed)")
    se.add_argument("--sites", nargs="+", help="fnmatch patterns of the sites to walk (default: all)")
    se.add_argument("--device")
    se.add_argument("-q", "--quiet", action="store_true")
    se.set_defaults(func=cmd_sensitivity)

    sc = _preset_parser(sub, "scenario-compare", cmd_scenario_compare, "scenario_compare",
                        "train NT, paper VANT and scenario-fitted VANT; compare them on a noise scenario",
                        "base.train.epochs=10")
    sc.add_argument("--scenario", help="scenario YAML file or bundled name (default drifting_fleet)")
    co = sub.add_parser("completion", help="print a shell completion script (needs shtab: vant[completion])")
    co.add_argument("shell", choices=["bash", "zsh"])
    co.set_defaults(func=cmd_completion)
    return p


#: The errors that end a command with one line and exit 2, by the module that defines them.
_KNOWN_ERRORS = {"vant.baselines.qat": "MissingDependency", "vant.config": "ConfigError", "vant.data": "DataNotFound",
                 "vant.experiments.grid": "GridFailed", "vant.pipeline.store": ("CheckpointError", "RunBusy"),
                 "vant.pipeline.train": "TrainingDiverged"}


def _known_errors() -> tuple[type[BaseException], ...]:
    # OSError: a file system that refuses a write (read-only, full, permissions) is the user's to fix.
    # A class can only have been raised if its module is loaded: an error of a light command (a bad
    # `vant config show` override) is reported without importing torch.
    known: list[type[BaseException]] = [OSError, ValueError, KeyError]
    for module, names in _KNOWN_ERRORS.items():
        if module in sys.modules:
            known += [getattr(sys.modules[module], n) for n in ((names,) if isinstance(names, str) else names)]
    return tuple(known)


def main(argv: list[str] | None = None) -> int:
    from .core.threads import set_openmp_spin

    set_openmp_spin()  # before torch loads (nothing above imported it): see vant.set_openmp_spin
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides after an option (`vant train a=1 -q b=2`) are overrides too
        if not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("vant: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (`vant completion bash | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except _known_errors() as e:
        if os.environ.get("VANT_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"vant: error: {msg}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
