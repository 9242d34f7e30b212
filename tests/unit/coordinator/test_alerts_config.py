"""The alerts file: defaults, and a bad file is one line naming the key and the
fix, also as ``testfleet coordinator --alerts``'s start-up error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from testfleet.cli.app import app
from testfleet.coordinator.alerts.config import (
    AlertsConfig,
    AlertsConfigError,
    load_alerts_config,
)
from testfleet.domain.alerts import ReceiverKind


def test_no_file_means_every_rule_with_its_defaults_and_no_receivers() -> None:
    config = AlertsConfig()
    assert config.receivers == ()
    assert config.rules.worker_lost.enabled
    assert config.rules.failure_rate_high.for_seconds == 300


def test_a_good_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(
        "evaluation_interval_seconds = 1\n[rules.queue_stuck]\nstuck_seconds = 30\n"
        '[[receivers]]\nname = "chat"\nurl = "https://hooks.example/x"\nkind = "slack"\n'
    )
    config = load_alerts_config(path)
    assert config.rules.queue_stuck.stuck_seconds == 30
    assert config.receivers[0].kind is ReceiverKind.SLACK


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[rules.queue_stuck]\nstuck_seconds = -1\n", "rules.queue_stuck.stuck_seconds"),
        ("[rules.queue_stuk]\n", "unknown key 'rules.queue_stuk'"),
        ('[[receivers]]\nname = "a"\nurl = "ftp://x"\n', "receivers[0].url"),
        ('[[receivers]]\nname = "a"\n', "receivers[0].url: required; add it"),
        ("[rules.flaky_rate]\nthreshold = 2\n", "rules.flaky_rate.threshold"),
        ("evaluation_interval_seconds = [\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    with pytest.raises(AlertsConfigError) as caught:
        load_alerts_config(path)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert str(path) in message


def test_the_coordinator_refuses_to_start_on_a_bad_alerts_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text("[rules.worker_lost]\nfor_seconds = 'soon'\n")
    done = CliRunner().invoke(
        app, ["coordinator", "--db", str(tmp_path / "x.duckdb"), "--alerts", str(path)]
    )
    assert done.exit_code != 0
    assert "rules.worker_lost.for_seconds" in done.output
    assert "Traceback" not in done.output
    assert not (tmp_path / "x.duckdb").exists()  # refused before anything opened
