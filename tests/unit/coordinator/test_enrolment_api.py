"""``POST /api/v1/workers/enrol`` on a real app, in-process, on a fake clock.

An enrolment token and a CSR buy one certificate for the token's worker id,
once; a second use, an expired token, a bad CSR and a coordinator without
``--enrol-ca-dir`` are refused and (but the last) audited. Enrolment tokens'
lifetimes through ``POST /api/v1/tokens`` too.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from testfleet.coordinator.app import create_app
from testfleet.coordinator.worker_credentials import certificate_credential
from testfleet.coordinator.worker_identity import revocation_refusal
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.pki import CertificateAuthority, init_ca, load_ca
from testfleet.security.tls import worker_id_of_certificate
from testfleet.security.tokens import Role
from testfleet.testing import FakeClock

T0 = 1_800_000_000.0
ENROL = "/api/v1/workers/enrol"


@dataclass
class Coordinator:
    client: TestClient
    clock: FakeClock
    ca: CertificateAuthority
    secrets: dict[str, str]
    ids: dict[str, str]

    def enrol(self, who: str, csr: str) -> Any:
        headers = {"Authorization": f"Bearer {self.secrets[who]}"}
        return self.client.post(ENROL, json={"csr": csr}, headers=headers)

    def admin(self, method: str, url: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secrets['admin']}"}
        return self.client.request(method, url, headers=headers, **kwargs)

    def audit(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.admin("GET", "/api/v1/audit").json()["events"]
        return events


def csr_pem(key: ec.EllipticCurvePrivateKey | None = None, name: str = "some-other-id") -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def moment(iso: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))


def start(tmp_path: Path, *, enrolment: bool = True) -> Iterator[Coordinator]:
    path = tmp_path / "enrol.duckdb"
    secrets, ids = {}, {}
    for who, role, expires in (
        ("admin", Role.ADMIN, None),
        ("gpu-7", Role.ENROL, 3600.0),
        ("gpu-8", Role.ENROL, 3600.0),
        ("worker-tok", Role.WORKER, None),
    ):
        issued = create_token_in_file(path, who, role, expires_in_seconds=expires, now=T0)
        secrets[who], ids[who] = issued.secret, issued.record.token_id
    init_ca(tmp_path / "pki")
    ca = load_ca(tmp_path / "pki")
    clock = FakeClock(T0)
    app = create_app(path, clock=clock, enrolment_ca=ca if enrolment else None)
    with TestClient(app) as client:
        yield Coordinator(client, clock, ca, secrets, ids)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    yield from start(tmp_path)


def test_a_token_and_a_csr_buy_a_certificate_for_the_tokens_worker(
    coordinator: Coordinator,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    answer = coordinator.enrol("gpu-7", csr_pem(key, name="admin"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["worker_id"] == "gpu-7"
    assert body["ca"] == coordinator.ca.cert_pem
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    assert worker_id_of_certificate(cert) == "gpu-7"
    cert.verify_directly_issued_by(coordinator.ca.cert)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)

    (enrolled,) = [e for e in coordinator.audit() if e["kind"] == "worker_enrolled"]
    assert enrolled["outcome"] == "allowed"
    assert enrolled["credential_id"] == coordinator.ids["gpu-7"]
    assert enrolled["remote"]
    assert enrolled["detail"] == {"worker_id": "gpu-7", "serial": format(cert.serial_number, "x")}
    listed = {t["name"]: t for t in coordinator.admin("GET", "/api/v1/tokens").json()["tokens"]}
    assert listed["gpu-7"]["revoked"] is not None  # used up
    assert listed["gpu-8"]["revoked"] is None


def test_a_second_use_is_refused_and_audited(coordinator: Coordinator) -> None:
    assert coordinator.enrol("gpu-7", csr_pem()).status_code == 200
    again = coordinator.enrol("gpu-7", csr_pem())
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "unauthenticated"
    assert "enrolment token already used" in again.json()["error"]["message"]
    refused = [e for e in coordinator.audit() if e["outcome"] == "refused"]
    assert refused[-1]["kind"] == "auth_failed"
    assert refused[-1]["credential_id"] == coordinator.ids["gpu-7"]
    assert refused[-1]["detail"] == {"reason": "revoked", "request": f"POST {ENROL}"}


def test_a_use_that_loses_the_race_is_refused_and_audited(coordinator: Coordinator) -> None:
    """Two requests pass the token check, the other one uses the token first:
    the store's one transaction refuses this one (no certificate leaves)."""
    # A bad CSR: the token is checked (and its row kept by the auth layer) but not used.
    assert coordinator.enrol("gpu-7", "junk").status_code == 422
    store = coordinator.client.app.state.store  # type: ignore[attr-defined]
    won = store.consume_token(coordinator.ids["gpu-7"], Role.ENROL, T0 + 1)
    assert won is TokenConsumption.CONSUMED
    lost = coordinator.enrol("gpu-7", csr_pem())
    assert lost.status_code == 401
    assert lost.headers["WWW-Authenticate"] == "Bearer"
    assert lost.json()["error"]["message"].startswith("enrolment token already used")
    assert "certificate" not in lost.text
    last = coordinator.audit()[-1]
    assert last["kind"] == "worker_enrol_refused"
    assert last["detail"] == {"worker_id": "gpu-7", "reason": "already_used"}
    assert not [e for e in coordinator.audit() if e["kind"] == "worker_enrolled"]


