"""Where figures and result tables go: the project folder, never the notebook's working directory.

The project folder is ``$EAH_PROJECT_DIR`` if set, else the nearest folder upwards from the
working directory that holds eahlib's ``pyproject.toml``, else the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ENV = "EAH_PROJECT_DIR"


def project_dir() -> Path:
    """The project folder (see the module docstring)."""
    if os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).expanduser()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "eahlib").is_dir():
            return folder
    return here


def figures_dir() -> Path:
    """``<project>/figures``, created if missing."""
    path = project_dir() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_dir() -> Path:
    """``<project>/data/results``, created if missing."""
    path = project_dir() / "data" / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path
