"""pytest's final summary line ("2 failed, 398 passed in 3.1s") read back as counts.

Callers: whatever compares a ``testfleet run`` with a serial pytest run by
their output rather than by JUnit XML: the suite benchmark
(``benchmarks/suite.py``) checks that every test passed, and the integration
tests (``tests/integration/it_compare.py``) compare the two runs' counts. A
fleet run prints the same line as the serial one (pytest's own terminal
summary counts the reports the fleet plugin replays, see
:mod:`testfleet.fleetrun.reports`), so one reader serves both.
"""

from __future__ import annotations

import re

#: Terminal colour codes, which ``--color=yes`` puts around the words.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: The summary line: its counts, then "in N.NNs" and, past a minute, "(0:01:02)".
_SUMMARY = re.compile(r"^=*\s*(?P<body>.+?)\s+in\s+[\d.]+s(?:\s+\([\d:]+\))?\s*=*$")
#: pytest's singular words, counted under the plural as well.
_PLURAL = {"error": "errors", "warning": "warnings"}


def summary_counts(output: str) -> dict[str, int] | None:
    """The last summary line of ``output`` as counts, e.g. {"passed": 198, "skipped": 2}.

    "1 error" and "2 errors" both count under "errors" (likewise warnings);
    "no tests ran" is {}; None when there is no summary line at all. A line
    that ends "in 2.0s" but is not made of counts (a failure's message) is
    passed over.
    """
    for line in reversed(ANSI_ESCAPE.sub("", output).splitlines()):
        match = _SUMMARY.match(line.strip())
        if match is None:
            continue
        if match["body"] == "no tests ran":
            return {}
        counts: dict[str, int] = {}
        for part in match["body"].split(", "):
            number, _, word = part.partition(" ")
            if not number.isdigit() or not word:
                break
            counts[_PLURAL.get(word, word)] = int(number)
        else:
            return counts
    return None
