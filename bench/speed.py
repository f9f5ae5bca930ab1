"""Throughput of clean, NT and VANT training, noisy inference and the full sigma sweep.

    python bench/speed.py                        # this machine's default device; see --help
    python bench/speed.py --device cpu --models lenet5,resnet18 --rounds 7
    python bench/speed.py --device cuda          # LeNet-5, ResNet-18 and ResNet-50, eager and compiled
    python bench/speed.py --quick                # a smoke run: a few steps of everything
    python bench/speed.py --device cpu --models lenet5 --peers lightning,aihwkit   # IBM's toolkits beside vant

With ``--peers``, the same rounds also time the peers of bench/peers.py on the same model, batch
and machine: aihwkit-lightning's hardware-aware training and aihwkit's pure-torch inference tile
(training and inference), so one JSON holds vant's rows and theirs (installing them: bench/peers.py).

Models and shapes are the paper's: LeNet-5 and ResNet-18 on CIFAR-10 (3x32x32, 10 classes) and
ResNet-50 on Tiny ImageNet (3x64x64, 200 classes), batch 128, every paper site noisy. The data are
random uint8 images held on the device and go through the training loop's own batching (crop,
flip, normalise on the device), sigma sampler and step (vant.pipeline.train.train_step). NT is sigma = 1.0
at every image, VANT draws sigma = 0.45 + 0.4|z| per image (alpha*sigma_train + theta|z|).

Variants of one model are timed in alternating rounds inside one process (clean, NT, VANT, clean,
NT, VANT, ...) and every figure is a median over rounds, so load from other work on a shared
machine slows all variants alike; each round's time is kept in the JSON. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # what `import vant` sets, but torch is imported first here

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from vant import create_model, inject_noise_, noise_sites, set_sigma_  # noqa: E402
from vant.config import PAPER_SIGMAS  # noqa: E402
from vant.data import DeviceBatches  # noqa: E402
from vant.pipeline.evaluate import sweep  # noqa: E402
from vant.core.compile import compile_noisy  # noqa: E402
from vant.core.noise import additive, cpu_noise_threads, normal_, set_cpu_noise_threads  # noqa: E402
from vant.core.samplers import make_sampler  # noqa: E402
from vant.pipeline.train import train_step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (bench/peers.py: imports its toolkits only when asked)

#: name -> (image side, classes): the paper's pairings (CIFAR-10, Tiny ImageNet)
SHAPES = {"lenet5": (32, 10), "resnet18": (32, 10), "resnet50": (64, 200)}
SIGMA, ALPHA, THETA = 1.0, 0.45, 0.4  # theta = 0.4 * sigma_train, the paper's rule (Fig. 6)
METHODS = ("clean", "nt", "vant")
#: The paper's Table 1 protocol on CIFAR-10 (spec 8.1 and the compute budget): 11 VANT trainings and
#: the 14 NT trainings of the upper bound, 400 epochs of 50,000 images, a test pass of 10,000 images
#: at sigma_train after each epoch, then a 14-sigma x 3-repeat sweep of each trained model.
TABLE1 = dict(vant_runs=11, nt_runs=14, epochs=400, train_images=50_000, test_images=10_000, repeats=3)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic(n: int, side: int, classes: int, batch: int, device: torch.device, train: bool, seed: int) -> DeviceBatches:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return DeviceBatches(x, y, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), batch, device, train=train, augment=train,
                         flip=train, seed=seed, channels_last=device.type == "cuda")


def build(name: str, noisy: bool, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    side, classes = SHAPES[name]
    model = create_model(name, num_classes=classes)
    if noisy:
        inject_noise_(model)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


class Network:
    """A model, its optimizer and its forward (eager, or compiled by vant.compile_noisy)."""

    def __init__(self, name: str, noisy: bool, mode: str, device: torch.device):
        self.model = build(name, noisy, device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3,
                                          fused=True if device.type == "cuda" else None)
        self.forward = compile_noisy(self.model, device) if mode == "compiled" else self.model


class PeerNetwork:
    """A peer's hardware-aware training (bench/peers.py) of the same plain model, same init."""

    def __init__(self, name: str, peer: str, device: torch.device):
        plain = build(name, False, device)
        self.model, self.optimizer = peers.training_peer(peer, plain)
        self.forward = self.model


