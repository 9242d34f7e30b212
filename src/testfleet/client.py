"""A small synchronous client for the coordinator's REST API.

Callers: the CLI, ``testfleet demo``, ``testfleet run`` / ``pytest --fleet``,
benchmarks and integration tests. Every error from the coordinator becomes a
:class:`FleetError` carrying the server's code and message, so the CLI can
print what was wrong and exit non-zero. An address that answers but is not a
testfleet coordinator (a web page, a proxy, some other JSON API) is a
:class:`FleetError` too, saying what it answered and never repeating the page.
"""

from __future__ import annotations

import os
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from testfleet.client_address import (
    API_PREFIX,
    COORDINATOR_ENV,
    DEFAULT_COORDINATOR,
    CoordinatorUrlError,
    FleetError,
    coordinator_url,
    normalize_coordinator_url,
)
from testfleet.coordinator_addresses import CoordinatorAddresses
from testfleet.domain.task_ids import TASK_ID_RULE, is_task_id
from testfleet.leader_requests import DEFAULT_ROUNDS, LeaderRequests, json_object
from testfleet.security.credentials import TOKEN_ENV, CredentialError, resolve_token

# Callers import these from here as well (the CLI, fleetrun, tests).
__all__ = [
    "API_PREFIX",
    "CA_ENV",
    "COORDINATOR_ENV",
    "DEFAULT_COORDINATOR",
    "CoordinatorUrlError",
    "FleetClient",
    "FleetError",
    "coordinator_url",
    "normalize_coordinator_url",
]

#: The CA file that verifies an https:// coordinator (``--ca`` of the commands).
CA_ENV = "TESTFLEET_CA"


def _task_segment(task_id: str) -> str:
    """``task_id`` as a path segment, or :class:`FleetError` for an id no task can
    have (said here: the coordinator could only answer that no route matched)."""
    if not is_task_id(task_id):
        raise FleetError(f"no task can have the id {task_id!r}: {TASK_ID_RULE}", code="not_found")
    return _segment(task_id)


def _segment(value: str) -> str:
    """``value`` as one path segment: an id with ``/`` or ``..`` in it must name
    that id, never another route."""
    return quote(value, safe="")


_json_object = json_object


@contextmanager
def _closing(response: httpx.Response) -> Iterator[httpx.Response]:
    """A streamed response, closed after the block (``httpx.Client.stream``'s job)."""
    try:
        yield response
    finally:
        response.close()


