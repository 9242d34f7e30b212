"""The session pipe's messages: commands the worker sends a session child, events it sends back.

Callers: the worker side (:mod:`...pytest_sessions.session_process` and
:mod:`...pytest_sessions.sessions`) sends commands with :func:`encode` and
reads events with :func:`decode_event`; the session child
(``session_child.py``) reads commands with :func:`decode_command` and sends
events with :func:`encode`. Each message travels as one JSON object on one
line, tagged ``"cmd"`` (commands) or ``"event"`` (events) with its kind; see
``session_child.py`` for what each means in the conversation.

The child runs under whatever interpreter a task names, which may have pytest
but not testfleet, so it loads this file by its path: it imports only the
standard library and runs on Python 3.9+ (no ``match``, no ``slots=`` or
``kw_only=`` dataclasses, annotations never evaluated). The bounds of what a
record may hold are :mod:`testfleet.domain.pytest_limits`, loaded the same way.

Decoding is lenient in the direction that cannot be trusted: a field of the
wrong type becomes its default (as before these types existed), an unknown
kind decodes to None (ignored), and a test record stays a plain dict here for
the worker to validate as a ``TestRecord``.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, Union

#: Sent in the child's ``ready`` event; the worker and the child are one install.
PROTOCOL_VERSION = 2


class CommandKind(str, Enum):  # noqa: UP042 (StrEnum is 3.11+; this runs on 3.9)
    """The ``"cmd"`` tag of a command (worker to child)."""

    ACTIVATE = "activate"
    RUN = "run"
    EXIT = "exit"


class EventKind(str, Enum):  # noqa: UP042
    """The ``"event"`` tag of an event (child to worker)."""

    READY = "ready"
    FATAL = "fatal"
    COLLECTED = "collected"
    COLLECTED_MORE = "collected_more"
    START = "start"
    PHASE = "phase"
    TEST = "test"
    CHUNK_DONE = "chunk_done"
    SESSION_END = "session_end"
    ERROR = "error"


# ------------------------------------------------------------------ commands


@dataclass(frozen=True)
class Activate:
    """Turn a zygote into a collected session of one run (see ``session_child``)."""

    cwd: str
    args: list[str]
    env: dict[str, str]
    basetemp: str
    cache_dir: str
    worker: str = "?"
    full_collection: bool = False
    #: ``TestConfig.plugins`` as JSON (``{"name", "distribution", "version"}``
    #: each), or None: whatever the child's pytest finds.
    plugins: list[dict[str, Any]] | None = None

    kind = CommandKind.ACTIVATE


@dataclass(frozen=True)
class RunChunk:
    """Run ``node_ids`` with the attempt's ``TESTFLEET_*`` variables set."""

    chunk: int
    node_ids: list[str]
    env: dict[str, str] = field(default_factory=dict)

    kind = CommandKind.RUN


@dataclass(frozen=True)
class Exit:
    """End the session normally (pytest finishes its session)."""

    kind = CommandKind.EXIT


@dataclass(frozen=True)
class Invalid:
    """What the child makes of a line that is no command it knows (never sent)."""

    text: str


# Union, not |: these aliases are evaluated at runtime, on 3.9 too.
Command = Union[Activate, RunChunk, Exit]  # noqa: UP007


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class Ready:
    """The zygote imported pytest and waits for ``activate``."""

    protocol: int = 0
    pid: int = 0
    python: str = ""
    python_version: str = ""
    pytest_version: str = ""

    kind = EventKind.READY


@dataclass(frozen=True)
class Fatal:
    """The child cannot go on (no pytest, a bad ``activate``); it exits next."""

    message: str = ""

    kind = EventKind.FATAL


@dataclass(frozen=True)
class Collected:
    """Activation collected the session (lazy: nothing yet); ``errors``:
    ``{"nodeid", "longrepr"}`` per file or node pytest could not collect."""

    count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    python: str = ""
    pytest_version: str = ""

    kind = EventKind.COLLECTED


@dataclass(frozen=True)
class CollectedMore:
    """A lazy session collected the files a chunk needs (``count``: tests so far)."""

    count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    kind = EventKind.COLLECTED_MORE


@dataclass(frozen=True)
class Start:
    """A test starts: what the worker needs to describe it if the child dies."""

    nodeid: str
    chunk: Any = None
    location: dict[str, Any] | None = None
    keywords: list[str] = field(default_factory=list)

    kind = EventKind.START


