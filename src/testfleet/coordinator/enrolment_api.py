"""``POST /api/v1/workers/enrol``: a new worker trades a one-time token and a CSR
for its certificate.

Callers: ``testfleet worker --enrol-token ... --cert-dir DIR`` (through
:meth:`~testfleet.client.FleetClient.enrol_worker`, see
``worker/enrolment.py``), once per worker. The router is included by
:func:`~testfleet.coordinator.app.create_app` always; it signs only when the
coordinator was started with ``--enrol-ca-dir`` (and says so otherwise).

What a request goes through, in this order, and why:

1. ``require(Role.ENROL)``: an enrolment token, valid, not expired, not used.
   Refused ones are audited by the auth dependency like on every route.
2. The CSR: a PEM request whose self-signature verifies, on an EC P-256 or
   RSA >= 2048 key (``pki.csr_key``). Checked before the token is used, so a
   worker with a broken CSR can try again with the same token; refused ones
   are audited (``worker_enrol_refused``).
3. The certificate is made (``pki.worker_certificate``, the recipe of ``certs
   worker``) for the *token's* worker id; whatever the CSR's subject says is
   ignored, so a token for ``gpu-7`` can only ever make ``gpu-7``.
4. The token is used: checked and marked revoked in one store transaction,
   together with the ``worker_enrolled`` audit event (``Auth.consume``). Of
   two requests racing with one token only one gets past this; the other is
   a 401 and audited. Signing comes before it so that nothing after the
   token is spent can fail: a spent token always got its certificate out.
   A certificate made for a request that lost the race is dropped unseen.
"""

from __future__ import annotations

import asyncio
import datetime
import math
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from testfleet.coordinator.api_errors import (
    FORBIDDEN,
    INVALID_PARAMETER,
    MALFORMED_BODY,
    STORAGE_ERROR,
    UNAUTHENTICATED,
    ApiRefusal,
    AuthRefusedError,
    refusals,
)
from testfleet.coordinator.api_models import ErrorCode, FieldProblem, ResponseModel
from testfleet.coordinator.auth import Auth, Principal, require
from testfleet.security.audit import AuditKind, AuditOutcome
from testfleet.security.enrolment import TokenConsumption
from testfleet.security.pki import (
    MAX_CSR_BYTES,
    WORKER_DAYS,
    CertificateAuthority,
    PkiError,
    csr_key,
    load_csr,
    worker_certificate,
)
from testfleet.security.tokens import Role

ENROL_PATH = "/workers/enrol"
#: The flag that turns enrolment on (named in the refusal when it is off).
ENROL_FLAG = "--enrol-ca-dir"

ENROLMENT_OFF = ApiRefusal(
    404,
    ErrorCode.NOT_FOUND,
    f"This coordinator does not enrol workers: it was started without {ENROL_FLAG}.",
)

EnrolToken = Annotated[Principal, Depends(require(Role.ENROL))]


class EnrolRequest(BaseModel):
    """The body of ``POST /api/v1/workers/enrol``."""

    model_config = ConfigDict(extra="forbid")

    csr: str = Field(
        min_length=1,
        max_length=MAX_CSR_BYTES,
        description="A PEM certificate signing request on the worker's own key (EC P-256, "
        "or RSA of 2048 bits or more). Its subject is ignored: the certificate names the "
        "worker the enrolment token was made for.",
    )


class EnrolledWorker(ResponseModel):
    certificate: str = Field(description="The worker's certificate (PEM, clientAuth).")
    ca: str = Field(description="The CA certificate that signed it (PEM).")
    worker_id: str = Field(description="The worker id the certificate names (the token's name).")


def build_enrolment_router(auth: Auth, ca: CertificateAuthority | None) -> APIRouter:
    """The enrol route over ``auth``'s store, signing with ``ca`` (None: enrolment off)."""
    router = APIRouter(prefix="/api/v1", responses=refusals(UNAUTHENTICATED, FORBIDDEN))

    @router.post(
        ENROL_PATH,
        response_model=EnrolledWorker,
        responses=refusals(ENROLMENT_OFF, MALFORMED_BODY, INVALID_PARAMETER, STORAGE_ERROR),
        summary="Enrol a worker: a one-time enrolment token and a CSR for its certificate",
    )
    async def enrol(request: EnrolRequest, principal: EnrolToken) -> EnrolledWorker | JSONResponse:
        worker_id = principal.name
        if ca is None:
            return ENROLMENT_OFF.response(
                f"this coordinator does not enrol workers; start it with {ENROL_FLAG} DIR "
                "(a CA made by `testfleet certs init`), or issue the worker a certificate "
                "with `testfleet certs worker`"
            )
        try:
            key = csr_key(load_csr(request.csr))
            certificate = worker_certificate(
                ca,
                key,
                worker_id,
                days=WORKER_DAYS,
                not_before=await _after_revocation(auth, worker_id),
            )
        except PkiError as exc:  # a CsrError, or a token name no worker may have
            await auth.record(
                principal,
                AuditKind.WORKER_ENROL_REFUSED,
                {"worker_id": worker_id, "reason": "bad_csr", "problem": str(exc)},
                AuditOutcome.REFUSED,
            )
            return INVALID_PARAMETER.response(
                f"body.csr: {exc}",
                [FieldProblem(field="body.csr", problem=str(exc), type="csr")],
            )
        serial = format(certificate.serial_number, "x")
        enrolled = auth.event(
            principal, AuditKind.WORKER_ENROLLED, {"worker_id": worker_id, "serial": serial}
        )
        verdict = await auth.consume(principal.token_id, Role.ENROL, [enrolled])
        if verdict is not TokenConsumption.CONSUMED:
            await auth.record(
                principal,
                AuditKind.WORKER_ENROL_REFUSED,
                {"worker_id": worker_id, "reason": verdict.value},
                AuditOutcome.REFUSED,
            )
            raise AuthRefusedError(UNAUTHENTICATED, _REFUSED[verdict])
        return EnrolledWorker(
            certificate=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            ca=ca.cert_pem,
            worker_id=worker_id,
        )

    return router


_ASK = "ask an admin for a new one: testfleet tokens create --role enrol --name WORKER_ID"
#: Why a token valid a moment ago could not be used (another request won the race).
_REFUSED = {
    TokenConsumption.ALREADY_USED: f"enrolment token already used; {_ASK}",
    TokenConsumption.EXPIRED: f"the enrolment token has expired; {_ASK}",
    TokenConsumption.UNKNOWN: f"the enrolment token is not known to this coordinator; {_ASK}",
}


async def _after_revocation(auth: Auth, worker_id: str) -> datetime.datetime | None:
    """The second after ``worker_id`` was last revoked, or None if it never was.

    Revoking an id revoked every enrol token named by it, so a token that gets
    here for a revoked id was made afterwards: an admin letting the worker back.
    Its certificate must then start after the revocation, or the worker channel
    would refuse it as one issued before (testfleet backdates certificates by
    five minutes for clock skew)."""
    revoked_at = (await asyncio.to_thread(auth.store.worker_revocations)).get(worker_id)
    if revoked_at is None:
        return None
    return datetime.datetime.fromtimestamp(math.floor(revoked_at) + 1, tz=datetime.UTC)
