"""TLS options of ``coordinator``, ``worker`` and ``certs``: bad files stop the command
in one line naming the file and the fix, before anything is started."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.client import FleetClient, FleetError
from testfleet.security.pki import ca_files, init_ca, issue_server, issue_worker


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    issue_server(directory)
    issue_worker(directory, "w1")
    return directory


def run(*args: str) -> tuple[int, str]:
    done = CliRunner().invoke(app, list(args))
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.output


def coordinator(pki: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    return run("coordinator", "--db", str(tmp_path / "c.duckdb"), "--port", "1", *extra)


def test_certs_commands_make_a_ca_and_certificates(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    assert run("certs", "init", "--dir", str(directory))[0] == 0
    code, output = run("certs", "init", "--dir", str(directory))
    assert code == 2
    assert "--force" in output
    code, output = run("certs", "server", "--dir", str(directory), "--dns", "a", "--ip", "10.1.1.1")
    assert code == 0, output
    assert "--tls-cert" in output
    assert run("certs", "worker", "--dir", str(directory), "w-1")[0] == 0
    assert (directory / "workers" / "w-1.pem").exists()
    code, output = run("certs", "worker", "--dir", str(directory), "bad id")
    assert code == 2
    assert "a worker id is" in output


def test_the_coordinator_refuses_a_missing_certificate(pki: Path, tmp_path: Path) -> None:
    code, output = coordinator(
        pki, tmp_path, "--tls-cert", str(pki / "nope.pem"), "--tls-key", str(pki / "server.key")
    )
    assert code == 2
    assert "nope.pem: no such certificate file" in output
    assert not (tmp_path / "c.duckdb").exists()


def test_the_coordinator_refuses_a_key_others_can_read(pki: Path, tmp_path: Path) -> None:
    (pki / "server.key").chmod(0o640)
    code, output = coordinator(
        pki, tmp_path, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")
    )
    assert code == 2
    assert "chmod 600" in output


def test_the_coordinator_refuses_a_key_of_another_certificate(pki: Path, tmp_path: Path) -> None:
    key = str(pki / "workers" / "w1.key")
    code, output = coordinator(
        pki, tmp_path, "--tls-cert", str(pki / "server.pem"), "--tls-key", key
    )
    assert code == 2
    assert "does not belong to --tls-cert" in output


def test_the_coordinator_needs_both_cert_and_key(pki: Path, tmp_path: Path) -> None:
    code, output = coordinator(pki, tmp_path, "--client-ca", str(ca_files(pki).cert))
    assert code == 2
    assert "--tls-cert and --tls-key" in output


def test_the_worker_refuses_bad_tls_files(pki: Path) -> None:
    base = ("worker", "-c", "https://127.0.0.1:1", "--no-probe-torch")
    cert, key = str(pki / "workers" / "w1.pem"), str(pki / "workers" / "w1.key")
    code, output = run(*base, "--ca", str(pki / "none.pem"), "--cert", cert, "--key", key)
    assert code == 2
    assert "--ca" in output
    assert "none.pem: no such certificate file" in output
    (pki / "workers" / "w1.key").chmod(0o604)
    code, output = run(*base, "--cert", cert, "--key", key)
    assert code == 2
    assert "chmod 600" in output
    (pki / "workers" / "w1.key").chmod(0o600)
    code, output = run(*base, "--cert", cert, "--key", str(pki / "server.key"))
    assert code == 2
    assert "does not belong to --cert" in output


def test_a_worker_id_other_than_the_certificates_is_an_error(pki: Path) -> None:
    cert, key = str(pki / "workers" / "w1.pem"), str(pki / "workers" / "w1.key")
    code, output = run(
        "worker", "-c", "https://127.0.0.1:1", "--cert", cert, "--key", key, "--worker-id", "w2"
    )
    assert code == 2
    assert "conflicts with --cert" in output


def test_tls_files_need_an_https_coordinator(pki: Path) -> None:
    code, output = run("worker", "-c", "http://127.0.0.1:1", "--ca", str(ca_files(pki).cert))
    assert code == 2
    assert "need an https:// or grpcs:// coordinator" in output


def test_the_client_names_an_unusable_ca_file(tmp_path: Path) -> None:
    client = FleetClient("https://127.0.0.1:1", ca=tmp_path / "missing.pem")
    with pytest.raises(FleetError, match=r"missing\.pem .*cannot be used"):
        client.health()
    client.close()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing.pem", "no such file or directory"),
        ("junk.pem", "it holds no PEM certificate"),
        ("a-directory", "is a directory"),
    ],
)
def test_a_client_commands_ca_that_cannot_be_used_is_one_line_naming_it(
    tmp_path: Path, name: str, why: str
) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    (tmp_path / "a-directory").mkdir()
    ca = tmp_path / name
    for command in (["tasks"], ["workers", "--json"], ["tokens", "list"], ["sql", "SELECT 1"]):
        code, output = run(*command, "-c", "https://127.0.0.1:1", "--ca", str(ca))
        assert code == 2, (command, output)
        (line,) = output.strip().splitlines()
        assert str(ca) in line, command
        assert why in line, command
        assert "--ca" in line, command


def test_the_ca_comes_from_testfleet_ca_without_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTFLEET_CA", str(tmp_path / "from-env.pem"))
    code, output = run("tasks", "-c", "https://127.0.0.1:1")
    assert code == 2
    assert "from-env.pem" in output


def test_client_commands_offer_ca_in_their_help() -> None:
    for command in (["tasks"], ["submit"], ["sql"], ["tokens", "list"], ["results", "compare"]):
        code, output = run(*command, "--help")
        assert code == 0, command
        assert "--ca" in output, command


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("grpc://127.0.0.1", "has no port: give the port the coordinator's --grpc-port serves"),
        ("grpcs://127.0.0.1:8701/api", "no path or query"),
        ("https://127.0.0.1:1,grpc://:5", "has no host name"),
    ],
)
def test_a_bad_grpc_coordinator_address_stops_the_worker_in_one_line(
    address: str, says: str
) -> None:
    code, output = run("worker", "-c", address, "--worker-id", "w1")
    assert code == 2
    assert says in output


def test_grpcs_needs_the_tls_files_checked_as_https_does(pki: Path, tmp_path: Path) -> None:
    code, output = run(
        "worker",
        "-c",
        "grpcs://127.0.0.1:1",
        "--cert",
        str(tmp_path / "missing.pem"),
        "--key",
        str(tmp_path / "missing.key"),
    )
    assert code == 2
    assert "missing.pem" in output


def test_the_grpc_port_must_differ_from_the_http_port(pki: Path, tmp_path: Path) -> None:
    code, output = coordinator(pki, tmp_path, "--grpc-port", "1")
    assert code == 2
    assert "--grpc-port 1 is also --port" in output


def test_protobuf_frames_need_grpc_addresses() -> None:
    code, output = run(
        "worker", "-c", "https://127.0.0.1:1,grpc://127.0.0.1:2", "--codec", "protobuf"
    )
    assert code == 2
    assert "--codec protobuf travels over gRPC only" in output
