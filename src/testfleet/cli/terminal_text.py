"""Text from tasks and workers, made safe to show in a terminal.

Anything a task carries (argv, output, error messages, test names) and
anything a worker reports (hostname, GPU names, tags) is written by someone
other than the person reading it. Printed raw, an escape sequence in it acts
on the reader's terminal: ``\\x1b]0;...\\x07`` sets the window title,
``\\x1b[2J`` clears the screen, others move the cursor or paint over what was
shown. And Rich reads ``[...]`` as markup: ``[link=...]`` would make Rich
itself emit a hyperlink escape.

Callers: ``cli/app.py`` makes its two consoles :class:`SafeConsole`, so
every string printed through them, plain or markup, tables included, has its
control characters shown as visible escapes (the one place that covers every
printer); ``cli/tables.py``, ``cli/waiting.py`` and ``cli/results.py`` use
:func:`shown` for each outside string they put into markup, and
:func:`printable` where no console is involved (CSV to a terminal).
``--json`` output (``cli/app.py``'s ``print_json``) is :func:`json_text`: the
same control characters written as JSON escapes, so it stays JSON that reads
back to the same values.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.text import Text

#: What is never written raw: C0 controls but tab and newline, DEL, C1 controls
#: (U+0080..U+009F; U+009B is a one-character CSI to some terminals), and the
#: bidirectional overrides and isolates that make text read other than it is.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


#: What JSON leaves raw but a terminal may obey: JSON itself must escape only C0
#: controls (orjson does), so DEL, the C1 controls and the bidirectional
#: controls of :data:`_UNPRINTABLE` are escaped here.
_RAW_IN_JSON = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape
    (ESC as ``\\x1b``, BEL as ``\\x07``); tab and newline kept, and a CRLF
    line end read as a newline."""
    return _UNPRINTABLE.sub(_visible, text.replace("\r\n", "\n"))


def json_text(data: Any) -> str:
    """``data`` as indented JSON in which no control character is raw: orjson
    escapes C0 (``\\u001b``), and DEL, C1 (``\\u009b``) and the bidirectional
    controls are escaped here. Those characters can only stand inside JSON
    strings, where ``\\uXXXX`` means the same character, so the text still
    parses to exactly ``data``."""
    text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    return _RAW_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def shown(value: object) -> str:
    """An outside value as Rich markup that prints it literally: control
    characters made visible, then ``[`` escaped so it is never a tag."""
    return escape(printable(str(value)))


class SafeConsole(Console):
    """A Rich console that never writes a control character it was handed.

    Rich turns every string it prints (``print``'s arguments, table cells,
    titles) into a :class:`~rich.text.Text` through :meth:`render_str`; this
    one makes the string :func:`printable` first. Rich's own styling is added
    after that, so colours still work. Markup is still markup: strings from
    outside go in through :func:`shown`.
    """

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)
