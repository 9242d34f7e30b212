"""The dashboard's Jinja2 templates: one environment, autoescaped, from package data.

Callers: :mod:`.routes` (pages) and :mod:`.live` (the overview fragment the
event stream sends). Templates load from ``templates/`` beside this module
(shipped as package data, see pyproject.toml); every link in them is a path
under ``base`` (the app's ``root_path`` plus ``/dashboard``), never a URL
with a host, so the pages work behind a prefix and load nothing from elsewhere
(a unit test reads every template and static file for ``http(s)://``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES_DIR = Path(__file__).with_name("templates")


def _seconds(value: float | None) -> str:
    """A duration for people: ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if value is None:
        return "-"
    value = max(0.0, value)  # a heartbeat stamped a moment after the page's "now"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _time(value: float | None) -> str:
    """An epoch time as UTC ``YYYY-MM-DD HH:MM:SS``."""
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    env.filters["time"] = _time
    env.filters["percent"] = _percent
    return env


class Templates:
    """Renders a template with the values every page needs (``base``, ``now``)."""

    def __init__(self) -> None:
        self.env = environment()

    def render(self, name: str, **values: Any) -> str:
        return self.env.get_template(name).render(**values)
