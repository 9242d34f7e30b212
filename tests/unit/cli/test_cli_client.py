"""The REST client's view of addresses: URL forms people type, and servers that are
not a testfleet coordinator (``httpx.MockTransport`` plays the server)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.client import (
    CoordinatorUrlError,
    FleetClient,
    FleetError,
    coordinator_url,
    normalize_coordinator_url,
)

HTML_PAGE = "<!doctype html><html><body><h1>Welcome to nginx!</h1>SECRET-PAGE-TEXT</body></html>"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:8700", "http://h:8700"),
        ("  http://h:8700/ ", "http://h:8700"),
        ("localhost:8700", "http://localhost:8700"),
        ("10.0.0.5:8700", "http://10.0.0.5:8700"),
        ("https://fleet.example", "https://fleet.example"),
        ("http://h:8700/api/v1", "http://h:8700"),
        ("http://h:8700/api/v1/", "http://h:8700"),
        ("https://proxy.example/testfleet/api/v1", "https://proxy.example/testfleet"),
        ("https://proxy.example/testfleet/", "https://proxy.example/testfleet"),
    ],
)
def test_url_forms_that_are_accepted(given: str, expected: str) -> None:
    assert normalize_coordinator_url(given) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("", "empty"),
        ("ftp://h:8700", "use http:// or https://, not ftp://"),
        ("ws://h:8700", "use http:// or https://, not ws://"),
        ("http://h:99999", "the port is not a number"),
        ("http://:8700", "has no host name"),
        (
            "http://h:8700/api/v1/tasks",
            "points inside the API; give the coordinator's address instead: http://h:8700",
        ),
        ("http://h:8700/?x=1", "drop the ?query"),
    ],
)
def test_url_forms_that_are_refused_say_what_to_write(given: str, says: str) -> None:
    with pytest.raises(CoordinatorUrlError) as raised:
        normalize_coordinator_url(given)
    assert says in raised.value.message
    assert "http://" in raised.value.message  # every refusal shows what to write


def test_the_environment_variable_is_normalised_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTFLEET_COORDINATOR", "fleet.lan:8700/api/v1")
    assert coordinator_url() == "http://fleet.lan:8700"


def answering(response: Callable[[httpx.Request], httpx.Response]) -> FleetClient:
    return FleetClient("http://other.example:8700", transport=httpx.MockTransport(response))


def test_a_client_for_a_refused_url_raises_on_its_first_request() -> None:
    asked: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, json={"tasks": [], "total": 0})

    client = FleetClient("gopher://h", transport=httpx.MockTransport(handler))
    with pytest.raises(CoordinatorUrlError, match="not gopher://"):
        client.list_tasks()
    assert asked == []


def test_a_client_given_the_api_address_calls_the_api_once_not_twice() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"status": "ok"})

    FleetClient("h:8700/api/v1", transport=httpx.MockTransport(handler)).health()
    assert paths == ["/api/v1/health"]


def test_an_html_page_is_described_never_printed() -> None:
    client = answering(
        lambda _: httpx.Response(200, text=HTML_PAGE, headers={"content-type": "text/html"})
    )
    with pytest.raises(FleetError) as raised:
        client.list_tasks()
    message = raised.value.message
    assert message.startswith(
        "http://other.example:8700 is not a testfleet coordinator "
        "(it answered HTTP 200 text/html to GET /api/v1/tasks)"
    )
    assert "SECRET-PAGE-TEXT" not in message
    assert "nginx" not in message


def test_an_html_404_is_described_never_printed() -> None:
    client = answering(
        lambda _: httpx.Response(
            404, text=HTML_PAGE, headers={"content-type": "text/html; charset=utf-8"}
        )
    )
    with pytest.raises(FleetError) as raised:
        client.get_task("t1")
    assert "is not a testfleet coordinator (it answered HTTP 404 text/html to GET " in str(
        raised.value
    )
    assert "SECRET-PAGE-TEXT" not in str(raised.value)


def test_json_that_is_not_a_testfleet_answer_is_called_so() -> None:
    client = answering(lambda _: httpx.Response(200, json={"hello": "world"}))
    with pytest.raises(FleetError, match="without the fields a testfleet coordinator sends"):
        client.stats()


def test_a_server_error_page_says_the_coordinator_failed_without_the_page() -> None:
    client = answering(
        lambda _: httpx.Response(502, text=HTML_PAGE, headers={"content-type": "text/html"})
    )
    with pytest.raises(FleetError) as raised:
        client.workers()
    assert "failed: it answered HTTP 502 text/html to GET /api/v1/workers" in raised.value.message
    assert "SECRET-PAGE-TEXT" not in raised.value.message


def test_a_redirect_names_where_it_points() -> None:
    client = answering(
        lambda _: httpx.Response(301, headers={"location": "https://other.example/api/v1/tasks"})
    )
    with pytest.raises(FleetError, match=r"HTTP 301, a redirect to https://other\.example/"):
        client.list_tasks()


def test_a_testfleet_refusal_still_carries_the_coordinators_message() -> None:
    body = {"error": {"code": "not_found", "message": "no task with id 'x'", "details": []}}
    client = answering(lambda _: httpx.Response(404, json=body))
    with pytest.raises(FleetError) as raised:
        client.get_task("x")
    assert (raised.value.message, raised.value.code, raised.value.status) == (
        "no task with id 'x'",
        "not_found",
        404,
    )


def test_the_cli_refuses_a_bad_url_in_one_line_without_a_traceback() -> None:
    done = CliRunner().invoke(app, ["tasks", "--coordinator", "ftp://fleet:8700"])
    assert done.exit_code == 2
    assert "use http:// or https://, not ftp://" in done.stderr
    assert "Traceback" not in done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)


def test_the_worker_refuses_a_bad_url_before_its_banner() -> None:
    done = CliRunner().invoke(
        app, ["worker", "--coordinator", "ftp://fleet:8700", "--no-probe-torch"]
    )
    assert done.exit_code == 2
    assert "use http:// or https://, not ftp://" in done.stderr
    assert "testfleet worker" not in done.stderr
