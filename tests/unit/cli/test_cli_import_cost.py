"""Every ``testfleet`` command, ``testfleet run`` included, and every pytest
session that loads testfleet's plugin, start without importing DuckDB, pyarrow
or cryptography: together they were 1.3 s of a command's 1.6 s start on the
2-core development machine (``python -X importtime -c "import testfleet.cli.app"``).
The commands that need them import them where they are used.

Each check runs in a fresh interpreter (this test process has imported them
long ago) and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Slow to import and needed only by some commands (the store, the data
#: commands, ``testfleet certs``).
HEAVY = ("duckdb", "pyarrow", "cryptography")


def modules_after(*imports: str) -> set[str]:
    """The top-level packages in ``sys.modules`` of a fresh interpreter after ``imports``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(imports)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.parametrize(
    "imports",
    [
        # What `testfleet run` (and every other command) imports to start.
        ("testfleet.cli.app", "testfleet.fleetrun.run"),
        # pytest11 entry point: loaded by every pytest session where testfleet
        # is installed, the workers' sessions included.
        ("testfleet.fleetrun.plugin",),
    ],
    ids=["cli", "pytest-plugin"],
)
def test_start_up_does_not_import_the_heavy_packages(imports: tuple[str, ...]) -> None:
    loaded = modules_after(*imports)
    assert "testfleet" in loaded  # the probe did import something
    assert not loaded & set(HEAVY), f"{imports} imported {sorted(loaded & set(HEAVY))}"


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above can fail: the store does import DuckDB and pyarrow.
    assert {"duckdb", "pyarrow"} <= modules_after("testfleet.store")
