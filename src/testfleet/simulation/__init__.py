"""The fleet simulator: replay a trace of workers and tasks through the real
coordinator state and scheduler on simulated time (see :mod:`.engine`)."""

from testfleet.simulation.engine import SimulationError, Simulator
from testfleet.simulation.generator import generate_trace
from testfleet.simulation.report import SimulationReport
from testfleet.simulation.trace import Trace, TraceError, TraceTask, TraceWorker, load_trace

__all__ = [
    "SimulationError",
    "SimulationReport",
    "Simulator",
    "Trace",
    "TraceError",
    "TraceTask",
    "TraceWorker",
    "generate_trace",
    "load_trace",
]
