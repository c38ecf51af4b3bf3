"""``python -m eahlib.bench`` whose process of rank ``$EAH_TEST_KILL_RANK`` dies (SIGKILL, as the OOM killer
or a preempted node would kill it) when its second batch starts, once rank 0 has written a record;
tests/test_multiprocess.py launches it under ``torchrun`` to check that a rerun resumes without losing or
repeating an item."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from eahlib.bench.__main__ import main
from eahlib.methods import Method

real_generate = Method.generate
batches = 0


def rank0_has_written(out: Path) -> bool:
    return any(path.read_text().count("\n") for path in out.glob("*.rank0.jsonl"))


def generate_or_die(self: Method, *args: object, **kwargs: object) -> object:
    global batches
    batches += 1
    if batches == 2 and os.environ["RANK"] == os.environ["EAH_TEST_KILL_RANK"]:
        out = Path(sys.argv[sys.argv.index("--out") + 1])
        deadline = time.monotonic() + 120
        while not rank0_has_written(out) and time.monotonic() < deadline:  # both processes are mid-run
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_generate(self, *args, **kwargs)


Method.generate = generate_or_die
main(sys.argv[1:])
