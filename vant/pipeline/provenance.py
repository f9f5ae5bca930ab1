"""Which vant a run was made with: its own git commit, or the installed distribution.

A run records the commit of vant itself, never that of a repository an installed vant happens to
sit in (a virtual environment inside someone's project, say):

- vant's package directory lies in a git checkout whose top level holds a ``pyproject.toml`` of
  the project ``vant`` (the checkout *is* vant, as with ``pip install -e .``): ``git_commit`` is
  that checkout's HEAD, with ``-dirty`` when tracked files differ from it;
- otherwise vant is an installed distribution: ``vant_dist`` is its version from the installed
  metadata and, where pip recorded one (``direct_url.json`` of an install from a VCS URL), the
  commit it was built from (``vant_vcs_commit``, ``vant_vcs_url``); no ``git_commit``.
"""
from __future__ import annotations

import json
import re
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def project_name(pyproject: Path) -> str | None:
    """``[project] name`` of a pyproject.toml (None if there is none or the file is unreadable)."""
    try:
        text = pyproject.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # Python 3.10: the one key needed, read from the [project] table
        table = re.search(r"^\[project\][ \t]*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
        name = table and re.search(r"""^name\s*=\s*["']([^"']+)["']""", table.group(1), re.M)
        return name.group(1) if name else None
    try:
        name = tomllib.loads(text).get("project", {}).get("name")
    except tomllib.TOMLDecodeError:
        return None
    return name if isinstance(name, str) else None


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def vant_checkout(package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The top level of the git checkout that is vant itself and holds ``package_dir``, else None."""
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top:
        return None
    top_path = Path(top)
    return top_path if project_name(top_path / "pyproject.toml") == "vant" else None


def source(package_dir: Path = PACKAGE_DIR) -> dict:
    """What identifies this vant: ``git_commit`` from vant's own checkout, else the installed
    distribution's ``vant_dist`` (and ``vant_vcs_commit``/``vant_vcs_url`` when pip recorded them)."""
    top = vant_checkout(package_dir)
    if top is not None:
        commit = _git(["rev-parse", "HEAD"], top)
        if commit:
            dirty = _git(["status", "--porcelain", "--untracked-files=no"], top)
            return {"git_commit": commit + ("-dirty" if dirty else "")}
        return {}
    out: dict = {}
    try:
        dist = metadata.distribution("vant")
    except metadata.PackageNotFoundError:
        return out
    out["vant_dist"] = dist.version
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        direct = None
    if isinstance(direct, dict) and isinstance(direct.get("vcs_info"), dict):
        commit = direct["vcs_info"].get("commit_id")
        if commit:
            out["vant_vcs_commit"] = str(commit)
            out["vant_vcs_url"] = str(direct.get("url", ""))
    return out
