"""A small synchronous client for the coordinator's REST API.

Callers: the CLI, ``testfleet demo``, benchmarks and integration tests. Every
error from the coordinator becomes a :class:`FleetError` carrying the server's
code and message, so the CLI can print what was wrong and exit non-zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_COORDINATOR = "http://127.0.0.1:8700"
COORDINATOR_ENV = "TESTFLEET_COORDINATOR"


def coordinator_url(explicit: str | None = None) -> str:
    """``--coordinator``, else ``$TESTFLEET_COORDINATOR``, else the local default."""
    return (explicit or os.environ.get(COORDINATOR_ENV) or DEFAULT_COORDINATOR).rstrip("/")


def _segment(value: str) -> str:
    """``value`` as one path segment: an id with ``/`` or ``..`` in it must name
    that id, never another route."""
    return quote(value, safe="")


class FleetError(Exception):
    """The coordinator refused a request, or could not be reached."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "unreachable", details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []


class FleetClient:
    """REST calls under ``/api/v1``; one HTTP connection pool per client."""

    def __init__(self, base_url: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = coordinator_url(base_url)
        self._http = httpx.Client(base_url=self.base_url + "/api/v1", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FleetClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise FleetError(
                f"cannot reach the coordinator at {self.base_url}: {exc}. Is it running? "
                f"Set --coordinator or ${COORDINATOR_ENV}."
            ) from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise FleetError(
                    error["message"],
                    status=response.status_code,
                    code=error.get("code", "error"),
                    details=error.get("details"),
                )
            except (ValueError, KeyError, TypeError):
                raise FleetError(
                    f"HTTP {response.status_code}: {response.text[:500]}",
                    status=response.status_code,
                    code="http_error",
                ) from None
        return response.json()

    def submit(self, documents: dict[str, Any] | Sequence[dict[str, Any]]) -> list[str]:
        """Submit one task document or a list; returns the accepted ids (all or none)."""
        body = documents if isinstance(documents, dict) else list(documents)
        answer = self._call("POST", "/tasks", json=body)
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
        result: dict[str, Any] = self._call("GET", "/tasks", params=params)
        return result

    def get_task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/tasks/{_segment(task_id)}")
        return result

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/tasks/{_segment(task_id)}/cancel")
        return result

    def cancel_many(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        """Cancel tasks in one request (the coordinator applies it as one step);
        returns the ids under ``cancelled``, ``already_finished`` and ``not_found``."""
        answer = self._call("POST", "/tasks/cancel", json={"task_ids": list(task_ids)})
        return {key: list(answer[key]) for key in ("cancelled", "already_finished", "not_found")}

    def workers(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/workers")["workers"])

    def drain(self, worker_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/workers/{_segment(worker_id)}/drain")
        return result

    def undrain(self, worker_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/workers/{_segment(worker_id)}/undrain")
        return result

    def test_run(self, run_id: str, *, after_seq: int = 0) -> dict[str, Any]:
        """A pytest run's chunk tasks and the tests recorded after ``after_seq``."""
        result: dict[str, Any] = self._call(
            "GET", f"/test-runs/{_segment(run_id)}", params={"after_seq": after_seq}
        )
        return result

    def test_durations(self, project: str) -> dict[str, float]:
        """Recent median seconds per node id of ``project`` (a ProjectSource key)."""
        answer = self._call("GET", "/tests/durations", params={"project": project})
        return {str(k): float(v) for k, v in answer["durations"].items()}

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
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
        result: dict[str, Any] = self._call("GET", "/results/compare", params=params)
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
        result: dict[str, Any] = self._call("GET", "/results/history", params=params)
        return result

    def benchmark_models(self) -> list[str]:
        """Models that have benchmark results (``GET /results/models``)."""
        return list(self._call("GET", "/results/models")["models"])

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/health")
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
