"""Several coordinator addresses: parsing the list, moving between the addresses,
and the REST client following a standby's ``not_leader`` answer to the leader
(``httpx.MockTransport`` plays the coordinators; a recorder stands for sleep)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.client import CoordinatorUrlError, FleetClient, FleetError, coordinator_url
from testfleet.client_address import normalize_coordinator_urls
from testfleet.coordinator_addresses import CoordinatorAddresses, is_not_leader, leader_named

A, B, C = "http://a.test:8700", "http://b.test:8700", "http://c.test:8700"


# ---------------------------------------------------------------- the list


def test_a_list_is_normalised_entry_by_entry_and_duplicates_dropped() -> None:
    given = " a.test:8700 , http://b.test:8700/api/v1,http://a.test:8700/"
    assert normalize_coordinator_urls(given) == (A, B)


def test_one_address_is_one_address() -> None:
    assert normalize_coordinator_urls("a.test:8700") == (A,)


@pytest.mark.parametrize(("given", "place"), [("a.test:1,,b.test:2", 2), ("a.test:1,", 2)])
def test_an_empty_entry_is_refused_naming_its_place(given: str, place: int) -> None:
    with pytest.raises(CoordinatorUrlError) as raised:
        normalize_coordinator_urls(given)
    assert f"entry {place} is empty" in raised.value.message
    assert "http://HOST-A:8700,http://HOST-B:8700" in raised.value.message


def test_a_bad_entry_is_refused_with_the_single_address_message() -> None:
    with pytest.raises(CoordinatorUrlError) as raised:
        normalize_coordinator_urls("a.test:1,ftp://b.test")
    assert "use http:// or https://, not ftp://" in raised.value.message


def test_the_environment_variable_may_hold_a_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTFLEET_COORDINATOR", "a.test:8700,b.test:8700")
    assert coordinator_url() == f"{A},{B}"


def test_the_cli_refuses_an_empty_entry_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["tasks", "--coordinator", "a.test:1,,b.test:2"])
    assert result.exit_code == 2
    assert "entry 2 is empty" in result.output
    assert "--coordinator" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- moving between addresses


def test_a_failure_moves_on_and_a_full_round_is_reported() -> None:
    addresses = CoordinatorAddresses([A, B, C])
    assert addresses.current == A
    assert addresses.failed() is False
    assert addresses.current == B
    assert addresses.failed() is False
    assert addresses.failed() is True  # A, B and C all failed in turn
    assert addresses.current == A


def test_reaching_the_leader_starts_the_round_afresh() -> None:
    addresses = CoordinatorAddresses([A, B])
    addresses.failed()
    addresses.reached()
    assert addresses.failed() is False
    assert addresses.failed() is True


def test_a_named_leader_becomes_current_and_a_new_one_is_added() -> None:
    addresses = CoordinatorAddresses([A, B])
    assert addresses.not_leader("c.test:8700/") is False
    assert addresses.current == C
    assert addresses.all == (A, B, C)
    addresses.not_leader(B)
    assert addresses.current == B
    assert addresses.all == (A, B, C)


@pytest.mark.parametrize("leader", [None, "", "ftp://nowhere", A])
def test_a_standby_naming_nobody_or_itself_means_the_next_address(leader: str | None) -> None:
    addresses = CoordinatorAddresses([A, B])
    addresses.not_leader(leader)
    assert addresses.current == B


def test_standbys_naming_each_other_end_a_round() -> None:
    addresses = CoordinatorAddresses([A, B])
    assert addresses.not_leader(B) is False
    assert addresses.not_leader(A) is True


def test_the_leader_is_read_from_the_header_then_the_body() -> None:
    body = {"error": {"code": "not_leader", "message": "m", "details": [{"leader": B}]}}
    assert leader_named(body, {"x-testfleet-leader": C}) == C
    assert leader_named(body, {}) == B
    assert leader_named({"status": "standby", "leader": C, "epoch": 2}, {}) == C
    assert leader_named({"status": "standby", "leader": None, "epoch": 2}, {}) is None
    assert is_not_leader(503, body)
    assert is_not_leader(503, {"status": "standby", "leader": None})
    assert not is_not_leader(503, {"error": {"code": "store_unavailable"}})
    assert not is_not_leader(500, body)


# ---------------------------------------------------------------- the client


def standby(leader: str | None) -> httpx.Response:
    """What a standby answers to every API call but health."""
    headers = {"Retry-After": "1"} | ({"X-Testfleet-Leader": leader} if leader else {})
    return httpx.Response(
        503,
        headers=headers,
        json={
            "error": {
                "code": "not_leader",
                "message": f"this coordinator is a standby; the leader is at {leader} (epoch 3)",
                "details": [{"leader": leader, "epoch": 3}],
            }
        },
    )


def fleet(
    answers: dict[str, Callable[[httpx.Request], httpx.Response]],
) -> tuple[httpx.MockTransport, list[str]]:
    """A transport where each host answers as ``answers`` says; a host not in it
    refuses the connection. Returns it and the hosts asked, in order."""
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        origin = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
        asked.append(origin)
        if origin not in answers:
            raise httpx.ConnectError("connection refused", request=request)
        return answers[origin](request)

    return httpx.MockTransport(handler), asked


def leader(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/tasks") and request.method == "POST":
        return httpx.Response(201, json={"task_ids": ["t1"]})
    return httpx.Response(200, json={"tasks": [], "total": 0})


def client(addresses: str, transport: httpx.MockTransport, pauses: list[float]) -> FleetClient:
    return FleetClient(addresses, transport=transport, sleep=pauses.append)


def test_a_dead_first_address_is_passed_over_without_a_pause() -> None:
    transport, asked = fleet({B: leader})
    pauses: list[float] = []
    with client(f"{A},{B}", transport, pauses) as fleet_client:
        assert fleet_client.list_tasks()["total"] == 0
        assert fleet_client.base_url == B
        fleet_client.list_tasks()  # stays with the leader
    assert asked == [A, B, B]
    assert pauses == []


def test_a_standby_sends_the_client_to_the_leader_it_names_even_an_unlisted_one() -> None:
    transport, asked = fleet({A: lambda r: standby(C), C: leader})
    with client(A, transport, []) as fleet_client:
        assert fleet_client.submit({"type": "command"}) == ["t1"]
        assert fleet_client.addresses == (A, C)
    assert asked == [A, C]


def test_a_standby_naming_nobody_sends_the_client_to_the_next_address() -> None:
    transport, asked = fleet({A: lambda r: standby(None), B: leader})
    with client(f"{A},{B}", transport, []) as fleet_client:
        fleet_client.list_tasks()
    assert asked == [A, B]


def test_only_standbys_pause_between_rounds_then_give_up_with_503() -> None:
    transport, asked = fleet({A: lambda r: standby(None), B: lambda r: standby(None)})
    pauses: list[float] = []
    with client(f"{A},{B}", transport, pauses) as fleet_client, pytest.raises(FleetError) as raised:
        fleet_client.list_tasks()
    assert len(asked) == 6  # three rounds of two
    assert pauses == [0.5, 1.0]
    assert raised.value.status == 503
    assert raised.value.code == "not_leader"
    assert A in raised.value.message
    assert B in raised.value.message


def test_an_election_that_ends_within_the_rounds_is_ridden_out() -> None:
    calls = {"n": 0}

    def electing(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return standby(None) if calls["n"] < 3 else leader(request)

    transport, _ = fleet({A: electing})
    pauses: list[float] = []
    with client(A, transport, pauses) as fleet_client:
        fleet_client.list_tasks()
    assert pauses == [0.5, 1.0]


def test_no_address_reachable_fails_at_once_naming_every_address() -> None:
    transport, asked = fleet({})
    pauses: list[float] = []
    with client(f"{A},{B}", transport, pauses) as fleet_client, pytest.raises(FleetError) as raised:
        fleet_client.list_tasks()
    assert asked == [A, B]
    assert pauses == []
    assert raised.value.code == "unreachable"
    assert raised.value.status == 0
    assert f"cannot reach a coordinator at {A}, {B}" in raised.value.message


def test_one_unreachable_address_keeps_its_old_message() -> None:
    transport, _ = fleet({})
    with client(A, transport, []) as fleet_client, pytest.raises(FleetError) as raised:
        fleet_client.list_tasks()
    assert raised.value.message.startswith(f"cannot reach the coordinator at {A}: ")
    assert raised.value.message.endswith("Set --coordinator or $TESTFLEET_COORDINATOR.")


def test_a_submission_whose_answer_was_lost_is_not_sent_to_another_address() -> None:
    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    transport, asked = fleet({A: reset, B: leader})
    with client(f"{A},{B}", transport, []) as fleet_client, pytest.raises(FleetError) as raised:
        fleet_client.submit({"type": "command"})
    assert asked == [A]  # A may have committed it: a second try could be a second task
    assert raised.value.code == "unreachable"


def test_a_read_whose_answer_was_lost_is_asked_of_the_next_address() -> None:
    def reset(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    transport, asked = fleet({A: reset, B: leader})
    with client(f"{A},{B}", transport, []) as fleet_client:
        fleet_client.list_tasks()
    assert asked == [A, B]


def test_other_refusals_are_not_followed() -> None:
    def full(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"error": {"code": "store_unavailable", "message": "disk"}})

    transport, asked = fleet({A: full, B: leader})
    with client(f"{A},{B}", transport, []) as fleet_client, pytest.raises(FleetError) as raised:
        fleet_client.list_tasks()
    assert asked == [A]
    assert raised.value.code == "store_unavailable"


def test_a_standby_health_answer_is_followed() -> None:
    def standby_health(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"status": "standby", "leader": B, "epoch": 4})

    transport, asked = fleet(
        {A: standby_health, B: lambda r: httpx.Response(200, json={"status": "ok"})}
    )
    with client(A, transport, []) as fleet_client:
        assert fleet_client.health()["status"] == "ok"
    assert asked == [A, B]


def test_export_follows_the_leader(tmp_path: pytest.TempPathFactory) -> None:
    def export(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"PAR1", headers={"x-testfleet-rows": "3"})

    transport, asked = fleet({A: lambda r: standby(B), B: export})
    destination = tmp_path / "t.parquet"  # type: ignore[operator]
    with client(A, transport, []) as fleet_client:
        assert fleet_client.export("distributed_tasks", destination) == 3
    assert asked == [A, B]
    assert destination.read_bytes() == b"PAR1"
