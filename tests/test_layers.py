"""The package's architecture: imports point down the layers, and importing vant changes nothing.

Layers, top to bottom: cli -> experiments -> scenarios -> pipeline -> core. The top-level modules
config, models, nets, data, plots, tables and factory are shared leaves that import no layer; baselines plug into
the core by registering with it, so the core imports nothing above it. integrations (hooks for other
people's training loops) sits beside the stack: it imports the core only, and nothing imports it.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "vant"
ORDER = ["core", "baselines", "pipeline", "scenarios", "experiments"]  # each may import only those before it
LEAVES = {"config", "models", "data", "plots", "tables", "factory", "nets"}
#: Side layers: hooks into other people's training loops; they may import the core (and the shared
#: leaves) only, and nothing of vant imports them.
SIDE = {"integrations": {"core"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m == "vant" or m.startswith("vant.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for m in _imports(path):
            while m and m not in modules:
                m = m.rpartition(".")[0]
            if m and m != name:
                deps.add(m)
        graph[name] = deps
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vant"


def test_no_import_cycles():
    graph = {m: {d for d in deps if not d.endswith("__init__") and d != "vant"} for m, deps in _graph().items()
             if m != "vant"}
    seen, stack, cycles = {}, [], []

    def visit(u):
        seen[u] = 1
        stack.append(u)
        for v in graph.get(u, ()):
            if seen.get(v) == 1:
                cycles.append(stack[stack.index(v):] + [v])
            elif v not in seen:
                visit(v)
        stack.pop()
        seen[u] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    assert not cycles, cycles


def test_dependencies_point_down_the_layers():
    bad = []
    for module, deps in _graph().items():
        layer = _layer(module)
        for d in deps:
            target = _layer(d)
            if d == "vant" or target == layer:
                continue
            if layer in LEAVES and target not in LEAVES:
                bad.append(f"{module} -> {d} (a shared leaf imports a layer)")
            elif layer in ORDER and target in ORDER and ORDER.index(target) > ORDER.index(layer):
                bad.append(f"{module} -> {d} (points up a layer)")
            elif layer in ORDER and target == "cli":
                bad.append(f"{module} -> {d}")
            elif layer in SIDE and target not in SIDE[layer] | LEAVES:
                bad.append(f"{module} -> {d} (a side layer imports more than {sorted(SIDE[layer])})")
            elif target in SIDE and layer != target:
                bad.append(f"{module} -> {d} (nothing of vant imports a side layer)")
    assert not bad, bad


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "MPLBACKEND")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**environ, **env})


def test_importing_vant_changes_nothing():
    r = _python("import os, sys, vant, vant.cli\n"
                "assert 'GOMP_SPINCOUNT' not in os.environ\n"
                "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\n"
                "vant.inject_noise_\n"
                "assert 'GOMP_SPINCOUNT' not in os.environ")
    assert r.returncode == 0, r.stderr


def test_importing_every_module_keeps_the_matplotlib_backend():
    code = ("import importlib, pkgutil, vant\n"
            "for m in pkgutil.walk_packages(vant.__path__, 'vant.'):\n"
            "    if m.name.endswith('__main__'): continue\n"
            "    try: importlib.import_module(m.name)\n"
            "    except ImportError as e:\n"  # an integration whose framework (an optional extra) is not installed
            "        if not (m.name.startswith('vant.integrations.') and 'pip install' in str(e)): raise\n"
            "import matplotlib, os; print(matplotlib.get_backend()); assert 'GOMP_SPINCOUNT' not in os.environ")
    r = _python(code, MPLBACKEND="svg")
    assert r.returncode == 0 and r.stdout.strip() == "svg", r.stderr


def test_the_command_line_sets_the_openmp_spin_before_torch():
    r = _python("import os, sys\nfrom vant.cli import main\n"
                "main(['list', 'presets'])\n"
                "assert os.environ['GOMP_SPINCOUNT'] == '10000'")
    assert r.returncode == 0, r.stderr
    r = _python("import torch, os, vant\nassert vant.set_openmp_spin() is False and 'GOMP_SPINCOUNT' not in os.environ")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["inject_noise_", "set_sigma_", "fit", "sweep", "create_model", "quantize_", "SAM",
                                  "VantSampler", "compile_noisy", "set_openmp_spin"])
def test_the_public_api_resolves(name):
    import vant

    assert name in vant.__all__ and callable(getattr(vant, name))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vant.nope  # noqa: B018