class FleetClient:
    """REST calls under ``/api/v1``; one HTTP connection pool per client.

    ``transport`` replaces the network (tests pass ``httpx.MockTransport``). A
    URL that :func:`normalize_coordinator_url` refuses does not raise here but
    on the first request, as an unreachable address does, so callers handle
    one error in one place. ``ca`` (else ``$TESTFLEET_CA``): the CA file that
    verifies an https:// coordinator, for a fleet with its own CA
    (``testfleet certs``); without it, the system's CAs.

    The URL may list several coordinators, comma-separated (failover on
    PostgreSQL): every call goes to the one that leads, following a standby's
    503 ``not_leader`` to the leader it names and moving past addresses that
    cannot be reached (:mod:`testfleet.leader_requests`). :attr:`base_url` is
    the address in use now.
    """

    def __init__(
        self,
        base_url: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
        ca: str | Path | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        rounds: int = DEFAULT_ROUNDS,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        """``ca`` (else ``$TESTFLEET_CA``) verifies an https coordinator. ``token``,
        else ``$TESTFLEET_TOKEN``, else the token file ``token_file`` (or
        ``$TESTFLEET_TOKEN_FILE``) is sent as ``Authorization: Bearer``. A CA file
        that cannot be used, or a token file readable by others, is refused on
        the first request, as a bad URL is. ``rounds`` and ``sleep``: how many full
        rounds of the addresses a call makes before giving up on finding the
        leader, and what paces them (tests pass a recorder)."""
        self._url_error: FleetError | None = None
        ca = ca or os.environ.get(CA_ENV) or None
        verify: ssl.SSLContext | bool = True
        if ca is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                # Raised on the first request, like a bad URL (see the class docstring).
                why = (
                    "it holds no PEM certificate"
                    if isinstance(exc, ssl.SSLError)
                    else (exc.strerror or str(exc)).lower()
                )
                self._url_error = CoordinatorUrlError(
                    f"the CA file {ca} (--ca / ${CA_ENV}) cannot be used: {why}; pass the "
                    "PEM file of the CA that issued the coordinator's certificate"
                )
        try:
            addresses = CoordinatorAddresses.parse(coordinator_url(base_url))
        except CoordinatorUrlError as exc:
            self._url_error = exc
            addresses = CoordinatorAddresses([DEFAULT_COORDINATOR])
        headers: dict[str, str] = {}
        try:
            secret = resolve_token(token, token_file)
        except CredentialError as exc:
            self._url_error = self._url_error or FleetError(str(exc), code="bad_credentials")
            secret = None
        if secret is not None:
            headers["Authorization"] = f"Bearer {secret}"
        self._http = httpx.Client(
            timeout=timeout, transport=transport, headers=headers, verify=verify
        )
        self._leader = LeaderRequests(self._http, addresses, rounds=rounds, sleep=sleep)

    @property
    def base_url(self) -> str:
        """The coordinator address in use now (the leader, once one has answered)."""
        return self._leader.addresses.current

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every coordinator address this client knows: those given, then leaders
        that standbys named."""
        return self._leader.addresses.all

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, expect: tuple[str, ...], **kwargs: Any) -> Any:
        """One request; the answer's JSON object, which must hold the ``expect``ed keys
        (how an answer from something that is not a testfleet coordinator is told apart)."""
        if self._url_error is not None:
            raise self._url_error
        response = self._leader.send(method, path, **kwargs)
        body = _json_object(response)
        if response.status_code >= 400:
            raise self._refusal(response, method, path, body)
        if body is None or any(key not in body for key in expect):
            raise self._not_testfleet(response, method, path, body)
        return body

    def _refusal(
        self, response: httpx.Response, method: str, path: str, body: dict[str, Any] | None
    ) -> FleetError:
        """The error an answer of 400 or more stands for: the coordinator's own
        ``{"error": ...}``, or what else the address answered."""
        error = None if body is None else body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
            if response.status_code == 401 and "Authorization" not in self._http.headers:
                # The coordinator's words are for any HTTP client; this one knows
                # why no header went out and what its user can pass.
                message = (
                    "no token given, and the coordinator needs one: "
                    f"pass --token, set ${TOKEN_ENV} or --token-file"
                )
            return FleetError(
                message,
                status=response.status_code,
                code=str(error.get("code", "error")),
                details=error.get("details"),
            )
        if isinstance(error, str):  # /health of a coordinator whose loop failed
            return FleetError(
                f"the coordinator at {self.base_url} has failed: {error}",
                status=response.status_code,
                code="failed",
            )
        return self._not_testfleet(response, method, path, body)

    def _not_testfleet(
        self, response: httpx.Response, method: str, path: str, body: dict[str, Any] | None
    ) -> FleetError:
        """Say what the address answered instead of a testfleet answer, never the page
        itself (a proxy's or another server's HTML would bury the point)."""
        status = response.status_code
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        answered = f"HTTP {status} {content_type or 'with no content type'}"
        if body is not None:
            answered += " without the fields a testfleet coordinator sends"
        request = f"{method} {API_PREFIX}{path}"
        where = f"Check --coordinator or ${COORDINATOR_ENV}."
        if 300 <= status < 400:
            location = response.headers.get("location", "?")
            message = (
                f"{self.base_url} answered {request} with HTTP {status}, a redirect to "
                f"{location}: give the coordinator's own address (https:// if it moved there). "
                + where
            )
        elif status >= 500:
            message = (
                f"the coordinator at {self.base_url} failed: it answered {answered} to "
                f"{request}, with no testfleet error; see its log (or that of a proxy in "
                "front of it)."
            )
        else:
            message = (
                f"{self.base_url} is not a testfleet coordinator (it answered {answered} "
                f"to {request}). {where}"
            )
        return FleetError(message, status=status, code="not_testfleet")

    def submit(self, documents: dict[str, Any] | Sequence[dict[str, Any]]) -> list[str]:
        """Submit one task document or a list; returns the accepted ids (all or none)."""
        body = documents if isinstance(documents, dict) else list(documents)
        answer = self._call("POST", "/tasks", expect=("task_ids",), json=body)
        return list(answer["task_ids"])

    def list_tasks(
        self,
        *,
        statuses: Iterable[str] = (),
        task_type: str | None = None,
        worker_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        params: list[tuple[str, str | int]] = [("status", s) for s in statuses]
        if task_type:
            params.append(("type", task_type))
        if worker_id:
            params.append(("worker_id", worker_id))
        params += [("limit", limit), ("offset", offset)]
        result: dict[str, Any] = self._call(
            "GET", "/tasks", expect=("tasks", "total"), params=params
        )
        return result

    def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/tasks/{_task_segment(task_id)}", expect=("task",)
        )
        return result

    def task_log(self, task_id: str, *, after: int = 0) -> dict[str, Any]:
        """A task's live log tail after seq ``after`` (``chunks``, ``next_after``,
        ``running``, ``finished``), or its stored ``final_log`` once it has
        finished; ``testfleet logs`` polls it with the ``next_after`` it got."""
        result: dict[str, Any] = self._call(
            "GET",
            f"/tasks/{_task_segment(task_id)}/log",
            expect=("chunks", "next_after", "finished"),
            params={"after": after},
        )
        return result

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/tasks/{_task_segment(task_id)}/cancel", expect=("task_id",)
        )
        return result

    def cancel_many(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        """Cancel tasks in one request (the coordinator applies it as one step);
        returns the ids under ``cancelled``, ``already_finished`` and ``not_found``."""
        answer = self._call(
            "POST",
            "/tasks/cancel",
            expect=("cancelled", "already_finished", "not_found"),
            json={"task_ids": list(task_ids)},
        )
        return {key: list(answer[key]) for key in ("cancelled", "already_finished", "not_found")}

    def workers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/workers", expect=("workers",))["workers"])

    def drain(self, worker_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/workers/{_segment(worker_id)}/drain", expect=("worker_id",)
        )
        return result

    def undrain(self, worker_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/workers/{_segment(worker_id)}/undrain", expect=("worker_id",)
        )
        return result

    def revoke_worker(self, worker_id: str, reason: str | None = None) -> dict[str, Any]:
        """Revoke a worker (admin only): its socket is closed, its tokens revoked and
        its older credentials refused; the answer names the tokens and its status."""
        result: dict[str, Any] = self._call(
            "POST",
            f"/workers/{_segment(worker_id)}/revoke",
            expect=("worker_id", "tokens_revoked"),
            json={"reason": reason},
        )
        return result

    def alerts(self, *, state: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Alerts firing, pending and resolved, and the latest notification results."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        result: dict[str, Any] = self._call(
            "GET", "/alerts", expect=("alerts", "notifications"), params=params
        )
        return result

    def test_run(self, run_id: str, *, after_seq: int = 0) -> dict[str, Any]:
        """A pytest run's chunk tasks and the tests recorded after ``after_seq``."""
        result: dict[str, Any] = self._call(
            "GET",
            f"/test-runs/{_segment(run_id)}",
            expect=("tasks", "tests"),
            params={"after_seq": after_seq},
        )
        return result

    def test_durations(self, project: str) -> dict[str, float]:
        """Recent median seconds per node id of ``project`` (a ProjectSource key)."""
        answer = self._call(
            "GET", "/tests/durations", expect=("durations",), params={"project": project}
        )
        return {str(k): float(v) for k, v in answer["durations"].items()}

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats", expect=("tasks", "workers"))
        return result

    def benchmark_compare(
        self,
        model: str,
        *,
        precision: str | None = None,
        hardware: str | None = None,
        since: str | None = None,
    ) -> dict[str, Any]:
        """The latest benchmark figures of ``model`` per hardware, device, precision and
        batch size (``GET /results/compare``); ``since`` is an ISO 8601 time."""
        given = {"model": model, "precision": precision, "hardware": hardware, "since": since}
        params = {name: value for name, value in given.items() if value is not None}
        result: dict[str, Any] = self._call(
            "GET", "/results/compare", expect=("rows",), params=params
        )
        return result

    def benchmark_history(
        self,
        model: str,
        *,
        batch_size: int | None = None,
        precision: str | None = None,
        hardware: str | None = None,
        limit: int = 1000,
    ) -> dict[str, Any]:
        """Every benchmark run of ``model``, oldest first (``GET /results/history``)."""
        given = {
            "model": model,
            "batch_size": batch_size,
            "precision": precision,
            "hardware": hardware,
            "limit": limit,
        }
        params = {name: value for name, value in given.items() if value is not None}
        result: dict[str, Any] = self._call(
            "GET", "/results/history", expect=("rows",), params=params
        )
        return result

    def regressions(
        self, *, include_resolved: bool = False, kind: str | None = None
    ) -> dict[str, Any]:
        """Benchmark figures and test durations that got worse (``GET /regressions``):
        ``regressions`` (open ones; resolved too when asked) and ``open``."""
        params: dict[str, Any] = {"include_resolved": include_resolved}
        if kind is not None:
            params["kind"] = kind
        result: dict[str, Any] = self._call(
            "GET", "/regressions", expect=("regressions",), params=params
        )
        return result

    def benchmark_models(self) -> list[str]:
        """Models that have benchmark results (``GET /results/models``)."""
        return list(self._call("GET", "/results/models", expect=("models",))["models"])

    def sql(
        self, query: str, *, max_rows: int | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Run one read-only query on the coordinator's database (``POST /sql``):
        ``columns``, ``rows``, ``row_count``, ``truncated``, ``elapsed_seconds``."""
        body: dict[str, Any] = {"query": query}
        if max_rows is not None:
            body["max_rows"] = max_rows
        if timeout is not None:
            body["timeout_seconds"] = timeout
        result: dict[str, Any] = self._call(
            "POST", "/sql", expect=("columns", "rows", "truncated"), json=body
        )
        return result

    def export(self, table: str, destination: Path) -> int:
        """Download ``table`` as a Parquet file to ``destination`` (``GET /export/TABLE``);
        returns its row count. A partly written file is removed on failure."""
        if self._url_error is not None:
            raise self._url_error
        path = f"/export/{_segment(table)}"
        try:
            with _closing(self._leader.send("GET", path, stream=True)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refusal(response, "GET", path, _json_object(response))
                with destination.open("wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                rows = response.headers.get("x-testfleet-rows", "")
        except httpx.HTTPError as exc:
            destination.unlink(missing_ok=True)
            raise FleetError(
                f"cannot reach the coordinator at {self.base_url}: {exc}. Is it running? "
                f"Set --coordinator or ${COORDINATOR_ENV}."
            ) from None
        if not rows.isdigit():
            destination.unlink(missing_ok=True)
            raise FleetError(
                f"{self.base_url} is not a testfleet coordinator (GET {API_PREFIX}{path} "
                "answered without the row count a testfleet coordinator sends)"
            )
        return int(rows)

    def backup(self, destination: Path) -> dict[str, str]:
        """Download a consistent snapshot of the coordinator's database to ``destination``
        (``POST /admin/backup``, admin only); returns what the coordinator says about
        it (``tasks``, ``schema_version``, ``encrypted``, ``seconds``). Written to a
        temporary file beside ``destination`` and renamed when complete, so
        ``destination`` is never half a snapshot."""
        if self._url_error is not None:
            raise self._url_error
        path = "/admin/backup"
        partial = destination.with_name(f".{destination.name}.partial")
        try:
            with _closing(self._leader.send("POST", path, stream=True, timeout=None)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._refusal(response, "POST", path, _json_object(response))
                with partial.open("wb") as sink:
                    for chunk in response.iter_bytes():
                        sink.write(chunk)
                headers = response.headers
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise FleetError(
                f"cannot reach the coordinator at {self.base_url}: {exc}. Is it running? "
                f"Set --coordinator or ${COORDINATOR_ENV}."
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if "x-testfleet-schema-version" not in headers:
            partial.unlink(missing_ok=True)
            raise FleetError(
                f"{self.base_url} is not a testfleet coordinator (POST {API_PREFIX}{path} "
                "answered without the schema version a testfleet coordinator sends)"
            )
        partial.replace(destination)
        return {
            "tasks": headers.get("x-testfleet-tasks", ""),
            "schema_version": headers["x-testfleet-schema-version"],
            "encrypted": headers.get("x-testfleet-encrypted", ""),
            "seconds": headers.get("x-testfleet-snapshot-seconds", ""),
        }

    def create_token(
        self, name: str, role: str, expires_in_seconds: float | None = None
    ) -> dict[str, Any]:
        """A new token (admin only): ``{"token": {...}, "secret": "tfk_..."}``."""
        body = {"name": name, "role": role, "expires_in_seconds": expires_in_seconds}
        result: dict[str, Any] = self._call("POST", "/tokens", expect=("secret",), json=body)
        return result

    def list_tokens(self) -> list[dict[str, Any]]:
        tokens: list[dict[str, Any]] = self._call("GET", "/tokens", expect=("tokens",))["tokens"]
        return tokens

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        path = f"/tokens/{_segment(token_id)}/revoke"
        result: dict[str, Any] = self._call("POST", path, expect=("token_id",))
        return result

    def enrol_worker(self, csr_pem: str) -> dict[str, Any]:
        """Trade this client's token (an enrolment token, made by ``tokens create
        --role enrol``; used up by this call) and a PEM CSR for a worker
        certificate: ``{"certificate": PEM, "ca": PEM, "worker_id": ...}``.
        Called by ``testfleet worker --enrol-token`` (``worker/enrolment.py``)."""
        result: dict[str, Any] = self._call(
            "POST",
            "/workers/enrol",
            expect=("certificate", "ca", "worker_id"),
            json={"csr": csr_pem},
        )
        return result

    def audit(
        self, *, since: str | None = None, actor: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The audit trail (admin only), oldest first; ``since`` is ISO 8601."""
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        if actor is not None:
            params["actor"] = actor
        events: list[dict[str, Any]] = self._call(
            "GET", "/audit", expect=("events",), params=params
        )["events"]
        return events

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health", expect=("status",))
        return result

    def wait_until_healthy(self, timeout: float = 30.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll ``/health`` until it answers (used right after starting a coordinator)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except FleetError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(poll)
