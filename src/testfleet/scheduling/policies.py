"""The placement policies by name: what ``--scheduling-policy`` and the simulator pick from.

Callers: :class:`~testfleet.coordinator.state.CoordinatorState` (from
``CoordinatorSettings.scheduling_policy``), the coordinator's command line and
``benchmarks/simulate.py``. Each policy is a pure function with
:func:`~testfleet.scheduling.scheduler.schedule`'s signature.
"""

from __future__ import annotations

from enum import StrEnum

from testfleet.scheduling.estimated_finish import estimated_finish
from testfleet.scheduling.scheduler import SchedulingPolicy, schedule


class PolicyName(StrEnum):
    #: The least capable worker that fits (``scheduler.schedule``).
    BEST_FIT = "best-fit"
    #: The worker expected to finish first, from measured history
    #: (``estimated_finish.estimated_finish``).
    ESTIMATED_FINISH = "estimated-finish"


_POLICIES: dict[PolicyName, SchedulingPolicy] = {
    PolicyName.BEST_FIT: schedule,
    PolicyName.ESTIMATED_FINISH: estimated_finish,
}


def policy_for(name: PolicyName) -> SchedulingPolicy:
    """The policy called ``name``."""
    return _POLICIES[name]