@dataclass(frozen=True)
class Phase:
    """One report of the running test itself (not of its subtests)."""

    nodeid: str
    when: str
    outcome: str
    duration: float = 0.0
    start: float = 0.0
    stop: float = 0.0

    kind = EventKind.PHASE


@dataclass(frozen=True)
class TestDone:
    """A test finished; ``record`` is a ``TestRecord`` as JSON (``report_data``)."""

    __test__ = False  # not a pytest test class, despite the name

    record: dict[str, Any]
    chunk: Any = None

    kind = EventKind.TEST


@dataclass(frozen=True)
class ChunkDone:
    """Every node id of the chunk has its record; ``interrupted``: a test
    stopped the session (``pytest.exit()``) and it is ending."""

    chunk: Any = None
    interrupted: bool = False

    kind = EventKind.CHUNK_DONE


@dataclass(frozen=True)
class SessionEnd:
    """pytest's session ended (the last event), with pytest's exit code."""

    exit_code: int = -1

    kind = EventKind.SESSION_END


@dataclass(frozen=True)
class Error:
    """The child did not understand a command; it goes on waiting."""

    message: str = ""

    kind = EventKind.ERROR


Event = Union[  # noqa: UP007
    Ready, Fatal, Collected, CollectedMore, Start, Phase, TestDone, ChunkDone, SessionEnd, Error
]
Message = Union[Command, Event]  # noqa: UP007

_EVENTS = {
    cls.kind.value: cls
    for cls in (
        Ready,
        Fatal,
        Collected,
        CollectedMore,
        Start,
        Phase,
        TestDone,
        ChunkDone,
        SessionEnd,
        Error,
    )
}
_COMMANDS = {cls.kind.value: cls for cls in (Activate, RunChunk, Exit)}


def encode(message: Message) -> bytes:
    """One JSON line for ``message``, tagged with its kind.

    Shallow: a record's dict is written as it is, never copied (records of
    tests with thousands of subtests are megabytes). Lone surrogates (output a
    test could not decode) become "?" rather than breaking the reader.
    """
    tag = "cmd" if isinstance(message.kind, CommandKind) else "event"
    data = {tag: message.kind.value}
    for item in fields(message):
        data[item.name] = getattr(message, item.name)
    line = json.dumps(data, ensure_ascii=False, default=str) + "\n"
    return line.encode("utf-8", errors="replace")


def decode_event(raw: Any) -> Event | None:
    """The event a line's JSON object holds; None when it is no event we know."""
    if not isinstance(raw, dict):
        return None
    cls = _EVENTS.get(str(raw.get("event")))
    return None if cls is None else _build(cls, raw)


def decode_command(raw: Any) -> Command | Invalid:
    """The command a line's JSON object holds, or :class:`Invalid` saying what came."""
    if isinstance(raw, dict):
        cls = _COMMANDS.get(str(raw.get("cmd")))
        if cls is not None:
            built: Command | None = _build(cls, raw)
            if built is not None:
                return built
    return Invalid(repr(raw)[:500])


#: The runtime type each field's annotation names (annotations stay text on 3.9).
_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
}


def _build(cls: Any, raw: dict[str, Any]) -> Any:
    """``cls`` from ``raw``'s fields, or None when a required one is missing or
    of the wrong type. An optional field of the wrong type gets its default."""
    values: dict[str, Any] = {}
    for item in fields(cls):
        text = str(item.type)
        # "int", "list[str]", "dict[str, Any] | None": the part before "[" or " ".
        optional = text.endswith(" | None")
        expected = _TYPES.get(text.split("[")[0].split(" ")[0])
        value = raw.get(item.name)
        if value is None and optional:
            values[item.name] = None
        elif value is not None and _fits(value, expected):
            values[item.name] = float(value) if expected is float else value
        elif item.default is MISSING and item.default_factory is MISSING:
            return None
    return cls(**values)


def _fits(value: Any, expected: type | None) -> bool:
    if expected is None:  # Any
        return True
    if isinstance(value, bool):  # a bool is an int to isinstance, never to us
        return expected is bool
    if expected is float:
        return isinstance(value, (int, float))
    return isinstance(value, expected)