def test_an_expired_token_is_refused_and_audited(coordinator: Coordinator) -> None:
    coordinator.clock.advance(3600)
    refused = coordinator.enrol("gpu-7", csr_pem())
    assert refused.status_code == 401
    assert "expired" in refused.json()["error"]["message"]
    last = coordinator.audit()[-1]
    assert (last["kind"], last["detail"]["reason"]) == ("auth_failed", "expired")
    assert last["detail"]["request"] == f"POST {ENROL}"


@pytest.mark.parametrize(
    ("csr", "said"),
    [
        ("junk", "not a PEM certificate signing request"),
        (
            csr_pem(ec.generate_private_key(ec.SECP384R1())),
            "use P-256",
        ),
    ],
    ids=["junk", "p384"],
)
def test_a_bad_csr_is_refused_audited_and_the_token_kept(
    coordinator: Coordinator, csr: str, said: str
) -> None:
    refused = coordinator.enrol("gpu-7", csr)
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert said in error["message"]
    assert error["details"][0]["field"] == "body.csr"
    last = coordinator.audit()[-1]
    assert (last["kind"], last["outcome"]) == ("worker_enrol_refused", "refused")
    assert last["detail"]["reason"] == "bad_csr"
    # The token is still good: the worker fixes its CSR and tries again.
    assert coordinator.enrol("gpu-7", csr_pem()).status_code == 200


def test_an_oversized_body_is_refused_before_parsing(coordinator: Coordinator) -> None:
    refused = coordinator.enrol("gpu-7", "x" * 100_000)
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["field"] == "body.csr"


def test_only_an_enrol_token_may_enrol(coordinator: Coordinator) -> None:
    for who in ("admin", "worker-tok"):
        refused = coordinator.enrol(who, csr_pem())
        assert refused.status_code == 403, who
    assert coordinator.client.post(ENROL, json={"csr": csr_pem()}).status_code == 401


def test_without_an_enrolment_ca_the_route_names_the_flag(tmp_path: Path) -> None:
    for coordinator in start(tmp_path, enrolment=False):
        refused = coordinator.enrol("gpu-7", csr_pem())
        assert refused.status_code == 404
        assert "--enrol-ca-dir" in refused.json()["error"]["message"]
        # Nothing was used up.
        (token,) = [
            t
            for t in coordinator.admin("GET", "/api/v1/tokens").json()["tokens"]
            if t["name"] == "gpu-7"
        ]
        assert token["revoked"] is None


def test_an_enrol_token_through_the_api_lives_an_hour_unless_told_and_a_week_at_most(
    coordinator: Coordinator,
) -> None:
    made = coordinator.admin("POST", "/api/v1/tokens", json={"name": "gpu-9", "role": "enrol"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    lifetime = moment(token["expires"]) - moment(token["created"])
    assert lifetime == datetime.timedelta(hours=1)
    shorter = coordinator.admin(
        "POST",
        "/api/v1/tokens",
        json={"name": "gpu-9", "role": "enrol", "expires_in_seconds": 600},
    )
    assert shorter.status_code == 201
    too_long = coordinator.admin(
        "POST",
        "/api/v1/tokens",
        json={"name": "gpu-9", "role": "enrol", "expires_in_seconds": 8 * 86400},
    )
    assert too_long.status_code == 422
    error = too_long.json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["details"][0]["field"] == "body.expires_in_seconds"
    assert "at most 7 days" in error["message"]
    # Other roles keep "until revoked" and long lives.
    viewer = coordinator.admin(
        "POST",
        "/api/v1/tokens",
        json={"name": "v", "role": "viewer", "expires_in_seconds": 30 * 86400},
    )
    assert viewer.status_code == 201
    listed = {t["name"]: t for t in coordinator.admin("GET", "/api/v1/tokens").json()["tokens"]}
    assert listed["v"]["expires"] is not None


def test_enrolling_after_a_revocation_gives_a_certificate_the_channel_admits(
    coordinator: Coordinator,
) -> None:
    """A revoked id admits only certificates valid from after the revocation;
    the enrol route starts the certificate then, not five minutes before now."""
    revoked = coordinator.admin("POST", "/api/v1/workers/gpu-9/revoke", json={"reason": "lost"})
    assert revoked.status_code == 200, revoked.text
    revoked_at = coordinator.client.app.state.store.worker_revocations()["gpu-9"]  # type: ignore[attr-defined]
    coordinator.clock.advance(60)
    made = coordinator.admin(
        "POST", "/api/v1/tokens", json={"name": "gpu-9", "role": "enrol"}
    ).json()
    coordinator.secrets["gpu-9"] = made["secret"]
    answer = coordinator.enrol("gpu-9", csr_pem())
    assert answer.status_code == 200, answer.text
    der = x509.load_pem_x509_certificate(answer.json()["certificate"].encode()).public_bytes(
        serialization.Encoding.DER
    )
    credential = certificate_credential(der)
    assert credential is not None
    assert credential.issued_at > revoked_at
    assert revocation_refusal(credential, revoked_at) is None
