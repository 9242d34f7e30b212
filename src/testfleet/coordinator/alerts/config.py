"""The alerts file: rules' thresholds and ``for`` durations, and webhook receivers.

Callers: ``testfleet coordinator --alerts FILE`` loads it with
:func:`load_alerts_config` before anything starts, so a bad file is a one-line
start-up error naming the key and the fix; without a file the coordinator runs
:class:`AlertsConfig`'s defaults (every rule on, no receivers). The engine and
the notifier read the parsed models; nothing else parses the file.

A file is TOML, every key optional::

    evaluation_interval_seconds = 5

    [rules.queue_stuck]
    for_seconds = 60
    stuck_seconds = 600

    [rules.flaky_rate]
    enabled = false

    [[receivers]]
    name = "ops"
    url = "https://alertmanager.example/api/v2/alerts"
    kind = "alertmanager"          # or "slack"
    repeat_interval_seconds = 3600
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from testfleet.domain.alerts import AlertRule, ReceiverKind, Severity

#: The longest any duration in the file may be: a week.
MAX_SECONDS = 7 * 24 * 3600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleConfig(_Strict):
    """What every rule has: on or off, how long its condition must hold before it
    fires (``for_seconds``; 0 fires at the first evaluation that sees it), and
    the severity label of its alerts."""

    enabled: bool = True
    for_seconds: float = Field(default=0.0, ge=0, le=MAX_SECONDS)
    severity: Severity = Severity.WARNING


class WorkerLostRule(RuleConfig):
    """A worker stopped answering for longer than the heartbeat timeout; it
    resolves when the worker comes back, or ``resolve_after_seconds`` after its
    last heartbeat (a worker that never returns stops alerting)."""

    severity: Severity = Severity.CRITICAL
    resolve_after_seconds: float = Field(default=3600.0, gt=0, le=MAX_SECONDS)


class NoWorkerRule(RuleConfig):
    """At least ``min_tasks`` queued tasks that no connected worker can run."""

    for_seconds: float = Field(default=60.0, ge=0, le=MAX_SECONDS)
    min_tasks: int = Field(default=1, ge=1)


class QueueStuckRule(RuleConfig):
    """The oldest ready task has waited longer than ``stuck_seconds`` and no
    attempt started in that time either."""

    stuck_seconds: float = Field(default=600.0, gt=0, le=MAX_SECONDS)


class AttemptOverdueRule(RuleConfig):
    """An attempt runs past its task's timeout plus ``grace_seconds`` (the worker
    should have stopped it; the coordinator's own deadline comes later)."""

    grace_seconds: float = Field(default=0.0, ge=0, le=MAX_SECONDS)


class FailureRateRule(RuleConfig):
    """Failed or timed-out attempts over all finished ones in the last
    ``window_seconds`` above ``threshold``, once at least ``min_attempts`` ended."""

    for_seconds: float = Field(default=300.0, ge=0, le=MAX_SECONDS)
    window_seconds: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    threshold: float = Field(default=0.5, ge=0, le=1)
    min_attempts: int = Field(default=10, ge=1)


class InfrastructureErrorsRule(RuleConfig):
    """At least ``threshold`` attempts lost or classified infrastructure in the
    last ``window_seconds``."""

    window_seconds: float = Field(default=900.0, gt=0, le=MAX_SECONDS)
    threshold: int = Field(default=5, ge=1)


class BenchmarkRegressionRule(RuleConfig):
    """A benchmark series the regression finder flags (one alert per series)."""


class FlakyRateRule(RuleConfig):
    """Tests that passed only on a rerun, over all passed or failed tests in the
    last ``window_seconds``, above ``threshold`` once ``min_tests`` were decided."""

    window_seconds: float = Field(default=3600.0, gt=0, le=MAX_SECONDS)
    threshold: float = Field(default=0.1, ge=0, le=1)
    min_tests: int = Field(default=20, ge=1)


