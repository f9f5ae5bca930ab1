#!/usr/bin/env bash
# Issue 7's accelerator checks in one call (about 6-8 minutes on an H200; give the call the 600 s
# limit; no network needed; each step has its own timeout and writes its results as it goes):
#   1. noise statistics on the device, eager vs compiled     (pytest -m gpu tests/test_fastpath.py)
#   2. bench/speed.py: clean/NT/VANT training, inference and the 14-sigma x 3-repeat sweep of
#      10,000 images, eager vs compiled, ResNet-18 first (the issue's targets), then LeNet-5, ResNet-50
#   3. a short real training run through `vant train` (bundled digits at 32x32; ResNet-18 on CUDA,
#      LeNet-5 on the CPU), compiled and eager, to show the compiled loop trains like the eager one
# Everything lands in $OUT when set (the device tool's folder), else bench/results/:
# gpu_tests.log, speed-<device>.json, speed.log, train-<mode>.csv, summary.txt.
#
#   bench/device_check.sh            # on a CUDA machine
#   bench/device_check.sh cpu        # the same three steps, small, on the CPU (checks the script)
set -uo pipefail
cd "$(dirname "$0")/.."
dev=${1:-cuda}
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
step() { echo; echo "=== $* ($(date +%T))"; }

step environment
$py -c "import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/env.txt"
command -v nvidia-smi >/dev/null && nvidia-smi -L | tee -a "$out/env.txt"

step "1. noise statistics, eager vs compiled"
if [ "$dev" = cuda ]; then sel=(-m gpu); else sel=(-k "distribution or iid"); fi
timeout 120 $py -m pytest -q -p no:cacheprovider "${sel[@]}" tests/test_fastpath.py 2>&1 | tee "$out/gpu_tests.log" || status=1

step "2. throughput benchmark"
if [ "$dev" = cuda ]; then
    bench=(--device cuda --models resnet18,lenet5,resnet50 --budget 200 --no-eval resnet50)
    limit=360
else
    bench=(--device cpu --quick --models lenet5 --modes eager,compiled --threads 2)
    limit=900
fi
timeout $limit $py bench/speed.py "${bench[@]}" --out "$out/speed-$dev.json" 2>&1 | grep -v "Warning" | tee "$out/speed.log" || status=1

step "3. short real training run, compiled vs eager"
if [ "$dev" = cuda ]; then model=resnet18 epochs=15; else model=lenet5 epochs=2; fi
rm -rf /tmp/vant-devcheck  # a finished run is never redone: start from nothing
for compile in true false; do
    # batch 479 = a third of the 1437 training digits: every step has one shape, so one compile
    timeout 120 $py -m vant.cli train -q model.name=$model data.name=digits data.image_size=32 \
        train.method=vant train.sigma=0.5 train.epochs=$epochs train.batch_size=479 train.compile=$compile \
        eval.sigmas=[0.1,0.5,1.0] eval.repeats=2 device=$dev name=devcheck-$compile out_dir=/tmp/vant-devcheck \
        2>&1 | grep -v "Warning" || status=1
    cp /tmp/vant-devcheck/devcheck-$compile-*/epochs.csv "$out/train-$compile.csv" 2>/dev/null || status=1
    cat "$out/train-$compile.csv" 2>/dev/null
done

step summary
$py - "$out" "$dev" <<'PY' | tee "$out/summary.txt"
import csv, json, sys
from pathlib import Path
out, dev = Path(sys.argv[1]), sys.argv[2]
try:
    r = json.loads((out / f"speed-{dev}.json").read_text())
except (OSError, ValueError) as e:
    sys.exit(f"no benchmark JSON: {e}")
for name, m in r["models"].items():
    for k, v in m.get("train", {}).items():
        print(f"{name:9s} train {k:15s} {v.get('images_per_s')!s:>10} img/s  vs clean {v.get('vs_clean')}")
    if "train_vant_compiled_vs_eager" in m:
        print(f"{name:9s} VANT training compiled/eager: {m['train_vant_compiled_vs_eager']}")
    for mode in ("eager", "compiled"):
        s = m.get(f"sweep/{mode}")
        if s and s.get("median_s"):
            print(f"{name:9s} sweep {mode}: {s['median_s']:.3f} s for {s['sigmas']}x{s['repeats']} over {s['images']} images")
print("table1:", json.dumps(r.get("table1")))
print("skipped:", r.get("skipped"))
for c in ("true", "false"):
    try:
        rows = list(csv.DictReader(open(out / f"train-{c}.csv")))
        last = rows[-1]
        print(f"train compile={c}: epochs {len(rows)}, loss {float(last['train_loss']):.3f}, "
              f"test acc at sigma_train {float(last['test_acc']):.1f}%, {float(last['images_per_s']):.0f} img/s")
    except (OSError, IndexError, KeyError) as e:
        print(f"train compile={c}: no rows ({e})")
PY
exit $status
