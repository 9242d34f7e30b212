"""worker_args: the user's pytest arguments minus those that only apply locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testfleet.fleetrun.worker_args import (
    DROPPED_FLAGS,
    DROPPED_WITH_VALUE,
    SHORT_DROPPED,
    SHORT_WITH_VALUE,
    split_args,
    stripped,
    worker_args,
)


@pytest.mark.parametrize(
    "args",
    [
        ["tests/unit", "tests/test_x.py::test_one"],
        ["-p", "no:cacheprovider", "-o", "addopts=", "-W", "error", "-c", "ci.ini"],
        ["--rootdir", "/src", "--rootdir=/src", "--import-mode=importlib"],
        ["--import-mode", "append", "-s", "--capture=no", "--capture", "sys"],
        ["--tb=short", "--tb", "line", "-v", "-vv", "-q", "-rA", "-r", "fE", "-l"],
        ["--timeout=30", "--asyncio-mode", "auto", "--strict-markers", "-pxdist"],
        ["-Werror::DeprecationWarning", "-ojunit_family=xunit2", "--deselect", "t.py::a"],
        ["@args.txt", "-", "--durations-not-a-real-option"],
    ],
)
def test_everything_else_is_kept_in_order(args: list[str]) -> None:
    assert worker_args(args) == args
    assert stripped(args) == []


@pytest.mark.parametrize(
    ("args", "dropped"),
    [
        (["--junitxml=out.xml"], ["--junitxml=out.xml"]),
        (["--junitxml", "out.xml"], ["--junitxml out.xml"]),
        (["--junit-xml", "out.xml"], ["--junit-xml out.xml"]),
        (["--junit-prefix=ci"], ["--junit-prefix=ci"]),
        (["--fleet", "http://c:8000"], ["--fleet http://c:8000"]),
        (["--fleet=http://c:8000"], ["--fleet=http://c:8000"]),
        (["--fleet-repo=git@h:r.git"], ["--fleet-repo=git@h:r.git"]),
        (["--fleet-repo", "git@h:r.git"], ["--fleet-repo git@h:r.git"]),
        (
            ["--fleet-chunk-timeout", "60", "--fleet-commit", "abc1234"],
            ["--fleet-chunk-timeout 60", "--fleet-commit abc1234"],
        ),
        (["--rerun-failures", "2"], ["--rerun-failures 2"]),
        (["--rerun-failures=2"], ["--rerun-failures=2"]),
        (["--lf", "--last-failed", "--ff", "--failed-first"], ...),
        (["--nf", "--new-first", "--sw", "--stepwise", "--sw-skip", "--stepwise-skip"], ...),
        (["--cache-clear", "--collect-only", "--co", "--pdb", "--trace", "--exitfirst"], ...),
        (["--lfnf", "all"], ["--lfnf all"]),
        (["--last-failed-no-failures=none"], ["--last-failed-no-failures=none"]),
        (["-n", "8"], ["-n 8"]),
        (["-n8"], ["-n8"]),
        (["-nauto"], ["-nauto"]),
        (["-n=8"], ["-n=8"]),
        (
            ["--numprocesses=4", "--dist", "loadscope", "--maxprocesses", "3"],
            ["--numprocesses=4", "--dist loadscope", "--maxprocesses 3"],
        ),
        (["--pdbcls=IPython.terminal.debugger:TerminalPdb"], ...),
        (["-x"], ["-x"]),
        (["--maxfail", "3"], ["--maxfail 3"]),
        (["--basetemp=/tmp/bt"], ["--basetemp=/tmp/bt"]),
        (["--durations", "10", "--durations-min=0.5"], ["--durations 10", "--durations-min=0.5"]),
        (["--report-log", "log.json", "--html=r.html"], ["--report-log log.json", "--html=r.html"]),
        (["-k", "not slow and fast"], ["-k 'not slow and fast'"]),
        (["-knot_slow"], ["-knot_slow"]),
        (["-m", "gpu"], ["-m gpu"]),
        (["-m=gpu"], ["-m=gpu"]),
    ],
)
def test_local_only_options_are_dropped_in_every_form(args: list[str], dropped: object) -> None:
    surrounding = ["tests", *args, "-v"]
    assert worker_args(surrounding) == ["tests", "-v"]
    # ``...``: each argument is one option (a flag, or --opt=value), dropped as typed.
    assert stripped(surrounding) == (args if dropped is ... else dropped)


@pytest.mark.parametrize(
    ("args", "kept", "dropped"),
    [
        (["-xvs"], ["-vs"], ["-x"]),
        (["-vxs"], ["-vs"], ["-x"]),
        (["-x", "-v"], ["-v"], ["-x"]),
        (["-xrA"], ["-rA"], ["-x"]),
        (["-rA"], ["-rA"], []),
        # A value letter takes the rest of the group: these x's are r's value.
        (["-rxX"], ["-rxX"], []),
        (["-vrfE"], ["-vrfE"], []),
        (["-vpno:cacheprovider"], ["-vpno:cacheprovider"], []),
        (["-xp", "xdist"], ["-p", "xdist"], ["-x"]),
        (["-vk", "expr"], ["-v"], ["-k expr"]),
        (["-vkexpr"], ["-v"], ["-kexpr"]),
        (["-sxn", "4", "t.py"], ["-s", "t.py"], ["-x", "-n 4"]),
        (["-xn4", "t.py"], ["t.py"], ["-x", "-n4"]),
        (["-d", "-f"], [], ["-d", "-f"]),
        (["-x"], [], ["-x"]),
    ],
)
def test_grouped_short_flags(args: list[str], kept: list[str], dropped: list[str]) -> None:
    split = split_args(args)
    assert split.kept == kept
    assert split.dropped == dropped


def test_a_value_is_never_mistaken_for_an_option_and_vice_versa() -> None:
    # -k's value "x" is not -x, and the path after a dropped flag is kept.
    assert worker_args(["-k", "x", "tests/x"]) == ["tests/x"]
    assert worker_args(["--lf", "tests/x"]) == ["tests/x"]
    # A dropped value option directly followed by an option takes no value.
    assert split_args(["--junitxml", "-v"]).kept == ["-v"]
    # A negative number is a value, not a group of short flags.
    assert worker_args(["--timeout", "-1", "-x"]) == ["--timeout", "-1"]
    assert split_args(["--durations", "-1"]).dropped == ["--durations -1"]


def test_everything_after_a_double_dash_is_positional() -> None:
    assert worker_args(["-x", "--", "-x", "--lf"]) == ["--", "-x", "--lf"]


def test_fleet_options_take_a_value_unless_named_as_flags() -> None:
    args = ["--fleet-no-wait", "tests", "-v"]
    assert worker_args(args) == ["-v"]
    assert worker_args(args, fleet_flags={"--fleet-no-wait"}) == ["tests", "-v"]
    assert stripped(args, fleet_flags={"--fleet-no-wait"}) == ["--fleet-no-wait"]


def test_the_fleet_plugins_options_are_all_dropped_with_their_values(tmp_path: Path) -> None:
    """Every option fleetrun.plugin registers is dropped, value and all."""
    from testfleet.fleetrun import plugin

    options: list[tuple[str, bool]] = []

    class Group:
        def addoption(self, *names: str, **attrs: object) -> None:
            takes_value = attrs.get("action") not in ("store_true", "store_false", "count")
            options.extend((name, takes_value) for name in names)

    class Parser:
        def getgroup(self, *args: object, **kwargs: object) -> Group:
            return Group()

        def addoption(self, *names: str, **attrs: object) -> None:
            Group().addoption(*names, **attrs)

        def addini(self, *args: object, **kwargs: object) -> None:
            pass

    plugin.pytest_addoption(Parser())  # type: ignore[arg-type]  # the two methods it calls
    assert options
    for name, takes_value in options:
        args = [name, "value", "tests"] if takes_value else [name, "tests"]
        assert worker_args(args) == ["tests"], name


def test_the_tables_agree_with_pytests_own_parser(tmp_path: Path) -> None:
    """Every short option pytest (and pytest-xdist) defines is classified as
    taking a value exactly when argparse says so, and each dropped long option
    is one pytest knows (those of plugins that are not installed aside)."""
    pytest.importorskip("xdist")
    script = """
