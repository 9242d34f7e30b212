"""Which of the user's pytest arguments travel to the workers.

``testfleet run`` and ``pytest --fleet`` collect the suite locally with the
user's arguments, then put the arguments into every chunk's
:class:`~testfleet.domain.pytest_tasks.TestConfig` so the worker's pytest session
collects the same node ids with the same options. Some options only make
sense on the machine that started the run, or are replaced by the fleet:

* reports written where the run started: ``--junitxml``, ``--junit-prefix``,
  ``--report-log``, ``--html``, ``--durations``, ``--collect-only``;
* selection, done client-side (workers run exact node ids): ``-k``, ``-m``,
  the cache plugin's ``--lf``/``--ff``/``--nf``/``--sw`` family;
* run control the fleet owns: ``-x``/``--maxfail`` (a worker sees one chunk,
  not the run), the fleet's own ``--fleet``, ``--fleet-*`` (all of which
  take a value) and ``--rerun-failures``,
  pytest-xdist (``-n``, ``--dist``...), debuggers (``--pdb``, ``--trace``)
  that would wait for a terminal nobody watches, ``--basetemp`` (a path on
  the client, and shared by concurrent sessions on one worker).

Everything else is kept, in order: paths, ``-p``, ``-o``, ``-W``, ``-c``,
``--rootdir``, ``--import-mode``, ``-s``/``--capture``, ``--tb``, ``-v``/``-q``,
``-r...`` and plugin options.

Parsing follows pytest's argparse setup (``allow_abbrev=False``, so long
options are never abbreviated): ``--opt=value`` and ``--opt value`` for long
options, ``-n8``, ``-n 8`` and ``-n=8`` for short ones, and grouped short flags
(``-xvs``), where the first value-taking letter takes the rest of the group as
its value (``-vrA`` is ``-v -r A``; ``-pxdist`` is ``-p xdist``, not
``-p -x ...``). argparse refuses a separate value that starts with ``-``, so a
token starting with ``-`` is always an option (or a negative number) and the
values of kept options never need to be known. Everything after ``--`` is
positional and kept. ``@file`` argument files are kept as they are.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass, field

from testfleet.fleetrun.plugin import FLEET_FLAG_OPTIONS

#: Long options dropped together with their value (``--opt=v`` or ``--opt v``).
DROPPED_WITH_VALUE: frozenset[str] = frozenset(
    {
        "--junitxml",
        "--junit-xml",
        "--junit-prefix",
        "--fleet",
        "--rerun-failures",
        "--last-failed-no-failures",
        "--lfnf",
        "--numprocesses",
        "--dist",
        "--maxprocesses",
        "--max-worker-restart",
        "--maxschedchunk",
        "--testrunuid",
        "--tx",
        "--px",
        "--rsyncdir",
        "--rsyncignore",
        "--pdbcls",
        "--maxfail",
        "--basetemp",
        "--durations",
        "--durations-min",
        "--report-log",
        "--html",
        "--css",
    }
)

#: Long options without a value that are dropped.
DROPPED_FLAGS: frozenset[str] = frozenset(
    {
        "--lf",
        "--last-failed",
        "--ff",
        "--failed-first",
        "--nf",
        "--new-first",
        "--sw",
        "--stepwise",
        "--sw-skip",
        "--stepwise-skip",
        "--sw-reset",
        "--stepwise-reset",
        "--cache-clear",
        "--collect-only",
        "--co",
        "--pdb",
        "--trace",
        "--exitfirst",
        "--looponfail",
        "--loadscope-reorder",
        "--no-loadscope-reorder",
        "--self-contained-html",
    }
)

#: The fleet's own options (fleetrun.plugin): all dropped, and all take a
#: value (``--fleet-repo URL``), except those a caller names as flags.
FLEET_PREFIX = "--fleet-"

#: Short options that take a value (pytest's and pytest-xdist's -n). In a
#: group, such a letter takes the rest of the group, or the next argument.
SHORT_WITH_VALUE: frozenset[str] = frozenset("kmnpoWcr")

#: Short options that are dropped: -k/-m select, -x stops a chunk early, -n/-d
#: are pytest-xdist (-d is ``--dist=load``), -f is xdist's loop-on-fail.
SHORT_DROPPED: frozenset[str] = frozenset("kmnxdf")

_NEGATIVE_NUMBER = re.compile(r"^-\d+(\.\d+)?$")


@dataclass
class ArgSplit:
    """The user's arguments, separated: what the workers get, and what was
    dropped (one entry per dropped option, as typed, for the client to show)."""

    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def worker_args(args: list[str], *, fleet_flags: Collection[str] = FLEET_FLAG_OPTIONS) -> list[str]:
    """The arguments a worker's pytest session gets (see the module docstring).

    Called by the run client when it builds each chunk's ``TestConfig.args``.
    ``fleet_flags`` names ``--fleet-*`` options that take no value (the
    plugin's, by default); every other one takes the next argument with it.
    """
    return split_args(args, fleet_flags=fleet_flags).kept


def stripped(args: list[str], *, fleet_flags: Collection[str] = FLEET_FLAG_OPTIONS) -> list[str]:
    """The options :func:`worker_args` drops, each as the user typed it
    (``"--junitxml=out.xml"``, ``"-k 'not slow'"``, ``"-x"`` out of ``-xvs``),
    so the client can say which options apply only locally."""
    return split_args(args, fleet_flags=fleet_flags).dropped


def split_args(args: list[str], *, fleet_flags: Collection[str] = ()) -> ArgSplit:
    """Both halves at once: the kept arguments and the dropped options."""
    result = ArgSplit()
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            result.kept.extend(args[index - 1 :])
            break
        if arg.startswith("--"):
            index = _long_option(arg, args, index, fleet_flags, result)
        elif arg.startswith("-") and arg != "-" and not _NEGATIVE_NUMBER.match(arg):
            index = _short_group(arg, args, index, result)
        else:
            result.kept.append(arg)
    return result


def _long_option(
    arg: str, args: list[str], index: int, fleet_flags: Collection[str], result: ArgSplit
) -> int:
    """Handle one ``--name[=value]``; returns the index of the next argument."""
    name, has_inline_value, _ = arg.partition("=")
    if name in DROPPED_FLAGS or name in fleet_flags:
        result.dropped.append(arg)
        return index
    if name in DROPPED_WITH_VALUE or name.startswith(FLEET_PREFIX):
        taken = [arg]
        if not has_inline_value and index < len(args) and _is_value(args[index]):
            taken.append(args[index])
            index += 1
        result.dropped.append(shlex.join(taken))
        return index
    result.kept.append(arg)
    return index


def _short_group(arg: str, args: list[str], index: int, result: ArgSplit) -> int:
    """Handle one group of short options (``-x``, ``-xvs``, ``-n8``, ``-k expr``)."""
    kept_letters = ""
    letters = arg[1:]
    for position, letter in enumerate(letters):
        if letter not in SHORT_WITH_VALUE:
            if letter in SHORT_DROPPED:
                result.dropped.append(f"-{letter}")
            else:
                kept_letters += letter
            continue
        # A value-taking letter ends the group: the rest is its value, or,
        # when nothing follows it, the next argument is.
        inline = letters[position + 1 :]
        taken = [f"-{letter}{inline}"]
        if not inline and index < len(args) and _is_value(args[index]):
            taken.append(args[index])
            index += 1
        if letter in SHORT_DROPPED:
            result.dropped.append(shlex.join(taken))
        else:
            taken[0] = f"-{kept_letters}{letter}{inline}"
            kept_letters = ""
            result.kept.extend(taken)
        break
    if kept_letters:
        result.kept.append(f"-{kept_letters}")
    return index


def _is_value(token: str) -> bool:
    """Whether argparse would take ``token`` as an option's separate value."""
    return not token.startswith("-") or token == "-" or bool(_NEGATIVE_NUMBER.match(token))
