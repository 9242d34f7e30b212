"""Each worker's speed, measured from the work it finished: speed factors and slow-downs.

Callers: the coordinator state (the one writer) calls :meth:`WorkerSpeeds.record`
for every completed attempt it counts (and for each test of a pytest chunk),
and hands :attr:`WorkerSpeeds.factors` and :attr:`WorkerSpeeds.typical` to the
scheduling policy in its view; :meth:`WorkerSpeeds.seed` replays the store's
history at start-up (:mod:`testfleet.store.speed_queries`). The state view
shows :meth:`WorkerSpeeds.status` in the workers API, the CLI and the metrics.
Pure: no I/O, no clock (``now`` is passed in), deterministic.

Terms:

* **work key** (:mod:`testfleet.domain.work_keys`): attempts that did the same
  work. Durations compare only within one key *and* one hardware class (a job
  a GPU speeds up is not evidence that the GPU worker is a fast CPU).
* **normalised seconds**: a sample's seconds times its worker's speed factor at
  the time: what a typical (factor 1.0) worker of that class would have taken.
* **typical seconds** of a key on a class: the median normalised seconds of its
  last ``key_window`` samples. Policies read it to estimate a task's duration.
* **ratio sample**: when a worker finishes work whose key other workers of its
  class have run, the median of *their* seconds over its seconds: 2.0 means it
  took half the time its peers took. Its own samples are left out, or a worker
  would mostly be compared with itself; a sample that had no peer in the window
  when it came gets its ratio when the first peer's sample arrives (with two
  workers, the first to finish each key would otherwise never be compared).
  Raw seconds, not normalised ones: normalising by factors that are themselves
  measured this way would pin whichever worker was measured first as the
  reference.
* **speed factor**: the median of a worker's last ``worker_window`` ratio
  samples, once it has ``min_samples`` of them; 1.0 until then (typical, not
  assumed fast or slow). A window, not all history, so that the factor follows
  a machine that changes; the median, so that one odd run does not move it.
* **baseline**: an exponentially weighted average of the worker's factor
  (weight ``baseline_weight`` per sample), frozen while the worker is slow so
  that a slow-down does not become the new normal while it lasts.
* **slowed**: the factor fell under ``slow_fraction`` of the baseline (thermal
  throttling, a noisy neighbour). :meth:`WorkerSpeeds.record` returns a
  :class:`SpeedChange` when a worker becomes slow and when it recovers (its
  factor back over ``recover_fraction`` of the baseline: a gap between the two
  so a worker on the edge does not flap).
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from testfleet.domain.enums import HardwareKind
from testfleet.domain.work_keys import SpeedSample

#: Samples shorter than this say more about overheads than about speed.
MIN_SAMPLE_SECONDS = 0.05
#: Ratio samples are clamped to this band: a worker 100 times faster or slower
#: than its peers is a measurement problem, and one such sample must not dominate.
_RATIO_BOUNDS = (0.01, 100.0)


class SpeedChangeKind(StrEnum):
    SLOWED = "slowed"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class SpeedChange:
    """A worker became slow against its own baseline, or recovered (logged, counted)."""

    worker_id: str
    kind: SpeedChangeKind
    factor: float
    baseline: float


@dataclass(frozen=True, slots=True)
class WorkerSpeed:
    """One worker's measured speed, as the API and the CLI show it."""

    #: 1.0 = typical for its hardware class; 2.0 = does the same work in half the time.
    factor: float
    #: Ratio samples it has (its factor leaves 1.0 at ``min_samples``).
    samples: int
    baseline: float
    slowed: bool


#: A worker with no ratio samples yet: typical, not assumed fast or slow.
UNMEASURED = WorkerSpeed(1.0, 0, 1.0, False)


@dataclass(frozen=True, slots=True)
class SpeedSettings:
    key_window: int = 16
    worker_window: int = 32
    min_samples: int = 5
    baseline_weight: float = 0.05
    slow_fraction: float = 0.6
    recover_fraction: float = 0.8
    #: Work keys remembered, oldest forgotten first (bounded memory).
    max_keys: int = 100_000

    def __post_init__(self) -> None:
        if self.key_window < 1 or self.worker_window < 1 or self.min_samples < 1:
            raise ValueError("key_window, worker_window and min_samples must be at least 1")
        if not 0 < self.baseline_weight <= 1:
            raise ValueError("baseline_weight must be in (0, 1]")
        if not 0 < self.slow_fraction < self.recover_fraction <= 1:
            raise ValueError("need 0 < slow_fraction < recover_fraction <= 1")


@dataclass(slots=True)
class _Worker:
    ratios: deque[float]
    factor: float = 1.0
    baseline: float = 1.0
    slowed: bool = False


@dataclass(slots=True)
class _Sample:
    worker_id: str
    seconds: float
    normalised: float
    #: It has given its worker a ratio sample (it had a peer in the window).
    compared: bool


@dataclass(slots=True)
class _KeyClass:
    #: Newest last.
    samples: deque[_Sample]
    typical: float = 0.0


