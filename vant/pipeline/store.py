"""The run store's file primitives: atomic text, CSV and checkpoint writes, CSV reads, a directory lock.

Every write goes to a temporary file first and is moved into place with ``os.replace``, so a process
killed at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import csv
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

import torch


class RunBusy(RuntimeError):
    """Another process is working on this run (or grid) directory."""


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read."""


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


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV file with numbers parsed (``[]`` if the file does not exist)."""
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                if not isinstance(v, str):  # a short line's missing cells (None), a long line's extra ones (list)
                    parsed[k] = v
                    continue
                try:
                    parsed[k] = int(v) if v.lstrip("-").isdigit() else float(v)
                except ValueError:
                    parsed[k] = v
            out.append(parsed)
    return out


@contextmanager
def lock(directory: Path, what: str = "run"):
    """Hold ``directory/.lock`` exclusively, or raise :class:`RunBusy` at once."""
    fd = os.open(directory / ".lock", os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(f"{what} {directory} is being worked on by another process") from None
        yield
    finally:
        os.close(fd)


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:  # truncated zip, garbage, wrong pickle: all the same to the user
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}); delete it (or the run "
                              "directory) to train again") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "epoch" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not a vant checkpoint")
    return ckpt
