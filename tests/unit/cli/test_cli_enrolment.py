"""``testfleet coordinator --enrol-ca-dir``: a CA folder that cannot sign stops the
command in one line naming the file and the fix, before anything is started."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.security.pki import ca_files, init_ca, issue_server


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    issue_server(directory)
    return directory


def coordinator(tmp_path: Path, *extra: str) -> tuple[int, str]:
    done = CliRunner().invoke(
        app, ["coordinator", "--db", str(tmp_path / "c.duckdb"), "--port", "1", *extra]
    )
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.exit_code, done.stderr


def tls(pki: Path) -> list[str]:
    return ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]


def test_enrolment_needs_tls(pki: Path, tmp_path: Path) -> None:
    code, said = coordinator(tmp_path, "--enrol-ca-dir", str(pki))
    assert code == 2
    assert "--enrol-ca-dir needs TLS: pass --tls-cert and --tls-key" in said


def test_a_missing_ca_folder_is_named_with_the_fix(pki: Path, tmp_path: Path) -> None:
    code, said = coordinator(tmp_path, *tls(pki), "--enrol-ca-dir", str(tmp_path / "nope"))
    assert code == 2
    assert "--enrol-ca-dir:" in said
    assert "nope" in said
    assert "testfleet certs init" in said


def test_a_missing_ca_key_is_named(pki: Path, tmp_path: Path) -> None:
    ca_files(pki).key.unlink()
    code, said = coordinator(tmp_path, *tls(pki), "--enrol-ca-dir", str(pki))
    assert code == 2
    assert "ca.key not found" in said


def test_a_client_ca_without_the_enrolment_ca_is_refused(pki: Path, tmp_path: Path) -> None:
    init_ca(tmp_path / "other")
    other = ca_files(tmp_path / "other").cert
    code, said = coordinator(
        tmp_path, *tls(pki), "--client-ca", str(other), "--enrol-ca-dir", str(pki)
    )
    assert code == 2
    assert "does not hold the CA of --enrol-ca-dir" in said
