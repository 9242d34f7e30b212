"""The per-submitter quota: how many unfinished tasks one API token may have.

Callers: :class:`~testfleet.coordinator.task_lifecycle.TaskLifecycle` keeps one
:class:`SubmitterQuota`: the state counts each task in when it is submitted
(or recovered at start-up) and out when it finishes, and asks
:meth:`SubmitterQuota.refusal` before accepting a submission. Both happen in
the loop's one writer, so two submissions racing each other are applied one
after the other and cannot both slip under the limit.

Decisions (README, "Limits"):

- *Unfinished* counts: queued, assigned and running. A token whose tasks all
  run already holds the fleet as surely as one whose tasks wait, and "queued"
  alone would let a fast fleet hide how much one submitter has in flight.
- The submitter is the API token (``submitted_by``, its id), not its name.
- A submission that would go past the limit is refused whole: accepting part
  of a batch would leave the caller to find out which part.
"""

from __future__ import annotations

from collections import Counter

#: The coordinator flag that sets the limit (named in the refusal).
QUOTA_FLAG = "--max-queued-per-submitter"


class SubmitterQuota:
    """Unfinished tasks per submitting token, and the limit on them (0: none)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def __len__(self) -> int:
        """Submitters with unfinished tasks (one that has none is forgotten)."""
        return len(self._open)

    def held(self, submitted_by: str) -> int:
        """Unfinished tasks ``submitted_by`` has now."""
        return self._open[submitted_by]

    def refusal(self, submitted_by: str | None, adding: int) -> str | None:
        """Why ``submitted_by`` may not add ``adding`` tasks now, or None if it may.
        Tasks without a submitter (only in-process tests submit without a token)
        are never limited."""
        if self.limit <= 0 or submitted_by is None:
            return None
        held = self._open[submitted_by]
        if held + adding <= self.limit:
            return None
        return (
            f"this submission of {adding} task(s) would give the submitting token "
            f"{held + adding} unfinished tasks (it has {held} queued, assigned or running); "
            f"the limit is {self.limit} (testfleet coordinator {QUOTA_FLAG}). Nothing in "
            "this request was accepted; submit again once some have finished."
        )

    def add(self, submitted_by: str | None) -> None:
        """Count one more unfinished task of ``submitted_by``."""
        if submitted_by is not None:
            self._open[submitted_by] += 1

    def release(self, submitted_by: str | None) -> None:
        """One task of ``submitted_by`` has finished."""
        if submitted_by is None:
            return
        left = self._open[submitted_by] - 1
        if left > 0:
            self._open[submitted_by] = left
        else:
            del self._open[submitted_by]