class RulesConfig(_Strict):
    """One section per :class:`AlertRule`, named by its value."""

    worker_lost: WorkerLostRule = WorkerLostRule()
    no_worker_for_queued_work: NoWorkerRule = NoWorkerRule()
    queue_stuck: QueueStuckRule = QueueStuckRule()
    attempt_overdue: AttemptOverdueRule = AttemptOverdueRule()
    failure_rate_high: FailureRateRule = FailureRateRule()
    infrastructure_errors: InfrastructureErrorsRule = InfrastructureErrorsRule()
    benchmark_regression: BenchmarkRegressionRule = BenchmarkRegressionRule()
    flaky_rate: FlakyRateRule = FlakyRateRule()

    def of(self, rule: AlertRule) -> RuleConfig:
        """The section of ``rule`` (every rule has one: a test checks the names match)."""
        section: RuleConfig = getattr(self, rule.value)
        return section


class ReceiverConfig(_Strict):
    """One webhook: where, which payload, and how hard to try."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(max_length=2000)
    kind: ReceiverKind = ReceiverKind.ALERTMANAGER
    #: A firing alert is sent again this often while it keeps firing.
    repeat_interval_seconds: float = Field(default=3600.0, gt=0, le=MAX_SECONDS)
    #: Each try's limit (connect, send and answer).
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Tries per notification before it is recorded as failed.
    max_attempts: int = Field(default=3, ge=1, le=20)
    #: The wait before the second try; it doubles for each next one.
    backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    #: Notifications waiting for this receiver beyond this are dropped (and counted).
    queue_size: int = Field(default=100, ge=1, le=100_000)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class AlertsConfig(_Strict):
    """The whole file (see the module docstring); ``AlertsConfig()`` is the default."""

    #: How often the rules are evaluated.
    evaluation_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    rules: RulesConfig = RulesConfig()
    receivers: tuple[ReceiverConfig, ...] = ()

    @field_validator("receivers")
    @classmethod
    def _unique_names(cls, value: tuple[ReceiverConfig, ...]) -> tuple[ReceiverConfig, ...]:
        names = [receiver.name for receiver in value]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"receiver names must be unique; repeated: {', '.join(repeated)}")
        return value


class AlertsConfigError(Exception):
    """The alerts file cannot be used; the message is one line naming the key and the fix."""


def parse_alerts_config(document: dict[str, Any], source: str = "the alerts file") -> AlertsConfig:
    """Check a parsed TOML document; raises :class:`AlertsConfigError` on the first problem."""
    try:
        return AlertsConfig.model_validate(document)
    except ValidationError as exc:
        raise AlertsConfigError(_first_problem(exc, source)) from None


def load_alerts_config(path: Path) -> AlertsConfig:
    """Read and check the alerts file at ``path`` (see the module docstring)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertsConfigError(
            f"--alerts {path}: cannot read it ({exc.strerror or exc}); give an existing TOML file"
        ) from None
    except UnicodeDecodeError:
        raise AlertsConfigError(f"--alerts {path}: not UTF-8 text; save it as UTF-8") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AlertsConfigError(f"--alerts {path}: not valid TOML: {exc}") from None
    return parse_alerts_config(document, f"--alerts {path}")


def _first_problem(exc: ValidationError, source: str) -> str:
    """One line for the first error: the key's dotted path, what is wrong, the fix."""
    error = exc.errors()[0]
    location = error["loc"]
    key = ".".join(
        f"receivers[{part}]"
        if isinstance(part, int) and i > 0 and location[i - 1] == "receivers"
        else str(part)
        for i, part in enumerate(location)
    ).replace(".receivers[", "[")
    if error["type"] == "extra_forbidden":
        known = ", ".join(_known_keys(location[:-1]))
        return f"{source}: unknown key {key!r}; the keys allowed there are: {known}"
    if error["type"] == "missing":
        return f"{source}: {key}: required; add it"
    shown = error.get("input")
    given = "" if isinstance(shown, dict | list) else f" (got {shown!r})"
    fix = "fix it, or remove the key for its default"
    return f"{source}: {key or 'the file'}: {error['msg']}{given}; {fix}"


def _known_keys(location: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``location`` (a path of the error) accepts."""
    model: type[BaseModel] = AlertsConfig
    for part in location:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return sorted(model.model_fields)
