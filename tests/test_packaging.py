"""Packaging: every third-party module vant imports is a declared dependency (or behind an extra)."""
import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
#: import name -> distribution name, where they differ
DISTRIBUTION = {"yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow", "mlflow": "mlflow-skinny",
                "huggingface_hub": "huggingface-hub"}
#: standard library on newer Pythons only; vant imports them with a fallback for 3.10
NEWER_STDLIB = ("tomllib",)


def _imported_modules() -> dict[str, str]:
    """Top-level names of every module imported anywhere in vant/ -> a file that imports it."""
    out = {}
    for path in sorted((ROOT / "vant").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                out.setdefault(n.split(".")[0], str(path.relative_to(ROOT)))
    return out


def _requirement_name(req: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")


def test_every_third_party_import_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    third_party = {m: f for m, f in _imported_modules().items()
                   if m not in sys.stdlib_module_names and m not in ("vant", "__future__", *NEWER_STDLIB)}
    assert {"torch", "numpy", "scipy", "PIL", "sklearn", "filelock", "tqdm", "yaml"} <= set(third_party)  # the scan works
    missing = {m: f for m, f in third_party.items() if DISTRIBUTION.get(m, m).lower() not in declared | extras}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    optional = {m for m in third_party if DISTRIBUTION.get(m, m).lower() not in declared}
    assert optional == {"brevitas", "ray", "shtab", "timm", "lightning", "submitit", "mlflow", "pyarrow", "aihwkit",
                        "safetensors", "huggingface_hub"}, optional  # each behind an extra and imported on use only


def test_license_and_typed_marker_are_packaged():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT" and project["project"]["license-files"] == ["LICENSE"]
    assert "MIT License" in (ROOT / "LICENSE").read_text() and "the vant developers" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "vant" / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["vant"]
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])  # SPDX license strings
