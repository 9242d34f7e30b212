"""What a standby coordinator answers (README, "Failover on PostgreSQL"): 503 naming the leader, and
liveness; the worker channel closed with NOT_LEADER and the leader's URL."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from testfleet.coordinator.leadership import LeaderInfo
from testfleet.coordinator.standby import StandbyApp, close_reason
from testfleet.coordinator.worker_channel import WORKER_CHANNEL_PATH
from testfleet.protocol.channel import CloseCode

LEADER = "https://leader.example:8700"


def client(info: LeaderInfo) -> TestClient:
    return TestClient(StandbyApp(lambda: info))


def test_any_api_request_is_refused_with_not_leader_and_the_leaders_address() -> None:
    for method, path in (("GET", "/api/v1/tasks"), ("POST", "/api/v1/tasks"), ("GET", "/metrics")):
        response = client(LeaderInfo(LEADER, 7)).request(method, path, json={"x": 1})
        assert response.status_code == 503, path
        error = response.json()["error"]
        assert error["code"] == "not_leader"
        assert LEADER in error["message"]
        assert "epoch 7" in error["message"]
        assert error["details"] == [{"leader": LEADER, "epoch": 7}]
        assert response.headers["X-Testfleet-Leader"] == LEADER
        assert response.headers["Retry-After"] == "1"


def test_no_leader_known_omits_the_header_and_says_so() -> None:
    response = client(LeaderInfo(None, 0)).get("/api/v1/tasks")
    assert response.status_code == 503
    assert "X-Testfleet-Leader" not in response.headers
    assert response.json()["error"]["details"] == [{"leader": None, "epoch": 0}]


def test_health_says_standby_with_503_so_that_only_the_leader_is_ready() -> None:
    response = client(LeaderInfo(LEADER, 3)).get("/api/v1/health")
    assert response.status_code == 503
    assert response.json() == {"status": "standby", "leader": LEADER, "epoch": 3}


def test_liveness_is_200_on_a_standby() -> None:
    response = client(LeaderInfo(LEADER, 3)).get("/api/v1/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive", "role": "standby"}


def test_dashboard_pages_link_the_leader() -> None:
    response = client(LeaderInfo(LEADER + '"><script>', 3)).get("/dashboard/tasks")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "standby" in response.text
    assert "<script>" not in response.text  # the URL is escaped


def test_the_worker_channel_is_closed_with_not_leader_and_the_leaders_url() -> None:
    with (
        client(LeaderInfo(LEADER, 3)).websocket_connect(WORKER_CHANNEL_PATH) as socket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        socket.receive_text()
    assert closed.value.code == CloseCode.NOT_LEADER == 4010
    assert closed.value.reason == LEADER


def test_a_close_reason_is_empty_when_the_url_is_unknown_or_too_long() -> None:
    assert close_reason(None) == ""
    assert close_reason("https://" + "a" * 115) == "https://" + "a" * 115  # 123 bytes
    assert close_reason("https://" + "a" * 116) == ""