class Trainer:
    """One training variant: a network and a sigma sampler (None: clean). NT and VANT differ only
    in their sampler, so they share one noisy network (and its compiled graph)."""

    def __init__(self, net: Network, method: str, device: torch.device, batches: DeviceBatches):
        self.model, self.optimizer, self.forward = net.model, net.optimizer, net.forward
        self.device, self.batches, self.epoch = device, batches, 0
        self.sampler = make_sampler(method, SIGMA, theta=THETA, alpha=ALPHA, seed=0)
        self.autocast = device.type == "cuda"

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` training steps, as in vant.pipeline.train.fit (sigma drawn per epoch, sliced per batch)."""
        self.model.train()
        sync(self.device)
        tic = time.perf_counter()
        done = 0
        while done < steps:
            if self.sampler is not None:
                sig_epoch = self.sampler(len(self.batches.x), self.epoch).to(self.device, non_blocking=True)
            seen = 0
            for x, y in self.batches.epoch(self.epoch):
                if self.sampler is not None:
                    set_sigma_(self.model, sig_epoch[seen:seen + len(x)])
                train_step(self.forward, self.optimizer, x, y, self.autocast)
                seen += len(x)
                done += 1
                if done == steps:
                    break
            self.epoch += 1
        sync(self.device)
        return time.perf_counter() - tic


class Timer:
    """Alternating rounds over variants; the first call of each (compilation, cuDNN autotuning) is
    timed apart as ``first_call_s``."""

    def __init__(self, budget: "Budget"):
        self.budget = budget
        self.results: dict[str, dict] = {}

    def measure(self, variants: dict, work: int, rounds: int, warmup: bool = True) -> dict[str, dict]:
        """``variants`` maps a label to a function doing one round; ``work`` = images per round."""
        out = {k: {"rounds_s": []} for k in variants}
        for label, fn in variants.items():
            if warmup:
                tic = time.perf_counter()
                fn()  # compilation, autotuning, allocator
                out[label]["first_call_s"] = round(time.perf_counter() - tic, 3)
        for _ in range(rounds):
            if self.budget.over():
                break
            for label, fn in variants.items():
                tic = time.perf_counter()
                fn()
                out[label]["rounds_s"].append(time.perf_counter() - tic)
        for label, r in out.items():
            if r["rounds_s"]:
                med = statistics.median(r["rounds_s"])
                r["median_s"] = med
                r["images_per_s"] = round(work / med, 2)
            r["rounds_s"] = [round(t, 5) for t in r["rounds_s"]]
        return out


class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.perf_counter(), seconds
        self.skipped: list[str] = []

    def over(self) -> bool:
        return time.perf_counter() - self.start > self.seconds

    def allow(self, what: str) -> bool:
        if self.over():
            self.skipped.append(what)
            print(f"  (skipped {what}: over the time budget)", flush=True)
            return False
        return True


def paired_ratio(num: dict, den: dict) -> float | None:
    """Median over rounds of den_time / num_time (throughput of num relative to den), round by round."""
    a, b = num.get("rounds_s", []), den.get("rounds_s", [])
    pairs = [d / n for n, d in zip(a, b) if n > 0]
    return round(statistics.median(pairs), 4) if pairs else None


def site_shapes(name: str, batch: int) -> list[tuple[int, ...]]:
    """The shape of every noise draw of one forward pass (41 for ResNet-18: shared ReLUs draw twice)."""
    side, _ = SHAPES[name]
    model = build(name, True, torch.device("cpu"))
    shapes = []
    for site in noise_sites(model).values():
        site.register_forward_hook(lambda m, i, o: shapes.append((batch,) + tuple(o.shape[1:])))
    set_sigma_(model, 0.1)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    return shapes


def noise_cost(name: str, batch: int, device: torch.device, rounds: int) -> dict:
    """What one step's eager noise costs on its own: the whole op (draw + add), vant's draw into fresh
    buffers (on the CPU split over threads for large sites), and ATen's single-stream generator alone
    (one warm buffer), each the median of ``rounds``."""
    shapes = site_shapes(name, batch)
    xs = [torch.zeros(sh, device=device) for sh in shapes]
    sig = torch.full((batch,), SIGMA, device=device)
    total = sum(x.numel() for x in xs)
    warm = torch.empty(total, device=device)
    parts = {"noise_op_s": lambda: [additive(x, sig) for x in xs],
             "draw_fresh_s": lambda: [normal_(torch.empty_like(x)) for x in xs],
             "draw_warm_s": lambda: warm.normal_()}
    out = {"draws_per_forward": len(shapes), "values_per_image": total // batch}
    for key, fn in parts.items():
        fn()
        times = []
        for _ in range(rounds):
            sync(device)
            tic = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - tic)
        out[key] = statistics.median(times)
    out["randn_values_per_s"] = round(total / out["draw_warm_s"])
    return out


def bench_model(name: str, args, device: torch.device, budget: Budget) -> dict:
    side, classes = SHAPES[name]
    cuda = device.type == "cuda"
    res: dict = {"image_side": side, "classes": classes, "batch": args.batch}
    print(f"\n== {name}: 3x{side}x{side}, {classes} classes, batch {args.batch}, {device}", flush=True)
    timer = Timer(budget)
    steps = args.steps
    train_batches = synthetic(args.batch * steps, side, classes, args.batch, device, True, seed=1)

    # ---- training
    res["train"] = {}
    for mode in modes(args, budget, f"{name} train"):
        clean, noisy = Network(name, False, mode, device), Network(name, True, mode, device)
        trainers = {m: Trainer(clean if m == "clean" else noisy, m, device, train_batches) for m in METHODS}
        if mode == "eager":  # the peers run eagerly, as their toolkits do on the CPU
            for peer in args.peers:
                trainers[f"{peer}-hwa"] = Trainer(PeerNetwork(name, peer, device), "clean", device, train_batches)
        got = timer.measure({m: (lambda t=t: t.run(steps)) for m, t in trainers.items()},
                            work=steps * args.batch, rounds=args.rounds)
        for m, r in got.items():
            r["vs_clean"] = paired_ratio(r, got["clean"])
            res["train"][f"{m}/{mode}"] = r
        del trainers, clean, noisy
    t = res["train"]
    if "vant/compiled" in t and "vant/eager" in t and t["vant/compiled"].get("median_s") and t["vant/eager"].get("median_s"):
        res["train_vant_compiled_vs_eager"] = round(t["vant/eager"]["median_s"] / t["vant/compiled"]["median_s"], 4)

    # ---- what bounds the eager noise: drawing the normals (one CPU thread, MT19937) and one pass
    res["noise"] = noise_cost(name, args.batch, device, rounds=5)
    clean = t.get("clean/eager", {}).get("median_s")
    if clean:
        step = clean / steps
        n = res["noise"]
        n["clean_step_s"] = step
        # the ratio if a step cost a clean step plus the noise op timed alone (its backward is free)
        n["vant_vs_clean_expected_eager"] = round(step / (step + n["noise_op_s"]), 4)

    # ---- inference and the sigma sweep
    if not args.skip_eval.get(name):
        k = len(PAPER_SIGMAS)
        per = best_per(args.sweep_images, args.sweep_forward, k)
        infer_batch = per * k  # what one sweep forward carries, so the sweep reuses the compiled graph
        res["infer_batch"] = infer_batch
        test = synthetic(args.sweep_images, side, classes, per * k, device, False, seed=2)
        xb = test.normalise(test.x[:per].repeat(k, 1, 1, 1))
        res["infer"] = {}
        for mode in modes(args, budget, f"{name} inference"):
            variants = {}
            for noisy in (False, True):
                model = build(name, noisy, device).eval()
                if noisy:  # one sigma per image, as the sweep sets it: the sweep reuses this compiled graph
                    set_sigma_(model, torch.full((infer_batch,), SIGMA, device=device))
                fwd = compile_noisy(model, device) if mode == "compiled" else model
                variants["noisy" if noisy else "clean"] = infer_fn(fwd, xb, device, args.infer_steps)
            # model and fwd are now the noisy ones, which the sweep below uses
            if mode == "eager":
                for peer in args.peers:
                    for label, kw in ((f"{peer}", {}),) + (((f"{peer}-vant-conv", {"vant_conv": True}),)
                                                           if peer == "aihwkit" else ()):
                        torch.manual_seed(0)
                        plain = create_model(name, num_classes=classes).to(device)
                        variants[label] = infer_fn(peers.inference_peer(peer, plain, **kw), xb, device, args.infer_steps)
            got = timer.measure(variants, work=args.infer_steps * infer_batch, rounds=args.rounds)
            for v in got:
                if v != "clean":
                    got[v]["vs_clean"] = paired_ratio(got[v], got["clean"])
            for v, r in got.items():
                res["infer"][f"{v}/{mode}"] = r
            if not budget.allow(f"{name} sweep {mode}"):
                continue
            run = lambda: sweep(model, test, PAPER_SIGMAS, args.repeats, seed=0, batched=True,  # noqa: E731
                                autocast=device.type == "cuda", forward=fwd)
            got = timer.measure({"sweep": lambda: (run(), sync(device))}, work=k * args.repeats * args.sweep_images,
                                rounds=args.sweep_rounds, warmup=cuda or mode == "compiled")["sweep"]
            got["images"] = args.sweep_images
            got["sigmas"], got["repeats"] = k, args.repeats
            clean_rate = res["infer"].get(f"clean/{mode}", {}).get("images_per_s")
            if got.get("median_s"):
                got["seconds_per_10k_images"] = round(got["median_s"] * 10_000 / args.sweep_images, 4)
                if clean_rate:  # the same forward passes without noise
                    got["clean_equivalent_s"] = round(k * args.repeats * args.sweep_images / clean_rate, 4)
                    got["vs_clean"] = round(got["clean_equivalent_s"] / got["median_s"], 4)
            res[f"sweep/{mode}"] = got
    return res


def modes(args, budget: Budget, what: str):
    """The modes (eager, compiled) to run ``what`` in while the budget lasts; compiled ones start
    from empty dynamo caches (one process compiles many models)."""
    for mode in args.modes:
        if budget.allow(f"{what} {mode}"):
            if mode == "compiled":
                torch._dynamo.reset()
            yield mode


def best_per(n: int, forward_max: int, k: int) -> int:
    """Test images per sweep forward: the largest divisor of n whose k copies fit in forward_max
    (every forward then has one shape, so a compiled model compiles once)."""
    cap = max(1, forward_max // k)
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def infer_fn(fwd, x, device, steps):
    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for _ in range(steps):
                fwd(x)
        sync(device)
    return run


def table1_cost(r18: dict, mode: str) -> dict | None:
    """Hours the paper's Table 1 protocol takes at the rates measured for ResNet-18 in ``mode``."""
    try:
        nt = r18["train"][f"nt/{mode}"]["images_per_s"]
        vant = r18["train"][f"vant/{mode}"]["images_per_s"]
        infer = r18["infer"][f"noisy/{mode}"]["images_per_s"]
        sweep_s = r18[f"sweep/{mode}"]["seconds_per_10k_images"] * TABLE1["test_images"] / 10_000
    except KeyError:
        return None
    p = TABLE1
    images = p["epochs"] * p["train_images"]
    train_h = (p["nt_runs"] * images / nt + p["vant_runs"] * images / vant) / 3600
    runs = p["nt_runs"] + p["vant_runs"]
    test_h = runs * p["epochs"] * p["test_images"] / infer / 3600
    sweep_h = runs * sweep_s / 3600
    return dict(train_h=round(train_h, 2), per_epoch_test_h=round(test_h, 2), sweeps_h=round(sweep_h, 4),
                total_h=round(train_h + test_h + sweep_h, 2), protocol=TABLE1)


def report(out: dict, device: torch.device) -> None:
    unit = "GPU" if device.type == "cuda" else "CPU"
    print(f"\n{'':34s}{'images/s':>12s}{'vs clean':>10s}{'first call s':>14s}")
    for name, r in out["models"].items():
        print(f"{name}")
        for sect in ("train", "infer"):
            for label, v in r.get(sect, {}).items():
                ips = v.get("images_per_s")
                print(f"  {sect:6s}{label:26s}{ips if ips is not None else float('nan'):12.1f}"
                      f"{v.get('vs_clean') or float('nan'):10.3f}{v.get('first_call_s', float('nan')):14.1f}")
        if "train_vant_compiled_vs_eager" in r:
            print(f"  VANT training, compiled vs eager: {r['train_vant_compiled_vs_eager']:.2f}x")
        n = r.get("noise", {})
        if "vant_vs_clean_expected_eager" in n:
            print(f"  eager noise per step ({n['draws_per_forward']} draws, {n['values_per_image']:,} values/image): "
                  f"{n['noise_op_s'] * 1e3:.1f} ms, of which drawing {n['draw_fresh_s'] * 1e3:.1f} ms into fresh buffers "
                  f"(one ATen stream into a warm buffer: {n['draw_warm_s'] * 1e3:.1f} ms, "
                  f"{n['randn_values_per_s'] / 1e6:.0f} M values/s); "
                  f"clean step {n['clean_step_s'] * 1e3:.1f} ms -> VANT/clean ~ {n['vant_vs_clean_expected_eager']:.3f}")
        for mode in ("eager", "compiled"):
            s = r.get(f"sweep/{mode}")
            if s and s.get("median_s"):
                extra = f", clean-equivalent {s['clean_equivalent_s']:.2f} s (x{s['vs_clean']:.3f})" if "vs_clean" in s else ""
                print(f"  sweep {mode}: {s['sigmas']} sigmas x {s['repeats']} repeats over {s['images']} images: "
                      f"{s['median_s']:.2f} s ({s['seconds_per_10k_images']:.2f} s per 10k images){extra}")
    for mode, c in out.get("table1", {}).items():
        if c:
            print(f"Table 1 protocol (25 ResNet-18 trainings x 400 epochs + tests + sweeps) at the {mode} rates: "
                  f"{c['total_h']:.1f} {unit}-hours (training {c['train_h']:.1f}, per-epoch tests {c['per_epoch_test_h']:.1f})")
    if out["skipped"]:
        print("skipped (time budget):", ", ".join(out["skipped"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--models", default=None, help="comma list of lenet5,resnet18,resnet50 (default: cpu lenet5,resnet18; cuda all)")
    p.add_argument("--modes", default=None, help="eager,compiled (default: cpu eager; cuda both)")
    p.add_argument("--batch", type=int, default=128, help="training batch (paper: 128)")
    p.add_argument("--steps", type=int, default=None, help="training steps per round (default cpu 2, cuda 30)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per figure (default cpu 5, cuda 7)")
    p.add_argument("--infer-steps", type=int, default=None, help="inference forwards per round")
    p.add_argument("--sweep-images", type=int, default=None, help="test images in the sweep (cuda default 10000)")
    p.add_argument("--sweep-forward", type=int, default=None, help="max images per sweep forward (cuda 8192, cpu 1000)")
    p.add_argument("--sweep-rounds", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3, help="noisy passes per sigma in the sweep (paper protocol: 3)")
    p.add_argument("--no-eval", default="", help="comma list of models whose inference/sweep is skipped")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--noise-threads", type=int, default=None,
                   help="CPU threads sharing the chunks of one site's draw (default: the torch threads; 1: the same values, one thread)")
    p.add_argument("--budget", type=float, default=float("inf"), help="seconds after which remaining parts are skipped")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of a few steps, small sweep")
    p.add_argument("--peers", default="", help="comma list of lightning,aihwkit: time IBM's toolkits in the same "
                   "rounds (eager; installing them: bench/peers.py)")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/speed-<device>.json)")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    set_cpu_noise_threads(args.noise_threads)
    if cuda:
        torch.backends.cudnn.benchmark = True
    # one process compiles many variants: give dynamo room (each model resets its caches anyway)
    for key in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(torch._dynamo.config, key):
            setattr(torch._dynamo.config, key, max(getattr(torch._dynamo.config, key), 64))
    q = args.quick
    args.models = (args.models or ("lenet5,resnet18,resnet50" if cuda else "lenet5,resnet18")).split(",")
    args.modes = (args.modes or ("eager,compiled" if cuda else "eager")).split(",")
    args.steps = args.steps or (2 if q else (30 if cuda else 2))
    args.rounds = args.rounds or (2 if q else (7 if cuda else 5))
    args.infer_steps = args.infer_steps or (1 if (q or not cuda) else 10)
    args.sweep_images = args.sweep_images or (100 if q else (10_000 if cuda else 140))
    args.sweep_forward = args.sweep_forward or (8192 if cuda else 1000)
    args.sweep_rounds = args.sweep_rounds or (1 if (q or not cuda) else 3)
    args.skip_eval = {m: True for m in args.no_eval.split(",") if m}
    args.peers = [x for x in args.peers.split(",") if x]
    peers.check(args.peers)
    for m in args.models:
        if m not in SHAPES:
            p.error(f"unknown model {m!r}; choose from {sorted(SHAPES)}")
    for m in args.modes:
        if m not in ("eager", "compiled"):
            p.error(f"unknown mode {m!r}; choose eager or compiled")
    if cuda and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")

    budget = Budget(args.budget)
    env = dict(torch=torch.__version__, python=platform.python_version(), device=str(device),
               device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
               cpu_threads=torch.get_num_threads(), cpu_noise_threads=cpu_noise_threads(), cpu_count=os.cpu_count(),
               gomp_spincount=os.environ.get("GOMP_SPINCOUNT"),
               load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None, peers=peers.versions(args.peers),
               started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    print(f"vant speed benchmark on {env['device_name']} ({device}), torch {env['torch']}, "
          f"{env['cpu_threads']} CPU threads ({env['cpu_noise_threads']} drawing noise, GOMP_SPINCOUNT "
          f"{env['gomp_spincount']}), load {env['load_avg']}",
          flush=True)
    settings = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in vars(args).items()}
    out = {"env": env, "settings": settings, "models": {}, "skipped": budget.skipped}
    path = Path(args.out or Path(__file__).resolve().parent / "results" / f"speed-{device.type}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        out["models"][name] = bench_model(name, args, device, budget)
        if name == "resnet18":
            out["table1"] = {mode: table1_cost(out["models"]["resnet18"], mode) for mode in args.modes}
        out["env"]["load_avg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
        out["env"]["seconds"] = round(time.perf_counter() - budget.start, 1)
        path.write_text(json.dumps(out, indent=2))  # after every model: a run cut short keeps what it measured
    report(out, device)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
