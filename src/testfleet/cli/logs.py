"""``testfleet logs TASK_ID [--follow]``: a task's output, live while it runs.

Callers: people watching a task. Reads ``GET /api/v1/tasks/{id}/log`` (a
viewer token): without ``--follow`` it prints what there is now (the live
tail of a running task, the stored log of a finished one); with it, it polls
with the last seq it printed until the task ends, so each line is printed
once, and exits 0 if the task completed, 1 if it did not (as ``testfleet
wait`` does). Output is the task's, written by someone else: control
characters are shown as visible escapes (``cli/terminal_text.py``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from testfleet.cli.app import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    CoordinatorOption,
    app,
    errors,
    fleet_client,
)
from testfleet.cli.client_options import takes_credentials
from testfleet.cli.help_format import FleetCommand
from testfleet.cli.terminal_text import printable
from testfleet.client import FleetClient
from testfleet.domain.enums import TaskStatus

MISSED_NOTE = "[… output dropped from the live tail before it was read …]\n"


@dataclass
class LogFollower:
    """Prints a task's log through ``write``, polling every ``poll`` seconds
    (``sleep``: time.sleep, or a fake in tests) when ``follow`` is set."""

    client: FleetClient
    task_id: str
    write: Callable[[str], None]
    note: Callable[[str], None]
    sleep: Callable[[float], None]
    poll: float = 0.5
    follow: bool = False

    def run(self) -> dict[str, Any]:
        """Print until done; returns the last answer (its ``status`` says how the task ended)."""
        after = 0
        shown_live = False
        while True:
            answer = self.client.task_log(self.task_id, after=after)
            # A retry needs no note here: its tail starts with the coordinator's
            # separator line (``── attempt 2 on worker w-2 ──``, log_tails.py).
            if answer.get("missed"):
                self.write(MISSED_NOTE)
            for chunk in answer["chunks"]:
                self.write(printable(chunk["data"]))
                shown_live = True
            final = answer.get("final_log")
            if final is not None:
                if shown_live:
                    self.note("the live tail is gone; the log stored with the result follows")
                self.write(printable(final) + ("" if not final or final.endswith("\n") else "\n"))
            after = int(answer["next_after"])
            if answer["finished"] or not self.follow:
                return answer
            self.sleep(self.poll)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command(cls=FleetCommand)
@takes_credentials
def logs(
    task_id: Annotated[str, typer.Argument(help="The task's id.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing until the task ends (exit 1 unless it completed)."
        ),
    ] = False,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 0.5,
    coordinator: CoordinatorOption = None,
) -> None:
    """A task's output: the live tail while it runs, its stored log once it has finished."""
    with fleet_client(coordinator) as client:
        follower = LogFollower(
            client,
            task_id,
            write=_write,
            note=lambda line: errors.print(f"--- {line} ---", markup=False, highlight=False),
            sleep=time.sleep,
            poll=poll,
            follow=follow,
        )
        try:
            last = follower.run()
        except KeyboardInterrupt:
            errors.print("stopped following; the task keeps running", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
    if follow and last["status"] != TaskStatus.COMPLETED.value:
        errors.print(f"task {task_id} ended {last['status']}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED)
