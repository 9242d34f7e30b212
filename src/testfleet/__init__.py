"""testfleet: run test suites and model benchmarks across a fleet of unlike machines.

The coordinator owns one DuckDB file and schedules tasks onto workers that connect
out to it over a WebSocket. See ARCHITECTURE.md for the invariants.
"""

__version__ = "0.1.0"
