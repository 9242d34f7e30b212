"""The environment benchmarks/suite.py runs every peer in: ``lean`` or ``current``.

Called by suite.py's ``main`` before anything is timed. Why it exists: the
project's own virtual environment carries testfleet's dev tools (hypothesis,
schemathesis, pytest-asyncio, pytest-timeout, ... registered as ``pytest11``
entry points), and every pytest session loads them all: about 1.6 CPU-s per
session start on the 2-core development machine, against 0.3 CPU-s without
them. With 8 workers (xdist's or the fleet's) on 2 cores, that start-up is the
whole run, and it is not what a user's project pays: a project that uses
testfleet does not carry testfleet's dev tools.

``lean`` (the default) builds, once, a virtual environment with only pytest
and pytest-xdist (the versions of the interpreter that runs the script, so only
the plugins differ) and this checkout installed editable with its runtime
dependencies (no ``dev`` or ``bench`` extras), then re-executes the script in
it: serial pytest, xdist, the ``testfleet run`` client, the coordinator and the
fleet's workers (and so their pytest sessions) all use that interpreter and see
the same plugins. ``current`` runs everything in the interpreter the script was
started with (the figures before this existed).

The environment is cached under ``~/.cache/testfleet-bench/`` (or
``$TESTFLEET_BENCH_CACHE``), keyed by the checkout's ``pyproject.toml``, its
path (the install is editable) and the pytest and xdist versions; it is rebuilt
when the key changes or a build did not finish.
"""

from __future__ import annotations

import enum
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Where built environments are kept (one directory per key).
CACHE_ENV = "TESTFLEET_BENCH_CACHE"
#: Written last by a build: an environment without it is rebuilt.
COMPLETE_MARK = ".testfleet-suite-env-complete"
#: The peers' own packages, pinned to this interpreter's versions.
PEER_PACKAGES = ("pytest", "pytest-xdist")


class SuiteEnv(enum.Enum):
    """Which interpreter and plugins the suite's peers run with (``--env``)."""

    LEAN = "lean"
    CURRENT = "current"


def cache_root() -> Path:
    """Where environments are built (``$TESTFLEET_BENCH_CACHE`` or ``~/.cache``)."""
    given = os.environ.get(CACHE_ENV)
    return Path(given) if given else Path.home() / ".cache" / "testfleet-bench"


def peer_pins() -> list[str]:
    """``name==version`` of pytest and xdist as installed here (the lean env gets the same)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in PEER_PACKAGES]


def env_key(checkout: Path, pins: list[str]) -> str:
    """The cache key: what the lean environment's contents depend on."""
    digest = hashlib.sha256()
    digest.update((checkout / "pyproject.toml").read_bytes())
    digest.update(str(checkout.resolve()).encode())
    digest.update(" ".join([*pins, sys.version]).encode())
    return digest.hexdigest()[:16]


def lean_env_dir(checkout: Path) -> Path:
    """The lean environment's directory for this checkout (built or not)."""
    return cache_root() / f"suite-venv-{env_key(checkout, peer_pins())}"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def inside(venv: Path) -> bool:
    """True when this interpreter is ``venv``'s (the script was re-executed there)."""
    return Path(sys.prefix).resolve() == venv.resolve()


def build_lean_env(checkout: Path, venv: Path) -> None:
    """Create ``venv`` and install the peers and the checkout into it, printing
    pip's progress (the first run takes a minute or two; later runs reuse it)."""
    if venv.exists():
        # A build that did not finish (no mark): start again from nothing.
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    pins = peer_pins()
    print(
        f"env: building the lean environment in {venv} "
        f"(once; pip install {' '.join(pins)} -e {checkout})",
        flush=True,
    )
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(venv)],
        [
            str(python_of(venv)),
            "-m",
            "pip",
            "install",
            "--progress-bar",
            "off",
            *pins,
            "-e",
            str(checkout),
        ],
    ]
    for step in steps:
        print(f"env: $ {' '.join(step)}", flush=True)
        done = subprocess.run(step, check=False)
        if done.returncode != 0:
            raise SystemExit(
                f"env: building the lean environment failed (exit {done.returncode}) at: "
                f"{' '.join(step)}; fix the cause above, or run with --env current"
            )
    (venv / COMPLETE_MARK).write_text(" ".join(pins) + "\n")
    print("env: lean environment ready", flush=True)


def enter_lean_env(checkout: Path, argv: list[str]) -> None:
    """Re-execute the script in the lean environment (building it first when
    needed); return only when already running inside it."""
    venv = lean_env_dir(checkout)
    if inside(venv):
        return
    if not (venv / COMPLETE_MARK).exists():
        build_lean_env(checkout, venv)
    python = str(python_of(venv))
    sys.stdout.flush()
    # The checkout is installed there (editable): a PYTHONPATH given for the
    # project's own venv (e.g. another checkout's src) must not shadow it.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    os.execve(python, [python, *argv], env)


def describe_env(choice: SuiteEnv) -> str:
    """One line: which environment runs the peers, and the pytest plugins it registers."""
    plugins = sorted(
        {
            f"{dist.metadata['Name']}"
            for dist in importlib.metadata.distributions()
            for entry in dist.entry_points
            if entry.group == "pytest11"
        }
    )
    autoload = "off" if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") else "on"
    return (
        f"env: {choice.value} ({sys.prefix}, Python {sys.version.split()[0]}, "
        f"pytest {importlib.metadata.version('pytest')}; pytest11 plugins: "
        f"{', '.join(plugins) or 'none'}; autoload {autoload}; bytecode cache "
        f"{'off' if os.environ.get('PYTHONDONTWRITEBYTECODE') else 'on'})"
    )
