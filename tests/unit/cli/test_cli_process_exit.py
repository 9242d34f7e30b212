"""``testfleet run`` ends without the interpreter's teardown (cli/process_exit.py):
its exit code, its buffered output and the ``atexit`` handlers survive; the
teardown (here: a finalizer that would print) does not run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

from testfleet.cli import process_exit

SCRIPT = textwrap.dedent(
    """
    import atexit, sys
    from testfleet.cli.process_exit import as_process, exit_now

    class Finalized:
        def __del__(self):
            print("teardown ran", flush=True)

    kept = Finalized()  # deallocated only by the interpreter's teardown
    atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))
    as_process()
    sys.stdout.write("summary line, still buffered")
    exit_now(3)
    """
)


def test_the_real_process_exits_at_once_with_its_code_output_and_atexit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit.txt"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(marker)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert done.stdout == "summary line, still buffered"
    assert marker.read_text() == "atexit ran"
    assert "teardown ran" not in done.stdout + done.stderr


def test_in_process_callers_get_an_ordinary_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    # CliRunner tests invoke the app without main(): never os._exit under them.
    monkeypatch.setattr(process_exit, "_owns_process", False)
    with pytest.raises(typer.Exit) as raised:
        process_exit.exit_now(5)
    assert raised.value.exit_code == 5
