"""The bounds of one test's record, in one place for both sides of the session pipe.

Callers: :mod:`testfleet.domain.pytest_tasks` validates every
:class:`~testfleet.domain.pytest_tasks.TestRecord` against these caps, and the
worker's session child builds records within them
(``worker/pytest_sessions/report_data.py``). The child runs under whatever
interpreter a task names, which may have pytest but not testfleet, so it loads
this file by its path (``session_child.py``). Hence this module imports
nothing and runs on Python 3.9+, like ``domain/session_env.py``.

One definition matters: a child that cut a field longer than the model
accepts would send a record the worker cannot read, which it replaces with a
failure saying so (``tests/unit/worker/test_pytest_session_limits.py``
checks both sides at and just past each cap).
"""

#: Per-report caps keep a chunk of many failing tests inside one frame.
MAX_LONGREPR_CHARS = 16 * 1024
MAX_SECTION_CHARS = 16 * 1024
MAX_SECTIONS = 32
MAX_USER_PROPERTIES = 256
MAX_NODE_ID_CHARS = 4096
MAX_PATH_CHARS = 4096
MAX_KEYWORDS = 256
MAX_KEYWORD_CHARS = 256
#: Reports one record may hold: the test's own, plus its kept subtests'.
MAX_REPORTS_PER_TEST = 10_000
#: Subtest reports kept per test: this many failed ones and this many others.
MAX_SUBTESTS_KEPT = 4096
#: Text (failures, captured output, descriptions) the subtest reports of one
#: test share before each keeps only a lean version (see :mod:`testfleet.domain.pytest_tasks`).
SUBTEST_TEXT_BUDGET = 1024 * 1024
#: What a lean subtest report keeps: its failure text's end, a short description.
LEAN_LONGREPR_CHARS = 512
LEAN_SUBTEST_MSG_CHARS = 128
LEAN_SUBTEST_KWARGS = 8
LEAN_SUBTEST_KEY_CHARS = 32
LEAN_SUBTEST_VALUE_CHARS = 64
#: All text of one record (whatever sent it): bounds a record that ignores the budget.
MAX_RECORD_TEXT_CHARS = 16 * 1024 * 1024
#: A subtest's keyword arguments, as pytest keeps them (``saferepr`` text).
MAX_SUBTEST_KWARGS = 64
MAX_SUBTEST_KEY_CHARS = 256
MAX_SUBTEST_VALUE_CHARS = 1024
#: Attributes a plugin set on a report (pytest's reports take arbitrary extras).
MAX_REPORT_EXTRAS = 32
MAX_REPORT_EXTRA_NAME_CHARS = 256
MAX_REPORT_EXTRA_CHARS = 4096
#: What pytest's reports keep in their ``__dict__`` themselves: an extra never
#: has one of these names (it would replace pytest's own field on the client).
STANDARD_ATTRIBUTES = frozenset(
    {
        "_id",
        "nodeid",
        "location",
        "keywords",
        "outcome",
        "longrepr",
        "when",
        "user_properties",
        "sections",
        "duration",
        "start",
        "stop",
        "wasxfail",
        "context",
    }
)
#: Distinct warnings kept per test (each with its count); more are only counted.
MAX_WARNINGS = 64
#: A warning's class name ("DeprecationWarning").
MAX_WARNING_CATEGORY_CHARS = 256
#: The largest line number a location or a skip keeps (pytest's are C ints).
MAX_LINE_NUMBER = 2**31 - 1
