"""Progress bars in a log file: plain lines, not carriage-return redraws."""

from __future__ import annotations

import io
import sys

import pytest

from eahlib import progress as progress_module


def test_progress_writes_whole_lines_when_stderr_is_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()  # not a terminal, like `... 2> run.log`
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    assert list(progress_module.progress(range(3), desc="captions")) == [0, 1, 2]
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("captions:   0%") and lines[-1].startswith("captions: 100%") and "3/3" in lines[-1]
    with progress_module.progress(total=4, desc="by hand") as bar:
        bar.update(4)
    assert log.getvalue().splitlines()[-1].startswith("by hand: 100%")


def test_a_redraw_of_the_same_state_is_written_once() -> None:
    log = io.StringIO()
    writer = progress_module._LineWriter(log)
    for text in ("\rdone: 100%| 3/3 [00:01<00:00]", "\rdone: 100%| 3/3 [00:01<00:00]", "\n"):  # last update, then close
        writer.write(text)
    assert log.getvalue() == "done: 100%| 3/3 [00:01<00:00]\n"
