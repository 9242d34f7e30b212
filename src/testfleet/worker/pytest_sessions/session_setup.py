"""How a worker's pytest session starts: what a zygote imports, which plugins
a session loads, the arguments pytest gets.

Loaded by ``session_child.py`` from its own directory (by path, like
``report_data.py``: a session may run under an interpreter without testfleet)
and imported by the unit tests. Standard library only, Python 3.9+; pytest
objects are read by duck typing.

The rule behind all of it: a session starts as ``pytest`` would start on the
machine that started the run, in that project. So a zygote imports only what
``python -m pytest`` imports before reading any configuration
(:func:`preload`), and a session loads the installed plugins the run's own
pytest loaded, no more (:func:`blocked_plugins`) and no fewer
(:func:`missing_plugins`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

Event = dict[str, Any]

#: Plugins a run's pytest may have loaded that a worker session can do
#: without: testfleet's own client plugin (inert in a worker's session), so
#: a worker whose ``python`` lacks testfleet can run the chunks.
OPTIONAL_PLUGINS = frozenset({"testfleet"})


def preload() -> None:
    """Import pytest's built-in plugins now, while nobody waits for this process.

    Only those: ``python -m pytest`` imports them before it reads any
    configuration too, and pytest never rewrites them. Installed plugins
    (``pytest11`` entry points) and their packages are not imported here:
    pytest marks their distributions' modules for assertion rewriting once
    it has read the project's configuration, and one imported before that
    is not rewritten and draws a ``PytestAssertRewriteWarning`` (an error
    under ``filterwarnings = error``); a warning raised while importing one
    is pytest's to filter. Reading the entry points' metadata imports
    nothing and warms the caches pytest reads them through.
    """
    try:
        from _pytest.config import default_plugins
    except ImportError:
        return
    for name in default_plugins:
        try:
            importlib.import_module("_pytest." + name)
        except Exception:  # pytest.main reports it, if it matters
            continue
    installed_plugins()


def installed_plugins() -> dict[str, Any]:
    """The ``pytest11`` entry points of this interpreter's environment, by name."""
    try:
        from importlib.metadata import entry_points

        try:
            found = list(entry_points(group="pytest11"))
        except TypeError:  # Python 3.9: a mapping of groups
            found = list(entry_points().get("pytest11", []))
    except Exception:  # old or broken metadata: pytest will load what it can
        return {}
    return {point.name: point for point in found}


def blocked_plugins(wanted: list[Event] | None) -> list[str]:
    """``no:NAME`` for every installed plugin the run's pytest did not load.

    Handed to ``pytest.main(plugins=...)``, which blocks them before it
    loads entry points, without touching the arguments the session (and its
    tests) see. None: the client did not say; pytest loads what it finds.
    """
    if wanted is None:
        return []
    names = {str(plugin.get("name")) for plugin in wanted}
    return ["no:" + name for name in sorted(installed_plugins()) if name not in names]


def missing_plugins(wanted: list[Event] | None, pluginmanager: Any) -> list[str]:
    """The run's plugins this session did not load, described for a message.

    Read at configure time, when pytest has loaded what it will: however a
    plugin would have been loaded (by entry point, ``-p``, ``PYTEST_PLUGINS``),
    it is there or it is not.
    """
    if wanted is None:
        return []
    loaded = {pluginmanager.get_name(plugin) for plugin, _ in pluginmanager.list_plugin_distinfo()}
    missing = []
    for plugin in wanted:
        name = str(plugin.get("name"))
        if name in loaded or name in OPTIONAL_PLUGINS:
            continue
        dist = str(plugin.get("distribution") or "")
        version = str(plugin.get("version") or "")
        missing.append(f"{dist} {version} (plugin {name!r})" if dist else repr(name))
    return missing


def session_args(args: list[str], basetemp: str, cache_dir: str) -> list[str]:
    """The user's args plus this session's own temporary and cache directories.

    The cache plugin stays on (``-p no:cacheprovider`` would make a ``--lf``
    in the project's addopts a usage error) but writes to a directory of this
    session's. Ours come after the user's options so they win, and before a
    ``--`` after which everything is a path.
    """
    ours = ["--basetemp=" + basetemp]
    if not any(arg in ("no:cacheprovider", "-pno:cacheprovider") for arg in args):
        ours[:0] = ["-o", "cache_dir=" + cache_dir]
    if "--" in args:
        cut = args.index("--")
        return args[:cut] + ours + args[cut:]
    return list(args) + ours


def requeue_conftests(session: Any) -> None:
    """Let the next lazy collection's directories see their conftests' fixtures.

    Called by the session child before each ``perform_collect`` of a lazy
    session. pytest 9.1+ parses a conftest's fixtures once, for the
    Directory node collected for its directory, and every ``perform_collect``
    makes new Directory nodes: without this, a chunk's files collected after
    the first would not see the fixtures of the conftests of their
    directories ("fixture 'pm' not found"). So each registered conftest below
    the rootdir waits again for its Directory; those at or above the rootdir
    were given to the Session once and stay there. Older pytest scopes
    fixtures by node id, which new nodes share: nothing to do.
    """
    manager = getattr(session, "_fixturemanager", None)
    pending = getattr(manager, "_pending_conftests", None)
    if not isinstance(pending, dict):
        return
    root = Path(session.config.rootpath)
    for name, plugin in session.config.pluginmanager.list_name_plugin():
        if not isinstance(name, str) or not name.endswith("conftest.py"):
            continue
        directory = Path(name).parent
        if root in directory.parents:
            pending.setdefault(directory, plugin)
