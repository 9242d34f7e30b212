"""Environment variables that tell a pytest process it runs inside a worker's session.

Its own module, importing nothing: the ``--fleet`` plugin reads it, and that
plugin is loaded by every pytest in an environment where testfleet is
installed, so it must stay cheap to import (``domain.pytest_tasks`` pulls in
pydantic).
"""

from __future__ import annotations

#: Set in the environment of a worker's pytest session: the ``--fleet``
#: plugin stays inert there (a project whose addopts name --fleet must not
#: start a fleet run from inside a chunk).
WORKER_SESSION_ENV = "TESTFLEET_WORKER_SESSION"
