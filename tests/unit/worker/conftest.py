"""Fixtures the worker's real-process tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from process_signals import Fifo


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Callable[[str], Fifo]]:
    """Makes a :class:`Fifo` named ``name`` in ``tmp_path``; all are closed after the test."""
    made: list[Fifo] = []

    def make(name: str) -> Fifo:
        made.append(Fifo(tmp_path / name))
        return made[-1]

    yield make
    for each in made:
        each.close()
