"""Text from tasks and workers never reaches the terminal raw.

A task's argv, output, error message and unschedulable reason, and a worker's
hostname and GPU names, are written by someone other than the reader. Each
test here serves such text (title-setting and screen-clearing escapes, a bell,
Rich markup) from a fake coordinator (``httpx.MockTransport``) and checks that
``testfleet task``, ``task --logs``, ``tasks``, ``workers``, ``wait`` and
``results --csv`` (to a terminal) print it with no raw ESC or BEL byte,
visibly escaped instead; their ``--json`` writes every control character,
C1 included, as a JSON escape. Rich writes no colour
codes under ``CliRunner`` (not a terminal), so any ESC in the output would be
the task's.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import httpx
import orjson
import pytest
from rich.table import Table
from typer.testing import CliRunner

from testfleet.cli import app
from testfleet.cli.results import write_csv
from testfleet.cli.tables import workers_table
from testfleet.cli.terminal_text import SafeConsole, json_text, printable, shown
from testfleet.cli.waiting import TaskWaiter, WaitEnd
from testfleet.client import FleetClient
from testfleet.domain.result import encode_logs
from testfleet.testing import FakeClock

TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"
NASTY = f"{TITLE}{CLEAR}boom"
LINK = "[link=https://evil.example]click[/link]"


def test_printable_makes_controls_visible_and_keeps_layout() -> None:
    assert printable(NASTY) == "\\x1b]0;pwned\\x07\\x1b[2Jboom"
    assert printable("a\tb\nc\r\nd\re") == "a\tb\nc\nd\\x0de"
    assert printable("\x9b31m \x7f \u202eevil") == "\\x9b31m \\x7f \\u202eevil"
    assert printable("ünïcode · ok") == "ünïcode · ok"


def test_shown_is_markup_that_prints_literally() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, width=200, color_system=None)
    console.print(f"[bold]{shown(LINK + NASTY)}[/bold]")
    assert out.getvalue() == LINK + "\\x1b]0;pwned\\x07\\x1b[2Jboom\n"


def test_the_safe_console_escapes_plain_prints_and_table_cells() -> None:
    out = io.StringIO()
    console = SafeConsole(file=out, width=200, color_system=None)
    console.print(NASTY, markup=False, highlight=False)
    table = Table(title=NASTY)
    table.add_column(NASTY)
    table.add_row(NASTY)
    console.print(table)
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert text.count("\\x1b]0;pwned") == 4


def task_document(**fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "task_id": "nasty",
        "type": "command",
        "priority": 5,
        "status": "failed",
        "unschedulable_reason": None,
        "create_time": None,
        "queued_at": None,
        "start_time": None,
        "end_time": None,
        "duration_seconds": 0.5,
        "worker_id": "w1",
        "attempts": 1,
        "retry_not_before": None,
        "requirements": {},
        "config": {"argv": ["printf", NASTY]},
        "timeout_seconds": 60.0,
        "retry_policy": {"max_retries": 0, "retry_delay_seconds": 0.0},
        "error": {"error_class": "task_failure", "message": f"exit 1: {NASTY} {LINK}"},
    }
    document.update(fields)
    return document


DETAIL: dict[str, Any] = {
    "task": task_document(),
    "attempts": [
        {
            "attempt_id": 1,
            "attempt": 1,
            "worker_id": "w1",
            "status": "failed",
            "start_time": None,
            "accepted_time": None,
            "end_time": None,
            "execution_time_seconds": 0.5,
            "error_class": "task_failure",
            "error_message": f"exit 1: {NASTY}",
            "hardware_metrics": {},
        }
    ],
    "result": {
        "task_id": "nasty",
        "worker_id": "w1",
        "status": "failed",
        "execution_time_seconds": 0.5,
        "simulation_status": {"is_simulated": False},
        "results": {"output_tail": NASTY + "\x9b2J", "argv": ["printf", NASTY]},
        "logs": encode_logs(f"line one\n{NASTY}\n".encode()),
    },
    "results": [],
}

WORKER: dict[str, Any] = {
    "worker_id": "w1",
    "hostname": f"host{NASTY}",
    "status": "connected",
    "connected": True,
    "draining": False,
    "slots": 1,
    "running": 0,
    "hardware": ["cpu"],
    "tags": {"rack": NASTY},
    "load": {},
    "capabilities": {
        "cpu": {"model": f"cpu{CLEAR}", "logical_cores": 4},
        "memory_gb": 8.0,
        "gpus": [{"name": f"{LINK}{TITLE}"}],
    },
}


@pytest.fixture
def fake_coordinator(monkeypatch: pytest.MonkeyPatch) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v1/tasks":
            return httpx.Response(200, json={"tasks": [DETAIL["task"]], "total": 1, "offset": 0})
        if path.startswith("/api/v1/tasks/"):
            return httpx.Response(200, json=DETAIL)
        if path == "/api/v1/workers":
            return httpx.Response(200, json={"workers": [WORKER]})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": NASTY}})

    def client_for(coordinator: str | None) -> FleetClient:
        return FleetClient("http://fleet.test", transport=httpx.MockTransport(handle))

    monkeypatch.setattr(sys.modules["testfleet.cli.app"], "client_for", client_for)


def no_raw_controls(text: str) -> None:
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\x9b" not in text


@pytest.mark.usefixtures("fake_coordinator")
@pytest.mark.parametrize(
    "args", [["task", "nasty"], ["task", "nasty", "--logs"], ["tasks"], ["workers"]]
)
def test_commands_show_task_and_worker_text_escaped(args: list[str]) -> None:
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    no_raw_controls(done.stdout)
    no_raw_controls(done.stderr)
    assert "\\x1b]0;pwned" in done.stdout or "\\u001b]0;pwned" in done.stdout
    if args[0] != "workers":
        assert "[link=https://evil.example]" in done.stdout  # markup shown, not obeyed


@pytest.mark.usefixtures("fake_coordinator")
def test_the_logs_are_printed_with_the_escapes_visible() -> None:
    done = CliRunner().invoke(app, ["task", "nasty", "--logs"])
    assert done.exit_code == 0, done.output
    assert "line one\n\\x1b]0;pwned\\x07\\x1b[2Jboom\n" in done.stdout


def test_the_workers_table_shows_a_hostname_literally() -> None:
    out = io.StringIO()
    SafeConsole(file=out, width=400, color_system=None).print(workers_table([WORKER]))
    text = out.getvalue()
    no_raw_controls(text)
    assert "host\\x1b]0;pwned\\x07\\x1b[2Jboom" in text
    assert "rack=\\x1b]0;pwned" in text
    assert "[link=https://evil.example]click[/link]" in text  # a GPU name, not a link


def test_wait_says_an_unschedulable_reason_with_its_controls_visible() -> None:
    queued = {"task": task_document(status="queued", unschedulable_reason=f"tags: {NASTY}")}

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=queued)

    said: list[str] = []
    clock = FakeClock()
    waiter = TaskWaiter(
        FleetClient("http://fleet.test", transport=httpx.MockTransport(handle)),
        ["nasty"],
        clock=clock,
        sleep=clock.advance,
        say=said.append,
        poll=1.0,
        timeout=None,
        unschedulable_timeout=2.0,
    )
    assert waiter.run().end is WaitEnd.UNSCHEDULABLE
    assert said
    for line in said:
        no_raw_controls(line)
    assert "tags: \\x1b]0;pwned\\x07\\x1b[2Jboom" in said[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_csv_to_a_terminal_escapes_text_but_piped_csv_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = [{"error_message": NASTY, "batch_size": 1}]
    for stream, expected in ((Terminal(), printable(NASTY)), (io.StringIO(), NASTY)):
        monkeypatch.setattr(sys, "stdout", stream)
        write_csv(rows, ["batch_size", "error_message"])
        assert stream.getvalue().splitlines()[1] == f"1,{expected}"


# ------------------------------------------------------------------- --json

#: Every kind of control character, C1's CSI introducer (U+009B) above all.
CONTROLS = "\x1b[2J \x07 \x7f \x85 \x9b31m \u202eevil \u2066 ok ünï"


def test_json_text_escapes_every_control_and_reads_back_the_same() -> None:
    data = {"argv": ["printf", CONTROLS], CONTROLS: [1, 2.5, None, True]}
    text = json_text(data)
    assert not [c for c in text if c != "\n" and printable(c) != c]  # none raw
    assert "\\u009b31m" in text
    assert "\\u0085" in text
    assert "\\u007f" in text
    assert "\\u202eevil" in text
    assert "\\u001b[2J" in text
    assert "ünï" in text  # printable text stays as it is
    assert json.loads(text) == data
    assert orjson.loads(text) == data


@pytest.mark.usefixtures("fake_coordinator")
@pytest.mark.parametrize("args", [["task", "nasty"], ["tasks"], ["workers"]])
def test_json_output_escapes_c1_controls_and_stays_valid_json(args: list[str]) -> None:
    done = CliRunner().invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    no_raw_controls(done.stdout)
    parsed = json.loads(done.stdout)
    if args[0] == "task":
        assert parsed["result"]["results"]["output_tail"] == NASTY + "\x9b2J"
        assert "\\u009b2J" in done.stdout
    elif args[0] == "tasks":
        assert parsed["tasks"][0]["config"]["argv"] == ["printf", NASTY]
    else:
        assert parsed["workers"][0]["hostname"] == f"host{NASTY}"
