"""Output folders resolve to the project, whatever the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from eahlib import paths

ROOT = Path(__file__).resolve().parents[1]


def test_project_dir_from_a_subfolder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.PROJECT_ENV, raising=False)
    monkeypatch.chdir(ROOT / "tests")
    assert paths.project_dir() == ROOT
    assert paths.figures_dir() == ROOT / "figures"


def test_project_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.PROJECT_ENV, str(tmp_path))
    assert paths.results_dir() == tmp_path / "data" / "results" and (tmp_path / "data" / "results").is_dir()
