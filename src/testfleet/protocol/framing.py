"""Split a batch of items into frames that stay under the frame size limit.

Callers: the worker agent, for the ``result`` frames it re-sends after a
reconnect and the ``tests`` frames of a pytest chunk. Batching by count alone
is not enough: a result carries up to a megabyte of logs, a test record up to
megabytes of failure text, and a frame over :data:`MAX_FRAME_BYTES` is refused
by the coordinator, whereupon the worker would resend it forever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from testfleet.protocol.codec import MAX_FRAME_BYTES

T = TypeVar("T")

#: A frame's share of the limit its items may fill: room for the envelope, and
#: for MessagePack or JSON escapes making an item larger than measured.
FRAME_BUDGET_BYTES = MAX_FRAME_BYTES // 2


def split_by_size(
    items: Sequence[T],
    size_of: Callable[[T], int],
    *,
    max_items: int,
    max_bytes: int = FRAME_BUDGET_BYTES,
) -> Iterator[list[T]]:
    """``items`` in order, in runs of at most ``max_items`` whose sizes add up to at
    most ``max_bytes``; an item larger than ``max_bytes`` on its own is a run alone."""
    run: list[T] = []
    filled = 0
    for item in items:
        size = size_of(item)
        if run and (len(run) >= max_items or filled + size > max_bytes):
            yield run
            run, filled = [], 0
        run.append(item)
        filled += size
    if run:
        yield run
