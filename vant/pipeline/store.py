"""The run store's file primitives: atomic text, CSV and checkpoint writes, CSV reads, a directory lock.

Every write goes to a temporary file first and is moved into place with ``os.replace``, so a process
killed at any moment leaves either the old file or the new one, never half of one.

Nothing read from a run directory executes: a checkpoint holds only plain containers, numbers,
strings and tensors and is loaded with ``torch.load(..., weights_only=True)`` (a pickle naming any
other callable is refused before it runs). A file that does not parse, or a checkpoint that does not
belong to its run, is a one-line :class:`CheckpointError` naming the file and what to do.

torch is imported by the functions that read or write checkpoints only, so the light readers here
(CSV rows, the lock) serve ``vant list`` without it.
"""
from __future__ import annotations

import csv
import os
import warnings
from contextlib import contextmanager
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class RunBusy(RuntimeError):
    """Another process is working on this run (or grid) directory."""


class CheckpointError(RuntimeError):
    """A file of a run directory (checkpoint, rows, summary) cannot be read or does not belong to its run."""


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: Path, numeric: Sequence[str] = ()) -> list[dict]:
    """Rows of a CSV file with numbers parsed (``[]`` if the file does not exist).

    Every row must have as many fields as the header, and the ``numeric`` columns must exist and
    hold a number in every row; otherwise a :class:`CheckpointError` names the file and the line.
    """
    if not path.is_file():
        return []
    out = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or None in row.values():
                    raise _bad_csv(path, f"line {reader.line_num} has {'more' if None in row else 'fewer'} "
                                   "fields than the header")
                parsed = {}
                for k, v in row.items():
                    try:
                        parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                    except ValueError:
                        parsed[k] = v
                for k in numeric:
                    if k not in parsed:
                        raise _bad_csv(path, f"it has no column {k!r}")
                    if not isinstance(parsed[k], (int, float)):
                        raise _bad_csv(path, f"line {reader.line_num}: {k}={parsed[k]!r} is not a number")
                out.append(parsed)
            if not out and reader.fieldnames is not None:
                missing = [k for k in numeric if k not in reader.fieldnames]
                if missing:
                    raise _bad_csv(path, f"it has no column {missing[0]!r}")
    except (UnicodeDecodeError, csv.Error) as e:
        raise _bad_csv(path, str(e).splitlines()[0]) from None
    return out


def _bad_csv(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path} is damaged ({why}); delete it and run the same command again")


@contextmanager
def lock(directory: Path, what: str = "run"):
    """Hold ``directory/.lock`` exclusively, or raise :class:`RunBusy` at once.

    An OS lock through ``filelock`` (``flock`` on POSIX, ``msvcrt`` on Windows): the operating
    system releases it when the process dies, so a killed run never leaves its directory locked.
    """
    from filelock import FileLock, Timeout  # imported here: a light command never needs it

    held = FileLock(str(Path(directory) / ".lock"), timeout=0)
    try:
        held.acquire()
    except Timeout:
        raise RunBusy(f"{what} {directory} is being worked on by another process") from None
    try:
        yield
    finally:
        held.release()


def save_atomic(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


#: What every checkpoint written by :func:`vant.pipeline.train.fit` holds (besides any extra keys).
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "sampler", "rng", "epoch", "history", "config_hash")


def load_checkpoint(path: Path, device: torch.device | str = "cpu", *, expect_hash: str | None = None,
                    advice: str | None = None) -> dict:
    """The checkpoint dict at ``path``, read with ``weights_only=True`` (nothing in it can run code).

    It must be a checkpoint of this version (it stores the config hash of the training it belongs
    to) and that hash must equal ``expect_hash``; anything else is a one-line
    :class:`CheckpointError` naming the file and ending with ``advice`` (default: delete the file to
    train from scratch).
    """
    import torch

    advice = advice or f"delete {path} to train from scratch"
    try:
        with warnings.catch_warnings():  # torch warns about a foreign pickle protocol; the error below says more
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated zip, garbage, a pickle naming code: all the same to the user
        raise CheckpointError(f"checkpoint {path} is unreadable or holds more than tensors and plain data "
                              f"({type(e).__name__}); {advice}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a vant checkpoint; {advice}")
    if "config_hash" not in ckpt:
        raise CheckpointError(f"checkpoint {path} was written by an older vant (it stores no config hash, so "
                              f"it cannot be matched to this run); {advice}")
    if ckpt["config_hash"] != expect_hash:
        raise CheckpointError(f"checkpoint {path} belongs to config {ckpt['config_hash']}, not to this run's "
                              f"config {expect_hash}; {advice}")
    problem = _shape_problem(ckpt)
    if problem:
        raise CheckpointError(f"checkpoint {path} is damaged ({problem}); {advice}")
    return ckpt


def _shape_problem(ckpt: dict) -> str | None:
    import torch

    for key in CHECKPOINT_KEYS:
        if key not in ckpt:
            return f"no {key!r}"
    for key in ("model", "optimizer", "scheduler", "rng"):
        if not isinstance(ckpt[key], dict):
            return f"{key!r} is not a mapping"
    if not all(isinstance(v, torch.Tensor) for k, v in ckpt["model"].items() if not k.endswith("_extra_state")):
        return "'model' holds something other than tensors"
    if not isinstance(ckpt["rng"].get("torch"), torch.Tensor):
        return "no torch RNG state"
    epoch, history = ckpt["epoch"], ckpt["history"]
    if type(epoch) is not int or epoch < 0:
        return f"epoch {epoch!r}"
    if not isinstance(history, list) or len(history) != epoch or not all(isinstance(r, dict) for r in history):
        return f"its history is not one row per epoch ({epoch})"
    return None


def load_model_state(model: torch.nn.Module, state: dict, path: Path, advice: str) -> None:
    """``model.load_state_dict(state)`` (strict), or a one-line :class:`CheckpointError` naming
    ``path`` and the first key that does not fit, ending with ``advice``.

    The strict load itself is the check: a quantized model's state_dict is not a fixed key list
    (Brevitas adds keys of a learned scale as it trains and accepts them on load)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({_first_problem(e)}); {advice}") from None


def _first_problem(e: Exception) -> str:
    """The first mismatch of a load_state_dict error: 'Missing key(s) in state_dict: "a", "b"' -> up to "a"."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    line = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines[0] if lines else type(e).__name__)
    head, sep, keys = line.partition(': "')
    if sep:
        first = keys.split('"', 1)[0]
        return f'{head}: "{first}"' + (" ..." if keys.count('"') > 1 else "")
    return line
