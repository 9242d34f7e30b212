"""Revoking a worker (``RevokeWorker``): its socket is closed at once, its attempts
are requeued as for a lost worker, older credentials are refused afterwards,
and the revocation survives a restart through a real DuckDB store."""

from __future__ import annotations

from pathlib import Path

from test_coordinator_state import SETTINGS, Answer, Harness, assigned, caps, spec

from testfleet.coordinator.events import (
    Accepted,
    DrainWorker,
    RevokeWorker,
    Tick,
    WorkerConnected,
    WorkerFrame,
)
from testfleet.coordinator.state import CoordinatorState
from testfleet.coordinator.turn_output import Effects
from testfleet.coordinator.worker_identity import CredentialKind, WorkerCredential
from testfleet.domain.enums import AttemptStatus, ErrorClass, TaskStatus, WorkerStatus
from testfleet.protocol.messages import (
    PROTOCOL_VERSION,
    Accept,
    Error,
    Heartbeat,
    Hello,
    ProtocolErrorCode,
    Welcome,
)
from testfleet.security.tokens import Role, issue_token
from testfleet.security.worker_revocation import WorkerRevocation
from testfleet.store import Store


def hello(worker_id: str, session: str = "s" * 16) -> Hello:
    return Hello(
        protocol_version=PROTOCOL_VERSION,
        worker_id=worker_id,
        session_key=session,
        capabilities=caps(),
        slots=1,
    )


def token(worker_id: str, issued_at: float) -> WorkerCredential:
    return WorkerCredential(CredentialKind.TOKEN, worker_id, "tok-x", issued_at)


def revoke(h: Harness, worker_id: str) -> Effects:
    answer = Answer()
    effects = h.turn(RevokeWorker(worker_id, h.clock.now(), answer))
    assert answer.values == [Accepted([worker_id])]
    return effects


def closed_with(effects: Effects, connection: int) -> Error | None:
    errors = [e for c, e in effects.closes if c == connection]
    assert len(errors) == 1, effects.closes
    return errors[0]


def welcomed(effects: Effects, connection: int) -> bool:
    return any(c == connection and isinstance(m, Welcome) for c, m in effects.sends)


def test_revoking_closes_the_socket_at_once_and_requeues_its_attempts() -> None:
    h = Harness()
    h.submit(spec("a"))
    _, first = assigned(h.connect(1, "w1"))["a"]
    h.turn(WorkerFrame(1, Accept(attempt_ids=[first])))
    h.connect(2, "w2")  # idle, takes the task once w1 is revoked
    h.clock.advance(1)

    effects = revoke(h, "w1")

    error = closed_with(effects, 1)
    assert error is not None
    assert error.code is ProtocolErrorCode.UNAUTHORIZED
    assert "revoked" in error.message
    lost = next(a for a in effects.batch.attempts if a.attempt_id == first)
    assert lost.status is AttemptStatus.LOST
    assert lost.error_class is ErrorClass.WORKER_LOST
    assert assigned(effects)["a"][0] == 2  # requeued and placed on w2 in the same turn
    assert [w.status for w in effects.batch.workers if w.worker_id == "w1"] == [
        WorkerStatus.REVOKED
    ]
    assert h.state.workers["w1"].connection_id is None
    # Frames still in flight from the closed socket no longer count.
    effects = h.turn(WorkerFrame(1, Heartbeat()))
    assert effects.batch.workers == []
    assert effects.sends == []


def test_after_a_revoke_only_a_credential_issued_later_is_admitted() -> None:
    h = Harness()
    h.clock.advance(10)
    issued_before = h.clock.now()
    h.turn(WorkerConnected(1, hello("w1"), token("w1", issued_before)))
    h.clock.advance(5)
    revoked_at = h.clock.now()
    revoke(h, "w1")

    effects = h.turn(WorkerConnected(2, hello("w1"), token("w1", issued_before)))
    error = closed_with(effects, 2)
    assert error is not None
    assert error.code is ProtocolErrorCode.UNAUTHORIZED
    assert "revoked" in error.message
    assert not welcomed(effects, 2)
    # No credential known (a hello posted without one): refused as well.
    effects = h.turn(WorkerConnected(3, hello("w1")))
    assert closed_with(effects, 3) is not None
    assert not welcomed(effects, 3)

    effects = h.turn(WorkerConnected(4, hello("w1"), token("w1", revoked_at + 1)))
    assert welcomed(effects, 4)
    assert h.state.workers["w1"].record.status is WorkerStatus.CONNECTED


def test_an_id_that_never_connected_can_be_revoked_before_it_does() -> None:
    h = Harness()
    effects = revoke(h, "future")
    assert effects.closes == []
    assert "future" not in h.state.workers
    effects = h.turn(WorkerConnected(1, hello("future"), token("future", 0.0)))
    assert closed_with(effects, 1) is not None


def test_a_revoked_worker_is_not_drained_or_declared_lost() -> None:
    h = Harness()
    h.connect(1, "w1")
    revoke(h, "w1")
    answer = Answer()
    h.turn(DrainWorker("w1", answer))
    assert "no connected worker" in str(answer.values[0])
    h.clock.advance(SETTINGS.heartbeat_timeout_seconds * 3)
    h.turn(Tick())
    assert h.state.workers["w1"].record.status is WorkerStatus.REVOKED


def test_a_revocation_survives_a_restart_through_a_real_store(tmp_path: Path) -> None:
    path = tmp_path / "revoke.duckdb"
    h = Harness()
    with Store(path) as store:
        worker_token = issue_token("w1", Role.WORKER, h.clock.now())
        store.add_token(worker_token.record)
        h.state = CoordinatorState(
            SETTINGS, h.clock.now(), store.load_state(), store.all_task_ids()
        )
        h.submit(spec("a"))
        credential = token("w1", worker_token.record.created)
        effects = h.turn(WorkerConnected(1, hello("w1"), credential))
        store.write(h.effects[0].batch)
        store.write(effects.batch)
        h.clock.advance(1)
        # As the route does: durable in the store first, then applied by the loop.
        revoked_at = h.clock.now()
        assert store.revoke_worker(WorkerRevocation("w1", revoked_at, "admin", "lost laptop")) == [
            worker_token.record.token_id
        ]
        store.write(revoke(h, "w1").batch)

    with Store(path) as store:
        assert store.worker_revocations() == {"w1": revoked_at}
        token_row = store.get_token(worker_token.record.token_id)
        assert token_row is not None
        assert token_row.revoked == revoked_at
        recovered = store.load_state()
        state = CoordinatorState(
            SETTINGS,
            h.clock.now(),
            recovered,
            store.all_task_ids(),
            store.worker_revocations(),
        )
    assert state.workers["w1"].record.status is WorkerStatus.REVOKED
    assert state.tasks["a"].status is TaskStatus.QUEUED
    restarted = Harness()
    restarted.clock, restarted.state = h.clock, state
    effects = restarted.turn(WorkerConnected(7, hello("w1"), credential))
    assert closed_with(effects, 7) is not None
    assert not welcomed(effects, 7)
    effects = restarted.turn(WorkerConnected(8, hello("w1"), token("w1", revoked_at + 1)))
    assert welcomed(effects, 8)
