"""Project files: environment.yml and pyproject.toml list the same direct dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}
"""Conda package names that differ from their PyPI names."""
CONDA_ONLY = {"python", "pip", "cuda-version"}
SELF_REFERENCE = "eahlib["
"""An extra such as ``all = ["eahlib[notebooks,test]"]`` names other extras, not packages."""
NOT_IN_CONDA_ENV = {"lmms"}
"""Extras environment.yml leaves out: lmms-eval is not on conda-forge, and pip-installing it there would
pull torchvision (and possibly torch) from PyPI over conda-forge's pytorch; it gets its own venv."""


def split_requirement(spec: str) -> tuple[str, str]:
    name, bound = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec.strip()).groups()
    return name.lower(), bound.replace(" ", "")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [d for name, group in project["optional-dependencies"].items() if name not in NOT_IN_CONDA_ENV
              for d in group if not d.startswith(SELF_REFERENCE)]
    pip_deps = dict(split_requirement(d) for d in project["dependencies"] + extras)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    conda_deps = {CONDA_NAMES.get(n, n): b for n, b in map(split_requirement, conda) if n not in CONDA_ONLY}
    assert conda_deps == pip_deps
    assert all(bound.startswith(">=") for bound in pip_deps.values()), "lower bounds, not pins"
    assert {"-e ."} <= set(next(d for d in env["dependencies"] if isinstance(d, dict))["pip"])
    assert env["channels"][0] == "conda-forge" and not {"pytorch", "nvidia"} & set(env["channels"]), "conda-forge only"


def test_core_dependencies_leave_out_notebook_and_test_tools() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {split_requirement(d)[0] for d in project["dependencies"]}
    assert not core & {"jupyterlab", "nbval", "pytest", "papermill", "ipykernel"}
    assert {"notebooks", "test"} <= set(project["optional-dependencies"])
    python_floor = project["requires-python"].removeprefix(">=")
    torch_floor = dict(split_requirement(d) for d in project["dependencies"])["torch"].removeprefix(">=")
    # transformers 5.x runs without torch below 2.6 and refuses Python below 3.11.
    assert tuple(map(int, python_floor.split("."))) >= (3, 11)
    assert tuple(map(int, torch_floor.split("."))) >= (2, 6)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make test" in readme and "make demo" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "notebooks $(NBVAL)" in makefile and "--nbval-cell-timeout=" in makefile


def test_notebooks_have_one_parameters_cell_and_no_functions() -> None:
    import nbformat

    from eahlib.notebook_runner import notebooks

    for path in notebooks(ROOT / "notebooks"):
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0] is code[0], path.name
        assert 'MODE = os.environ.get("EAH_MODE", "small")' in tagged[0].source, path.name
        assert not any(line.lstrip().startswith(("def ", "class ")) for cell in code for line in cell.source.splitlines())
        assert all(not cell.get("outputs") for cell in code), f"{path.name}: strip outputs before committing"
        assert "import eahlib as eah" in code[1].source, path.name


def _make_variables(shared: Path, **environment: str) -> dict[str, str]:
    """The variables ``make`` exports for the test/demo jobs, with ``SHARED`` pointing at ``shared``."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in {"NLTK_DATA", "EAH_DATA_DIR", "EAH_OFFLINE"}}
    database = subprocess.run(
        ["make", "-pn", f"SHARED={shared}", "clean"], cwd=ROOT, env={**env, **environment},
        capture_output=True, text=True, check=True,
    ).stdout
    names = ("NLTK_DATA", "EAH_DATA_DIR", "EAH_OFFLINE")
    return {name: value for name, _, value in
            (line.partition(" = ") for line in database.splitlines()) if name in names}


def test_makefile_uses_the_offline_mirror_only_when_present(tmp_path: Path) -> None:
    assert _make_variables(tmp_path / "absent") == {}
    mirror = tmp_path / "shared"
    (mirror / "eah-data").mkdir(parents=True)
    assert set(_make_variables(mirror)) == {"NLTK_DATA", "EAH_DATA_DIR", "EAH_OFFLINE"}
    mine = _make_variables(mirror, NLTK_DATA="/my/nltk", EAH_OFFLINE="0")
    assert mine["NLTK_DATA"] == "/my/nltk" and mine["EAH_OFFLINE"] == "0"
