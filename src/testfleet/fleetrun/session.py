"""The plugin object of a ``pytest --fleet`` run (registered by fleetrun.plugin).

It replaces pytest's local test loop with :class:`~testfleet.fleetrun.run.FleetRun`
and turns each finished test's record into pytest's own reports; see
:mod:`testfleet.fleetrun.plugin` for what that keeps equal to a serial run.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from pydantic import ValidationError

from testfleet.client import FleetClient, FleetError
from testfleet.domain.enums import HardwareKind
from testfleet.domain.pytest_tasks import (
    InterruptKind,
    ProjectSource,
    PytestPlugin,
    TestLocation,
    TestRecord,
    TestWarning,
)
from testfleet.domain.resources import TaskResources
from testfleet.fleetrun.prestart import (
    Prestarted,
    prestart,
    prestart_allowed,
    save_suite,
    stored_suite,
    suite_cache_path,
)
from testfleet.fleetrun.reports import reports_from_record
from testfleet.fleetrun.run import FleetRun, cancel_all, hardware_of, new_run_id, warm_up
from testfleet.fleetrun.run_types import (
    CollectedTest,
    FleetRunError,
    RunOutcome,
    RunProgress,
    RunSettings,
)
from testfleet.fleetrun.worker_args import worker_args

#: ``TaskResources`` field -> the pytest option that sets it.
RESOURCE_OPTIONS = {
    "memory_bytes": "fleet_memory",
    "cpu_cores": "fleet_cpu_cores",
    "disk_bytes": "fleet_disk",
}


class FleetSession:
    """The run's plugin object: replaces the local test loop with the fleet's."""

    def __init__(self, config: pytest.Config, url: str) -> None:
        self.config = config
        self.url = url
        self.outcome: RunOutcome | None = None
        self.run_id = ""
        self.settings: RunSettings
        #: Task ids of the warm-up tasks sent at session start.
        self.warmups: list[str] = []
        #: Chunks started at session start from the stored test list.
        self.prestarted: Prestarted | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Before collection: ask every free worker slot to start this run's pytest
        session, so workers load pytest's configuration while this machine collects."""
        self.run_id = self.config.getoption("fleet_run_id") or new_run_id()
        try:
            self.settings = self._settings()
        except ValueError as exc:
            raise pytest.UsageError(f"--fleet: {exc}") from None
        with FleetClient(self.url) as client:
            try:
                # The chunks of the stored test list, if any, start the workers'
                # sessions as warm-ups would, and run tests meanwhile.
                self.prestarted = self._prestart(client)
                if self.prestarted is None:
                    self.warmups = warm_up(client, self.settings)
            except FleetError as exc:
                pytest.exit(f"--fleet: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)

    def _prestart(self, client: FleetClient) -> Prestarted | None:
        """Submit the chunks of the test list this command collected last time
        (:mod:`testfleet.fleetrun.prestart`), unless the user said not to or
        this run's selection may differ."""
        invocation = list(self.config.invocation_params.args)
        if self.config.getoption("fleet_no_prestart") or not prestart_allowed(
            invocation, collect_only=bool(self.config.option.collectonly)
        ):
            return None
        stored = stored_suite(suite_cache_path(self.settings, invocation))
        if stored is None:
            return None
        return prestart(client, self.settings, stored)

    def _settings(self) -> RunSettings:
        return RunSettings(
            run_id=self.run_id,
            project=self._project(),
            args=worker_args(list(self.config.invocation_params.args)),
            python=self.config.getoption("fleet_python"),
            rerun_failures=self.config.getoption("fleet_rerun_failures"),
            chunk_timeout_seconds=self.config.getoption("fleet_chunk_timeout"),
            unschedulable_wait_seconds=self.config.getoption("fleet_unschedulable_wait"),
            wait_for_workers_seconds=self.config.getoption("fleet_wait_for_workers"),
            resources=self._resources(),
            full_collection=self.config.getoption("fleet_full_collection"),
            plugins=loaded_plugins(self.config),
        )

    def _resources(self) -> TaskResources | None:
        """``--fleet-memory``/``--fleet-cpu-cores``/``--fleet-disk`` as the chunks'
        ``requirements.resources``; ValueError naming the option when one is bad."""
        given = {
            field: self.config.getoption(option)
            for field, option in RESOURCE_OPTIONS.items()
            if self.config.getoption(option) is not None
        }
        if not given:
            return None
        try:
            return TaskResources.model_validate(given)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            option = "--" + RESOURCE_OPTIONS.get(field, "fleet_memory").replace("_", "-")
            raise ValueError(f"{option}: {error['msg']}") from None

    def pytest_sessionfinish(self) -> None:
        unused = list(self.warmups)
        if self.prestarted is not None:
            unused += [task_id for task_id, _ in self.prestarted.chunks]
        if self.outcome is None and unused:
            # Collection failed or nothing ran: the warm-ups and prestarted
            # chunks have no run to serve.
            with FleetClient(self.url) as client:
                cancel_all(client, unused)

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
        run_id, settings = self.run_id, self.settings
        save_suite(suite_cache_path(settings, self.config.invocation_params.args), tests)
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
                # The warm-up reached the coordinator: from here a restart of it
                # is ridden out, not the end of the run.
                reached=True,
                say=self._say,
            )
            try:
                self.outcome = run.run(tests, self.prestarted)
            except (FleetError, FleetRunError) as exc:
                pytest.exit(f"--fleet: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        if terminal is not None and self.outcome.flaky:
            terminal.stats.setdefault("flaky", []).extend(self.outcome.flaky)
        stop = self.outcome.interrupted
        if stop is not None:
            # A test stopped its session: end this one the same way, so
            # pytest prints, counts and exits as the serial run did.
            if stop.kind is InterruptKind.KEYBOARD_INTERRUPT:
                raise KeyboardInterrupt(stop.message)
            pytest.exit(stop.message, returncode=stop.returncode)
        return True

    def _say(self, line: str) -> None:
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None and self.config.get_verbosity() >= 0:
            terminal.write_line(f"[fleet] {line}")

    def _feed(self, record: TestRecord, worker_id: str) -> None:
        feed_record(self.config, record)

    def _progress(self, progress: RunProgress) -> None:
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
        if outcome.prestarted:
            terminalreporter.write_line(
                f"{outcome.prestarted} chunks started before collection from the last run's "
                f"test list; {outcome.dropped} of its tests no longer collected (dropped), "
                f"{outcome.new_tests} collected tests new (run in later chunks)"
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


def feed_record(config: pytest.Config, record: TestRecord) -> None:
    """Hand one finished test to pytest's reporting, as a local run would.

    Called by :class:`FleetSession` for each record a worker sends (and by
    tests that replay records beside a serial run): pytest's terminal
    reporter, JUnit XML and any plugin see the same hook calls, in the same
    order, as for a test run here.
    """
    hook = config.hook
    location = _location_tuple(record.location)
    hook.pytest_runtest_logstart(nodeid=record.nodeid, location=location)
    for report in reports_from_record(record, rootdir=config.rootpath):
        hook.pytest_runtest_logreport(report=report)
    if record.interrupted is not None:
        # A test that stopped its session never finished: pytest calls
        # neither logfinish nor, for its warnings, warning_recorded.
        return
    hook.pytest_runtest_logfinish(nodeid=record.nodeid, location=location)
    # As pytest's own warnings plugin hands a test's warnings on: after its
    # protocol, each one it recorded.
    for warning in replayed_warnings(record):
        hook.pytest_warning_recorded.call_historic(
            kwargs={
                "warning_message": warning_message(warning),
                "when": "runtest",
                "nodeid": record.nodeid,
                "location": None,
            }
        )


def loaded_plugins(config: pytest.Config) -> list[PytestPlugin]:
    """The installed plugins (``pytest11`` entry points) this pytest loaded,
    however it loaded them: what the workers' sessions must load, and nothing
    else (see :attr:`testfleet.domain.pytest_tasks.TestConfig.plugins`)."""
    manager = config.pluginmanager
    found: dict[str, PytestPlugin] = {}
    for plugin, dist in manager.list_plugin_distinfo():
        name = manager.get_name(plugin)
        if name is None or name in found:
            continue
        found[name] = PytestPlugin(
            name=name,
            distribution=str(getattr(dist, "project_name", "") or "")[:256],
            version=str(getattr(dist, "version", "") or "")[:256],
        )
    return [found[name] for name in sorted(found)]


def replayed_warnings(record: TestRecord) -> list[TestWarning]:
    """The record's warnings, each as often as the test raised it, then one
    stand-in per warning the worker only counted: pytest's summary counts
    every one ("3 warnings")."""
    replayed = [warning for warning in record.warnings for _ in range(warning.count)]
    if record.warnings_omitted:
        stand_in = TestWarning(
            message="(a warning omitted by testfleet: the test raised more distinct "
            "warnings than one record keeps)",
            category="Warning",
        )
        replayed += [stand_in] * record.warnings_omitted
    return replayed


def warning_message(warning: TestWarning) -> warnings.WarningMessage:
    """A worker's warning as the ``warnings.WarningMessage`` pytest's reporters read:
    a class of the same name stands in for the category (only its name is shown)."""
    category = _CATEGORIES.get(warning.category)
    if category is None:
        category = _CATEGORIES[warning.category] = type(warning.category, (Warning,), {})
    return warnings.WarningMessage(
        category(warning.message), category, warning.filename, warning.lineno or 0
    )


#: Stand-in warning classes by name, made once each.
_CATEGORIES: dict[str, type[Warning]] = {
    cls.__name__: cls
    for cls in (
        Warning,
        UserWarning,
        DeprecationWarning,
        PendingDeprecationWarning,
        SyntaxWarning,
        RuntimeWarning,
        FutureWarning,
        ImportWarning,
        UnicodeWarning,
        BytesWarning,
        ResourceWarning,
        EncodingWarning,
    )
}


def _location_tuple(location: TestLocation) -> tuple[str, int | None, str]:
    return (location.path, location.lineno, location.domain)
