"""pytest plugin: ``pytest --fleet URL`` runs the collected suite on the fleet.

Registered through the ``pytest11`` entry point, so it is loaded by every
pytest in an environment where testfleet is installed; without ``--fleet`` it
only registers its options and the ``fleet`` marker, and changes nothing.
``testfleet run PATH [pytest args]`` is this plugin started in-process. The
run itself lives in :mod:`testfleet.fleetrun.session`.

With ``--fleet``, pytest collects as usual (on this machine, with the user's
arguments), and this plugin's ``pytest_runtestloop`` replaces the local run:
:class:`~testfleet.fleetrun.run.FleetRun` splits and submits the suite and
hands back each finished test's record, which is turned into pytest's own
``TestReport`` objects and fed to ``pytest_runtest_logreport``. pytest's
terminal output, short summary, ``--junitxml`` and exit code therefore come
from the same reports, counted by the same code, as in a serial run.

Departures from a serial run, on purpose:

* collection errors do not stop the run: they are reported (as pytest does,
  "N errors") and the collected tests still run, as with
  ``--continue-on-collection-errors`` (exit code 1, not 2);
* ``-x``/``--maxfail`` stop the run by cancelling the chunks not finished;
* tests rerun by ``--rerun-failures`` that then pass count as passed and are
  listed (and counted) as flaky.
"""

from __future__ import annotations

import os

import pytest

from testfleet.domain.enums import HardwareKind
from testfleet.domain.session_env import WORKER_SESSION_ENV

FLEET_MARKER = (
    "fleet(hardware=[...]): with --fleet, run this test only on workers that have one of "
    "these hardware kinds (" + ", ".join(k.value for k in HardwareKind) + ")"
)
#: This plugin's ``--fleet-*`` options that take no value (worker_args must
#: know them to drop them without eating the next argument).
FLEET_FLAG_OPTIONS = ("--fleet-full-collection", "--fleet-no-prestart")
#: The name the run's plugin object (fleetrun.session.FleetSession) is registered under.
SESSION_PLUGIN = "testfleet-fleet-session"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("testfleet", "running the suite across a testfleet fleet")
    group.addoption(
        "--fleet",
        dest="fleet_url",
        metavar="URL",
        default=None,
        help="run the collected tests on the workers of the testfleet coordinator at URL "
        "(e.g. http://127.0.0.1:8765; several comma-separated: the leader is followed) "
        "instead of in this process",
    )
    group.addoption(
        "--rerun-failures",
        dest="fleet_rerun_failures",
        metavar="N",
        type=int,
        default=0,
        help="with --fleet: rerun a failed test up to N times on another worker; a test "
        "that then passes is reported as flaky",
    )
    group.addoption(
        "--fleet-run-id",
        dest="fleet_run_id",
        metavar="ID",
        default=None,
        help="with --fleet: the run's id (default: run-<UTC time>-<random>)",
    )
    group.addoption(
        "--fleet-chunk-timeout",
        dest="fleet_chunk_timeout",
        metavar="SECONDS",
        type=float,
        default=3600.0,
        help="with --fleet: how long one chunk of tests may take on a worker (default 3600)",
    )
    group.addoption(
        "--fleet-repo",
        dest="fleet_repo",
        metavar="URL",
        default=None,
        help="with --fleet: workers clone this git repository (with --fleet-commit) "
        "instead of using this directory's path",
    )
    group.addoption(
        "--fleet-commit",
        dest="fleet_commit",
        metavar="SHA",
        default=None,
        help="with --fleet-repo: the commit the workers check out",
    )
    group.addoption(
        "--fleet-python",
        dest="fleet_python",
        metavar="PATH",
        default=None,
        help="with --fleet: the interpreter workers run pytest with (default: their own)",
    )
    group.addoption(
        "--fleet-full-collection",
        dest="fleet_full_collection",
        action="store_true",
        default=False,
        help="with --fleet: every worker session collects the whole suite, as a serial run "
        "does, instead of only the files its chunks need (for tests that rely on other "
        "test modules having been imported)",
    )
    group.addoption(
        "--fleet-no-prestart",
        dest="fleet_no_prestart",
        action="store_true",
        default=False,
        help="with --fleet: do not start chunks from the test list this command collected "
        "last time while this one collects (see the README, 'Starting before collection')",
    )
    group.addoption(
        "--fleet-unschedulable-wait",
        dest="fleet_unschedulable_wait",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="with --fleet: give up on tests no connected worker can run after this long",
    )
    group.addoption(
        "--fleet-wait-for-workers",
        dest="fleet_wait_for_workers",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="with --fleet: when no worker that takes test tasks is connected yet (a "
        "coordinator just restarted, workers still starting), wait this long for one "
        "before failing (default 60)",
    )

    group.addoption(
        "--fleet-memory",
        dest="fleet_memory",
        metavar="SIZE",
        default=None,
        help="with --fleet: memory each chunk's tests may use together on its worker "
        '(e.g. "512MiB"); a test past it fails its chunk as out_of_memory',
    )
    group.addoption(
        "--fleet-cpu-cores",
        dest="fleet_cpu_cores",
        metavar="N",
        type=int,
        default=None,
        help="with --fleet: whole cores each chunk's tests are pinned to on its worker",
    )
    group.addoption(
        "--fleet-disk",
        dest="fleet_disk",
        metavar="SIZE",
        default=None,
        help="with --fleet: the largest file each chunk's tests may write on its worker",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", FLEET_MARKER)
    url = config.getoption("fleet_url")
    if not url or os.environ.get(WORKER_SESSION_ENV):
        # Inside a worker's session the chunk is the run: never fan out again.
        return
    if config.getoption("fleet_rerun_failures") < 0:
        raise pytest.UsageError("--rerun-failures must be 0 or more")
    if config.getoption("fleet_wait_for_workers") < 0:
        raise pytest.UsageError("--fleet-wait-for-workers must be 0 or more seconds")
    repo, commit = config.getoption("fleet_repo"), config.getoption("fleet_commit")
    if (repo is None) != (commit is None):
        raise pytest.UsageError("--fleet-repo and --fleet-commit go together")
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "--fleet and -n (pytest-xdist) both distribute the tests; drop -n (or pass -n 0)"
        )
    if not config.pluginmanager.has_plugin(SESSION_PLUGIN):
        # Imported only for a fleet run: every other pytest in this environment
        # loads this module and should not pay for the client's imports.
        from testfleet.fleetrun.session import FleetSession

        config.pluginmanager.register(FleetSession(config, url), SESSION_PLUGIN)
