"""Progress that suits where it goes: bars on a terminal, plain lines at a bounded rate in a log.

A progress bar redrawn with carriage returns is right on a terminal and wrong in a file: a SLURM job's
log or ``vant demo > log 2>&1`` would keep every redraw. :func:`progress_bar` returns tqdm's bar on a
terminal (and in a notebook), and elsewhere the same bar writing whole lines, at most one per
``VANT_PROGRESS_INTERVAL`` seconds (default 60) plus one per refresh the caller asks for (the
training loop sets its postfix once per epoch: one line per epoch). ``VANT_PROGRESS=bars`` or
``lines`` forces either.
"""
from __future__ import annotations

import os
import re
import sys

MODE = "VANT_PROGRESS"  # bars | lines | unset: bars on a terminal or in a notebook, lines elsewhere
INTERVAL = "VANT_PROGRESS_INTERVAL"  # seconds between plain lines (default 60)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_lines() -> bool:
    """Whether progress goes out as plain lines (stderr is no terminal, or VANT_PROGRESS=lines)."""
    mode = os.environ.get(MODE, "").strip().lower()
    if mode in ("bars", "lines"):
        return mode == "lines"
    if "ipykernel" in sys.modules:  # a notebook draws tqdm.auto's widget, whatever stderr is
        return False
    return not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class _Lines:
    """A stream for tqdm that turns each redraw into one line: no carriage return, no cursor move,
    and a cleared bar (blanks) writes nothing."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = _ANSI.sub("", text).replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(**kwargs):
    """``tqdm.auto.tqdm(**kwargs)`` on a terminal; in a log, the same bar as plain lines (kept at
    the end, at most one line per VANT_PROGRESS_INTERVAL seconds besides explicit refreshes)."""
    from tqdm.auto import tqdm

    if not plain_lines():
        return tqdm(dynamic_ncols=True, **kwargs)
    try:
        interval = max(0.0, float(os.environ.get(INTERVAL, "60")))
    except ValueError:
        interval = 60.0
    kwargs.update(file=_Lines(sys.stderr), mininterval=interval, maxinterval=max(interval, 10.0), ncols=100,
                  leave=True)
    bar = tqdm(**kwargs)
    bar.plain_lines = True
    return bar
