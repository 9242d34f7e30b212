"""How ``--help`` shows options: flags without a ``<bool>`` value.

Typer 0.29 prints every option's type in its help panel, flags included, so
``--json``, ``--logs`` and even ``--help`` read ``--json <bool>`` as if they
took a value (0.28 left flags blank). A flag takes no value; an empty metavar
tells Typer to show none. Every ``testfleet`` command and group is built with
these classes (``cls=``); ``tests/unit/cli/test_cli_help.py`` checks every
command's help so a new command without them is caught.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup, TyperOption


def _blank_flag_metavars(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class FleetCommand(TyperCommand):
    """A command whose help shows flags (``--json``, ``--help``) without a value."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _blank_flag_metavars(super().get_params(ctx))


class FleetGroup(TyperGroup):
    """A group (``testfleet``, ``testfleet results``) whose help does the same."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _blank_flag_metavars(super().get_params(ctx))