import json
from _pytest.config import _prepareconfig
config = _prepareconfig(["-p", "xdist", "-p", "xdist.looponfail"])
parser = getattr(config._parser, "optparser", None)
actions = [] if parser is None else parser._actions
print(json.dumps([[a.option_strings, a.nargs] for a in actions]))
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    actions: list[tuple[list[str], int | str | None]] = json.loads(done.stdout)
    # An upgrade of pytest that moves its argparse parser is what this test
    # guards against: it must fail then (so the tables are checked again
    # against the new parser), never skip.
    assert actions, (
        f"pytest {pytest.__version__} no longer keeps its argparse parser at "
        "config._parser.optparser: find it again so worker_args' tables stay checked"
    )
    short: dict[str, bool] = {}
    long: dict[str, bool] = {}
    for names, nargs in actions:
        for name in names:
            table = short if len(name) == 2 else long
            table[name] = nargs != 0
    assert {name[1] for name, value in short.items() if value} == set(SHORT_WITH_VALUE)
    assert set(SHORT_DROPPED) <= {name[1] for name in short}
    not_pytest = {"--fleet", "--rerun-failures", "--report-log", "--html", "--css"}
    not_pytest.add("--self-contained-html")
    for name in DROPPED_WITH_VALUE - not_pytest:
        assert long.get(name) is True, name
    for name in DROPPED_FLAGS - not_pytest:
        assert long.get(name) is False, name
