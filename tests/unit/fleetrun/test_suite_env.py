"""benchmarks/suite_env.py: which interpreter benchmarks/suite.py runs its
peers in (the lean venv is never built here: building and re-executing are
replaced by fakes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

SUITE_ENV = Path(__file__).resolve().parents[3] / "benchmarks" / "suite_env.py"


@pytest.fixture(scope="module")
def suite_env() -> Any:
    spec = importlib.util.spec_from_file_location("suite_env_benchmark", SUITE_ENV)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["suite_env_benchmark"] = module
    spec.loader.exec_module(module)
    return module


def checkout(root: Path, pyproject: str) -> Path:
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject)
    return root


def test_the_key_follows_the_pyproject_the_checkout_and_the_pins(
    suite_env: Any, tmp_path: Path
) -> None:
    one = checkout(tmp_path / "one", "[project]\nname = 'x'\n")
    two = checkout(tmp_path / "two", "[project]\nname = 'x'\n")
    pins = ["pytest==9.2.0", "pytest-xdist==3.8.0"]
    key = suite_env.env_key(one, pins)
    assert key == suite_env.env_key(one, list(pins))
    assert key != suite_env.env_key(two, pins)  # editable: another checkout, another env
    assert key != suite_env.env_key(one, ["pytest==9.1.0", "pytest-xdist==3.8.0"])
    (one / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['y']\n")
    assert key != suite_env.env_key(one, pins)


class Recorder:
    def __init__(self) -> None:
        self.built: list[Path] = []
        self.executed: list[tuple[str, list[str], dict[str, str]]] = []

    def build(self, _checkout: Path, venv: Path) -> None:
        self.built.append(venv)
        venv.mkdir(parents=True)
        (venv / ".testfleet-suite-env-complete").write_text("")

    def execve(self, path: str, argv: list[str], env: dict[str, str]) -> None:
        self.executed.append((path, argv, env))


@pytest.fixture
def recorder(suite_env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setenv(suite_env.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(suite_env, "build_lean_env", recorder.build)
    monkeypatch.setattr(suite_env.os, "execve", recorder.execve)
    return recorder


def test_the_first_run_builds_then_reexecutes_without_pythonpath(
    suite_env: Any, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = checkout(tmp_path / "repo", "[project]\n")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere/src")
    suite_env.enter_lean_env(root, ["/repo/benchmarks/suite.py", "--rounds", "3"])
    venv = suite_env.lean_env_dir(root)
    assert recorder.built == [venv]
    [(python, argv, env)] = recorder.executed
    assert python == str(venv / "bin" / "python")
    assert argv == [python, "/repo/benchmarks/suite.py", "--rounds", "3"]
    assert "PYTHONPATH" not in env  # the env's editable checkout is what runs

    suite_env.enter_lean_env(root, ["suite.py"])  # built: reused, not rebuilt
    assert recorder.built == [venv]
    assert len(recorder.executed) == 2


def test_inside_the_lean_env_it_returns_and_runs_there(
    suite_env: Any, recorder: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = checkout(tmp_path / "repo", "[project]\n")
    venv = suite_env.lean_env_dir(root)
    venv.mkdir(parents=True)
    monkeypatch.setattr(suite_env.sys, "prefix", str(venv))
    suite_env.enter_lean_env(root, ["suite.py"])
    assert recorder.built == []
    assert recorder.executed == []


def test_the_env_line_names_the_choice_and_the_installed_pytest_plugins(suite_env: Any) -> None:
    line = suite_env.describe_env(suite_env.SuiteEnv.CURRENT)
    assert line.startswith("env: current (")
    assert "pytest11 plugins:" in line
    assert "testfleet" in line  # this environment has testfleet installed


@pytest.mark.parametrize(
    ("setting", "shown"), [("1", "bytecode cache off"), (None, "bytecode cache on")]
)
def test_the_env_line_says_whether_the_peers_may_cache_bytecode(
    suite_env: Any, monkeypatch: pytest.MonkeyPatch, setting: str | None, shown: str
) -> None:
    if setting is None:
        monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    else:
        monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", setting)
    assert shown in suite_env.describe_env(suite_env.SuiteEnv.CURRENT)
