"""Typed fakes for tests, shipped as real code (trio's ``testing`` package is the model).

- :class:`FakeClock`: time that moves when a test says so, or autojumps.
- :func:`channel_pair`, :class:`MemoryChannel`, :class:`MemoryConnector`: worker
  channels in memory, with a severed connection and dropped frames on demand.
- :mod:`testfleet.testing.fleet` (imported on its own: it loads the coordinator
  and DuckDB): a coordinator and worker agents in one process on those two.
"""

from testfleet.testing.fake_clock import FakeClock
from testfleet.testing.memory_channel import MemoryChannel, MemoryConnector, channel_pair

__all__ = ["FakeClock", "MemoryChannel", "MemoryConnector", "channel_pair"]
