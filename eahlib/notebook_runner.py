"""Run the numbered notebooks with papermill: ``python -m eahlib.notebook_runner [--mode small|full]``.

Each ``notebooks/NN_*.ipynb`` is executed in order with its ``parameters`` cell overridden
(``MODE`` and any ``-p NAME VALUE``); the executed copies go to ``data/results/notebooks/`` and
the figures and tables to ``figures/`` and ``data/results/``, as the notebooks write them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eahlib.paths import project_dir, results_dir


def notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks, in order."""
    folder = folder or project_dir() / "notebooks"
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"No numbered notebooks (NN_name.ipynb) in {folder}.")
    return found


def run_notebooks(mode: str = "small", parameters: Mapping[str, Any] | None = None,
                  folder: Path | None = None, output: Path | None = None) -> list[Path]:
    """Execute every numbered notebook; returns the executed copies."""
    import papermill

    output = output or results_dir() / "notebooks"
    output.mkdir(parents=True, exist_ok=True)
    executed = []
    for notebook in notebooks(folder):
        target = output / notebook.name
        print(f"running {notebook.name} (MODE={mode}) -> {target}", flush=True)
        papermill.execute_notebook(str(notebook), str(target), parameters={"MODE": mode, **(parameters or {})},
                                   cwd=str(notebook.parent), kernel_name="python3", progress_bar=True)
        executed.append(target)
    return executed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["small", "full"], default="small")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="override a parameter (VALUE read as JSON where possible)")
    args = parser.parse_args()
    parameters = {}
    for name, value in args.parameter:
        try:
            parameters[name] = json.loads(value)
        except json.JSONDecodeError:
            parameters[name] = value
    run_notebooks(args.mode, parameters)


if __name__ == "__main__":
    main()
