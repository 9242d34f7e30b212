"""``testfleet worker --allow-types``: bad values are one clear line, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli import app


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("test,shell", "unknown task type 'shell'; valid: command, simulated, test, benchmark"),
        (",", "--allow-types is empty: give one or more of command, simulated, test, benchmark"),
    ],
)
def test_a_bad_allow_types_is_one_line_naming_the_valid_types(value: str, said: str) -> None:
    done = CliRunner().invoke(
        app, ["worker", "--coordinator", "http://127.0.0.1:9", "--allow-types", value]
    )
    assert done.exit_code == 2
    assert said in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.output


def test_the_help_describes_allow_types() -> None:
    done = CliRunner().invoke(app, ["worker", "--help"])
    assert done.exit_code == 0
    assert "--allow-types" in done.stdout


def worker_with(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = CliRunner().invoke(
        app, ["worker", "--coordinator", "http://127.0.0.1:9", *args], env=env or {}
    )
    assert "Traceback" not in done.output
    return done.exit_code, done.stderr


def test_a_worker_token_without_a_worker_id_is_one_line_naming_the_fix() -> None:
    code, said = worker_with("--token", "tfk_tok-0123456789abcdef_" + "A" * 43)
    assert code == 2
    assert "pass --worker-id" in said
    assert "tokens create --role worker --name ID" in said
    assert len(said.strip().splitlines()) == 1
    # From the environment too, when there is no --cert.
    code, said = worker_with(env={"TESTFLEET_TOKEN": "tfk_tok-0123456789abcdef_" + "A" * 43})
    assert code == 2
    assert "pass --worker-id" in said


@pytest.mark.parametrize(
    ("mode", "said"),
    [(None, "does not exist"), (0o644, "chmod 600"), (0o600, "is empty")],
)
def test_a_bad_worker_token_file_is_one_line_naming_it(
    tmp_path: Path, mode: int | None, said: str
) -> None:
    path = tmp_path / "w1.token"
    if mode is not None:
        path.write_text("")
        path.chmod(mode)
    code, stderr = worker_with("--worker-id", "w1", "--token-file", str(path))
    assert code == 2
    assert str(path) in stderr
    assert said in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_a_negative_shutdown_grace_is_refused_naming_the_option() -> None:
    code, said = worker_with("--shutdown-grace", "-1")
    assert code == 2
    assert "--shutdown-grace" in said
    assert "greater than or equal to 0" in " ".join(said.replace("│", " ").split())


def test_the_help_describes_shutdown_grace() -> None:
    done = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0
    assert "--shutdown-grace" in done.stdout


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--max-task-memory", "lots"], "--max-task-memory lots: expected a whole number of bytes"),
        (["--disk", "0"], "--disk 0: expected a whole number of bytes or a size with a unit"),
        (["--disk", "2 PiB"], "--disk 2 PiB: expected"),
    ],
)
def test_a_bad_resource_cap_is_one_line_naming_the_option(args: list[str], said: str) -> None:
    code, stderr = worker_with(*args)
    assert code == 2
    assert said in " ".join(stderr.split())
    assert len(stderr.strip().splitlines()) == 1


def test_a_zero_cpu_cores_is_refused_naming_the_option() -> None:
    code, said = worker_with("--cpu-cores", "0")
    assert code == 2
    assert "--cpu-cores" in said


def test_the_help_describes_the_resource_caps() -> None:
    done = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert done.exit_code == 0
    for option in ("--max-task-memory", "--cpu-cores", "--disk"):
        assert option in done.stdout
