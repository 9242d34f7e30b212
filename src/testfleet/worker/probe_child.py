"""Run one capability probe in a child interpreter and print its answer.

``python -P -m testfleet.worker.probe_child MODULE:FUNCTION ARGS_JSON``

Callers: :func:`testfleet.worker.backend_probes.run_in_child` starts it for
each probe that imports something heavy or foreign (ONNX Runtime, OpenVINO,
a Chromium through Playwright): an import that hangs, crashes the
interpreter or initialises a device must not do so in the worker. The
function is called with the JSON list's items as arguments; its answer (a
pydantic model, JSON-able value or None) is printed after :data:`MARKER` on
one line, so stray prints of the library on stdout cannot be mistaken for it.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

MARKER = "TESTFLEET_PROBE="


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def main(argv: list[str]) -> int:
    """Import and call the probe named in ``argv``; exit code 2 for a bad call."""
    if len(argv) != 2 or ":" not in argv[0]:
        print("usage: probe_child MODULE:FUNCTION ARGS_JSON", file=sys.stderr)
        return 2
    module_name, _, function_name = argv[0].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    answer = function(*json.loads(argv[1]))
    print(MARKER + json.dumps(_jsonable(answer)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
