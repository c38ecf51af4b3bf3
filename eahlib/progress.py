"""Progress bars that read well on a terminal, in a notebook and in a log file.

On a terminal and in a Jupyter kernel this is ``tqdm.auto``. When stderr is neither (output redirected to a file,
``nohup``, a batch job, CI), tqdm would redraw one line with carriage returns (one endless line in the
file) or, with ``disable=None``, show nothing; here it writes one plain line every
:data:`LOG_INTERVAL_S` seconds and one at the end instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

LOG_INTERVAL_S = 30.0
"""Seconds between two progress lines in a log file."""


class _LineWriter:
    """A file for tqdm that turns each redraw (``"\\r..."``) into one complete line, each line once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line and line != self.last:
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[Any] | None = None, total: int | None = None, desc: str | None = None,
             **kwargs: Any) -> std_tqdm:
    """A tqdm progress bar over ``iterable`` (or ``total`` steps, updated by hand), also in a log file.

    Args:
        iterable, total, desc, kwargs: as for ``tqdm``.
    """
    if "ipykernel" in sys.modules or sys.stderr.isatty():
        return auto_tqdm(iterable, total=total, desc=desc, **kwargs)
    return std_tqdm(iterable, total=total, desc=desc, file=_LineWriter(sys.stderr), mininterval=LOG_INTERVAL_S,
                    maxinterval=max(LOG_INTERVAL_S, 10.0), ascii=True, **kwargs)