@dataclass(slots=True)
class WorkerSpeeds:
    """The speed books of a fleet (see the module docstring)."""

    settings: SpeedSettings = field(default_factory=SpeedSettings)
    _workers: dict[str, _Worker] = field(default_factory=dict)
    _keys: dict[str, dict[HardwareKind, _KeyClass]] = field(default_factory=dict)
    #: worker id -> factor, for workers whose factor is measured (not 1.0 by default).
    factors: dict[str, float] = field(default_factory=dict)
    #: work key -> hardware class -> typical seconds on a factor-1.0 worker.
    typical: dict[str, dict[HardwareKind, float]] = field(default_factory=dict)

    def record(
        self, worker_id: str, hardware: HardwareKind, key: str, seconds: float
    ) -> SpeedChange | None:
        """File one finished piece of work; returns a change of slow state, if any."""
        if not seconds >= MIN_SAMPLE_SECONDS:  # also drops NaN
            return None
        settings = self.settings
        worker = self._workers.get(worker_id)
        if worker is None:
            worker = self._workers[worker_id] = _Worker(deque(maxlen=settings.worker_window))
        per_class = self._keys.get(key)
        if per_class is None:
            per_class = self._keys[key] = {}
            if len(self._keys) > settings.max_keys:
                oldest = next(iter(self._keys))
                del self._keys[oldest]
                self.typical.pop(oldest, None)
        books = per_class.get(hardware)
        if books is None:
            # The first sample of a key on a class: no peer to compare with, and
            # its typical time is its own (what the general path below gives,
            # without its scans; most keys of a large fleet's trace are new).
            normalised = seconds * worker.factor
            samples = deque([_Sample(worker_id, seconds, normalised, False)], settings.key_window)
            per_class[hardware] = _KeyClass(samples, normalised)
            self.typical.setdefault(key, {})[hardware] = normalised
            return None
        had_peer = any(s.worker_id != worker_id for s in books.samples)
        change = self._compare(worker_id, worker, books, seconds)
        books.samples.append(_Sample(worker_id, seconds, seconds * worker.factor, had_peer))
        # Samples that had no peer when they came are compared now that one has:
        # with two workers, the first to finish a key would otherwise never be.
        for sample in list(books.samples):
            if not sample.compared and sample.worker_id != worker_id:
                peer = self._workers[sample.worker_id]
                later = self._compare(sample.worker_id, peer, books, sample.seconds)
                change = change or later
        books.typical = statistics.median(s.normalised for s in books.samples)
        self.typical.setdefault(key, {})[hardware] = books.typical
        return change

    def _compare(
        self, worker_id: str, worker: _Worker, books: _KeyClass, seconds: float
    ) -> SpeedChange | None:
        """Add a ratio sample for ``seconds`` against the other workers' samples of
        the key, if there are any (and mark theirs as compared)."""
        others = [s.seconds for s in books.samples if s.worker_id != worker_id]
        if not others:
            return None
        for sample in books.samples:
            if sample.worker_id == worker_id:
                sample.compared = True
        low, high = _RATIO_BOUNDS
        ratio = min(high, max(low, statistics.median(others) / seconds))
        return self._add_ratio(worker_id, worker, ratio)

    def _add_ratio(self, worker_id: str, worker: _Worker, ratio: float) -> SpeedChange | None:
        settings = self.settings
        worker.ratios.append(ratio)
        if len(worker.ratios) < settings.min_samples:
            return None
        first = worker_id not in self.factors
        worker.factor = statistics.median(worker.ratios)
        self.factors[worker_id] = worker.factor
        if first:
            worker.baseline = worker.factor
            return None
        if not worker.slowed:
            if worker.factor < settings.slow_fraction * worker.baseline:
                worker.slowed = True
                return SpeedChange(
                    worker_id, SpeedChangeKind.SLOWED, worker.factor, worker.baseline
                )
            weight = settings.baseline_weight
            worker.baseline += weight * (worker.factor - worker.baseline)
            return None
        if worker.factor >= settings.recover_fraction * worker.baseline:
            worker.slowed = False
            return SpeedChange(worker_id, SpeedChangeKind.RECOVERED, worker.factor, worker.baseline)
        return None

    def seed(self, samples: Iterable[SpeedSample]) -> None:
        """Replay history, oldest first (at start-up, before any result arrives).
        Slow-downs found in the past are kept as state but not reported: they
        were reported when they happened."""
        for sample in samples:
            self.record(sample.worker_id, sample.hardware, sample.work_key, sample.seconds)

    def factor(self, worker_id: str) -> float:
        """The worker's speed factor (1.0 while unmeasured or unknown)."""
        return self.factors.get(worker_id, 1.0)

    def status(self, worker_id: str) -> WorkerSpeed:
        worker = self._workers.get(worker_id)
        if worker is None:
            return UNMEASURED
        return WorkerSpeed(
            self.factors.get(worker_id, 1.0), len(worker.ratios), worker.baseline, worker.slowed
        )

    @property
    def slowed(self) -> list[str]:
        """Workers slow against their own baseline now, by id."""
        return sorted(w for w, books in self._workers.items() if books.slowed)
