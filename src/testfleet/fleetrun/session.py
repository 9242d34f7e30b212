"""The plugin object of a ``pytest --fleet`` run (registered by fleetrun.plugin).

It replaces pytest's local test loop with :class:`~testfleet.fleetrun.run.FleetRun`
and turns each finished test's record into pytest's own reports; see
:mod:`testfleet.fleetrun.plugin` for what that keeps equal to a serial run.
"""

from __future__ import annotations

from typing import Any

import pytest

from testfleet.client import FleetClient, FleetError
from testfleet.domain.enums import HardwareKind
from testfleet.domain.testing import ProjectSource, TestLocation, TestRecord
from testfleet.fleetrun.reports import reports_from_record
from testfleet.fleetrun.run import (
    CollectedTest,
    FleetRun,
    FleetRunError,
    Progress,
    RunOutcome,
    RunSettings,
    hardware_of,
    new_run_id,
)
from testfleet.fleetrun.worker_args import worker_args


class FleetSession:
    """The run's plugin object: replaces the local test loop with the fleet's."""

    def __init__(self, config: pytest.Config, url: str) -> None:
        self.config = config
        self.url = url
        self.outcome: RunOutcome | None = None

    def _project(self) -> ProjectSource:
        repo = self.config.getoption("fleet_repo")
        if repo is not None:
            return ProjectSource(repo=repo, commit=self.config.getoption("fleet_commit"))
        return ProjectSource(path=str(self.config.invocation_params.dir))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        if session.config.option.collectonly:
            return None  # nothing runs; pytest's own loop handles it
        tests = [_collected(item) for item in session.items]
        run_id = self.config.getoption("fleet_run_id") or new_run_id()
        try:
            settings = RunSettings(
                run_id=run_id,
                project=self._project(),
                args=worker_args(list(self.config.invocation_params.args)),
                python=self.config.getoption("fleet_python"),
                rerun_failures=self.config.getoption("fleet_rerun_failures"),
                chunk_timeout_seconds=self.config.getoption("fleet_chunk_timeout"),
                unschedulable_wait_seconds=self.config.getoption("fleet_unschedulable_wait"),
            )
        except ValueError as exc:
            raise pytest.UsageError(f"--fleet: {exc}") from None
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and self.config.get_verbosity() >= 0:
            terminal.write_line(f"[fleet] run {run_id}: {len(tests)} tests via {self.url}")
        with FleetClient(self.url) as client:
            run = FleetRun(
                client,
                settings,
                report=self._feed,
                progress=self._progress,
                should_stop=lambda: bool(session.shouldfail or session.shouldstop),
            )
            try:
                self.outcome = run.run(tests)
            except (FleetError, FleetRunError) as exc:
                pytest.exit(f"--fleet: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        if terminal is not None and self.outcome.flaky:
            terminal.stats.setdefault("flaky", []).extend(self.outcome.flaky)
        return True

    def _feed(self, record: TestRecord, worker_id: str) -> None:
        """Hand one finished test to pytest's reporting, as a local run would."""
        hook = self.config.hook
        location = _location_tuple(record.location)
        hook.pytest_runtest_logstart(nodeid=record.nodeid, location=location)
        for report in reports_from_record(record, rootdir=self.config.rootpath):
            hook.pytest_runtest_logreport(report=report)
        hook.pytest_runtest_logfinish(nodeid=record.nodeid, location=location)

    def _progress(self, progress: Progress) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None or self.config.get_verbosity() < 0:
            return
        rerun = f" (rerun {progress.rerun})" if progress.rerun else ""
        terminal.write_line(
            f"[fleet{rerun}] {progress.tests_done}/{progress.tests_total} tests done, "
            f"{progress.failures} failed so far, {progress.workers_busy} workers busy, "
            f"{progress.chunks_running} chunks running, {progress.chunks_queued} queued"
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        outcome = self.outcome
        if outcome is None:
            return
        terminalreporter.section("testfleet")
        terminalreporter.write_line(
            f"run {outcome.run_id}: {outcome.chunks} chunks on {len(outcome.workers)} "
            f"workers ({', '.join(sorted(outcome.workers)) or 'none'}), split by "
            f"{outcome.split_by}" + (f", {outcome.reruns} rerun round(s)" if outcome.reruns else "")
        )
        for flaky in outcome.flaky:
            terminalreporter.write_line(
                f"FLAKY {flaky.nodeid}: failed on {', '.join(flaky.failed_on)} "
                f"({flaky.first_failure}), passed on {flaky.passed_on}"
            )
        reasons: dict[str, int] = {}
        for reason in outcome.not_run.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in sorted(reasons.items()):
            terminalreporter.write_line(f"NOT RUN {count} test(s): {reason}")
        if outcome.stopped_early:
            terminalreporter.write_line("stopped early (-x/--maxfail): unfinished chunks cancelled")


def _collected(item: pytest.Item) -> CollectedTest:
    path, lineno, domain = item.location
    hardware = hardware_of(item.iter_markers("fleet"))
    known = {k.value for k in HardwareKind}
    unknown = sorted(set(hardware) - known)
    if unknown:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.fleet(hardware=...) names unknown hardware "
            f"{', '.join(unknown)}; known kinds: {', '.join(sorted(known))}"
        )
    return CollectedTest(
        nodeid=item.nodeid,
        location=TestLocation(path=path, lineno=lineno, domain=domain),
        hardware=hardware,
    )


def _location_tuple(location: TestLocation) -> tuple[str, int | None, str]:
    return (location.path, location.lineno, location.domain)
