"""The write path: the owner's session in memory, fenced writes, group commit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import RecordConflictError
from psycopg_pool import ConnectionPool

from domain.errors import InvalidStateTransition, SessionNotFound
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.ownership.leases import Leases
from engine.store.app import SessionRequest, Stepline
from engine.store.event_store import CREATED_CHANNEL, Fence, LeaseLost
from engine.store.held_session import HeldSession
from engine.store.snapshots import Snapshotter
from engine.store.writer import GroupWriter
from tests import workloads
from tests.waiting import eventually


@pytest.fixture
def pool(fresh_database_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(fresh_database_url, kwargs={"autocommit": True}) as opened:
        yield opened


@pytest.fixture
def leases(pool: ConnectionPool) -> Leases:
    return Leases(pool, lease_s=5)


def new_session(app: Stepline, steps: int = 2) -> UUID:
    return workloads.create_session(
        app,
        name="write path",
        steps=[StepSpec(f"step {i}") for i in range(steps)],
        tenant="acme",
        actor="alice",
    )


def types(app: Stepline, session_id: UUID) -> list[str]:
    return [type(event).__name__ for event in app.history(session_id)]


def test_decisions_wait_in_memory_until_the_commit_writes_them_together(
    fresh_app: Stepline,
) -> None:
    session_id = new_session(fresh_app)
    writer = GroupWriter(fresh_app)
    held = HeldSession(fresh_app, writer, Snapshotter(fresh_app), session_id)

    held.decide(lambda s: s.start_step(0))
    held.decide(lambda s: s.issue_command(0, command_id="c1", executor="http", name="x", args={}))
    assert types(fresh_app, session_id) == ["Created"]  # nothing written yet
    held.commit()

    assert types(fresh_app, session_id) == ["Created", "StepStarted", "CommandIssued"]
    assert writer.commits == 1
    assert fresh_app.get_session(session_id).version == held.session.version == 3


def test_a_commit_after_someone_else_wrote_keeps_what_still_holds_and_raises_the_refusal(
    fresh_app: Stepline,
) -> None:
    session_id = new_session(fresh_app)
    held = HeldSession(fresh_app, GroupWriter(fresh_app), Snapshotter(fresh_app), session_id)
    held.decide(lambda s: s.start_step(0))
    held.decide(lambda s: s.issue_command(0, command_id="c1", executor="http", name="x", args={}))
    held.commit()
    held.decide(lambda s: s.finish_command(0, command_id="c1", ok=True, output="200"))
    held.decide(lambda s: s.complete_step(0, summary="done"))
    fresh_app.pause(session_id, reason="lunch", actor="bob")  # lands between the two

    with pytest.raises(InvalidStateTransition):
        held.commit()

    # The result of a command already run is a fact even while paused; ending the step is not.
    assert types(fresh_app, session_id)[-2:] == ["Paused", "CommandFinished"]
    assert held.session.status is SessionStatus.PAUSED
    assert held.session.version == fresh_app.get_session(session_id).version
    held.commit()  # nothing is left waiting
    assert types(fresh_app, session_id)[-1] == "CommandFinished"


def test_a_session_held_as_saved_after_someone_else_wrote_is_loaded_and_refused(
    fresh_app: Stepline,
) -> None:
    """A worker that created a session starts from the object it saved, not a load; a cancel
    that landed in between is found by the first commit, before anything acts."""
    saved = WorkflowSession.create(
        name="write path", steps=[StepSpec("step 0")], config={}, tenant="acme", actor="alice"
    )
    fresh_app.save(saved)
    held = HeldSession(
        fresh_app, GroupWriter(fresh_app), Snapshotter(fresh_app), saved.id, saved=saved
    )
    fresh_app.cancel(saved.id, reason="changed my mind", actor="bob")
    held.decide(lambda s: s.start_step(0))

    with pytest.raises(InvalidStateTransition):
        held.commit()

    assert types(fresh_app, saved.id) == ["Created", "Cancelled"]
    assert held.session.status is SessionStatus.CANCELLED


def test_a_write_whose_lease_no_longer_holds_writes_nothing(
    fresh_app: Stepline, leases: Leases, pool: ConnectionPool
) -> None:
    session_id = new_session(fresh_app)
    token = leases.acquire(session_id, "acme", "owner-a")
    assert token is not None
    held = HeldSession(
        fresh_app,
        GroupWriter(fresh_app),
        Snapshotter(fresh_app),
        session_id,
        Fence(session_id, "owner-a", token),
    )
    held.decide(lambda s: s.start_step(0))
    held.commit()  # the lease holds: written
    with pool.connection() as conn:  # then it expires, and another owner takes it
        conn.execute("UPDATE session_leases SET lease_until = now() - interval '1 second'")
    assert leases.acquire(session_id, "acme", "owner-b") is not None
    held.decide(lambda s: s.issue_command(0, command_id="c1", executor="http", name="x", args={}))

    with pytest.raises(LeaseLost):
        held.commit()

    assert types(fresh_app, session_id) == ["Created", "StepStarted"]


def write_all_queued(
    writer: GroupWriter, pool: ConnectionPool, sessions: list[WorkflowSession]
) -> dict[UUID, Exception]:
    """Start each session's first step and write it from a thread of its own, all of them
    queued behind a first writer held up by the table lock; the conflicts each one got."""
    errors: dict[UUID, Exception] = {}

    def write(session: WorkflowSession) -> None:
        session.start_step(0)
        try:
            writer.write(session.collect_events())  # type: ignore[arg-type]
        except RecordConflictError as error:
            errors[session.id] = error

    with pool.connection() as blocker, blocker.transaction():
        blocker.execute("LOCK TABLE stepline_events IN EXCLUSIVE MODE")
        threads = [threading.Thread(target=write, args=(s,)) for s in sessions]
        for thread in threads:
            thread.start()
        eventually(
            lambda: writer.queued == len(sessions) - 1, "every write but one queues behind the lock"
        )
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_writes_waiting_behind_another_share_one_commit(
    fresh_app: Stepline, pool: ConnectionPool
) -> None:
    loaded = [fresh_app.get_session(new_session(fresh_app)) for _ in range(12)]
    writer = GroupWriter(fresh_app)

    errors = write_all_queued(writer, pool, loaded)

    assert errors == {}
    for session in loaded:
        assert types(fresh_app, session.id) == ["Created", "StepStarted"]
    assert (writer.commits, writer.batches) == (2, 12)  # the first alone, the eleven together


def test_a_conflict_in_a_shared_commit_fails_only_its_own_session(
    fresh_app: Stepline, pool: ConnectionPool
) -> None:
    loaded = [fresh_app.get_session(new_session(fresh_app)) for _ in range(12)]
    loser = loaded[-1]
    fresh_app.pause(loser.id, reason="taken first", actor="bob")  # its next version is taken
    writer = GroupWriter(fresh_app)

    errors = write_all_queued(writer, pool, loaded)

    assert set(errors) == {loser.id}
    for session in loaded[:-1]:
        assert types(fresh_app, session.id) == ["Created", "StepStarted"]
    assert types(fresh_app, loser.id) == ["Created", "Paused"]
    assert writer.batches == len(loaded) - 1  # every batch but the loser's was written


def test_the_owner_snapshots_what_it_holds_at_gaps_that_grow_with_the_session(
    fresh_app: Stepline,
) -> None:
    session_id = new_session(fresh_app, steps=1)
    snapshotter = Snapshotter(fresh_app)
    held = HeldSession(fresh_app, GroupWriter(fresh_app), snapshotter, session_id)
    held.decide(lambda s: s.start_step(0))
    for n in range(1_300):
        held.decide(
            lambda s, n=n: s.issue_command(0, command_id=f"c{n}", executor="x", name="y", args={})
        )
        held.decide(lambda s, n=n: s.finish_command(0, command_id=f"c{n}", ok=True))
        held.commit()
    snapshotter.wait_until_written()

    versions = [s.originator_version for s in fresh_app.snapshots.get(session_id)]  # type: ignore[union-attr]
    gaps = [later - earlier for earlier, later in zip([1, *versions], versions, strict=False)]
    assert gaps[1:3] == [100, 100]  # every 100 events while the session is small
    assert max(gaps) > 100  # then a twentieth of the session's events
    assert all(
        gap <= max(100, version // 20) + 1 for gap, version in zip(gaps, versions, strict=True)
    )
    loaded = fresh_app.get_session(session_id)  # from the latest snapshot and what followed
    assert loaded.version == held.session.version == 2_602
    assert loaded.commands == held.session.commands


def announcements(listening: psycopg.Connection[Any]) -> list[str]:
    """The payloads of the new sessions' announcements that reached `listening` by now."""
    return [n.payload for n in listening.notifies(timeout=0.5, stop_after=None)]


def test_a_new_session_is_announced_with_the_commit_of_its_created_event_and_only_then(
    fresh_app: Stepline, fresh_database_url: str
) -> None:
    """The announcement is sent in the transaction that saves the session: it arrives once the
    session is in the log, a save that fails announces nothing, and a session whose
    announcement could not be sent (a tenant too long to NOTIFY) is saved all the same."""
    with psycopg.connect(fresh_database_url, autocommit=True) as listening:
        listening.execute(f'LISTEN "{CREATED_CHANNEL}"')
        request = SessionRequest("announced", [StepSpec("step 0")])
        session = fresh_app.create(request, tenant="acme", actor="alice", announced=True)
        # Delivered at the commit, read here when the listening backend gets to it: waited for.
        first = [n.payload for n in listening.notifies(timeout=30, stop_after=1)]
        assert first + announcements(listening) == [json.dumps([str(session.id), "acme"])]
        assert types(fresh_app, session.id) == ["Created"]

        same_id = replace(request, session_id=session.id)  # the save conflicts, writes nothing
        with pytest.raises(RecordConflictError):
            fresh_app.create(same_id, tenant="acme", actor="alice", announced=True)
        unannounced = fresh_app.create(request, tenant="acme", actor="alice")
        long_named = fresh_app.create(request, tenant="t" * 8_000, actor="alice", announced=True)
        assert announcements(listening) == []
    assert types(fresh_app, unannounced.id) == types(fresh_app, long_named.id) == ["Created"]


def test_a_new_sessions_first_lease_comes_with_its_events_in_one_statement(
    fresh_app: Stepline, leases: Leases
) -> None:
    """An offered session is taken and read at once: its first lease and its events, which
    rebuild it as the log does; a session that had a lease is not taken so, and an id of no
    session takes a lease that comes with no events (the worker then drops it)."""
    session_id = new_session(fresh_app, steps=3)
    events = fresh_app.events_relation
    taken = leases.acquire_first_and_read(session_id, "acme", "w1", None, events)
    assert taken is not None
    assert leases.holds(session_id, "w1", taken.token)
    session = fresh_app.session_of_records(session_id, taken.records)
    assert vars(session) == vars(fresh_app.get_session(session_id))
    assert (taken.secrets.tenant, taken.secrets.rows) == ("acme", ())  # it stored none
    assert leases.acquire_first_and_read(session_id, "acme", "w2", None, events) is None

    nobody = UUID(int=7)
    taken = leases.acquire_first_and_read(nobody, "acme", "w1", None, events)
    assert taken is not None
    assert taken.records == []
    with pytest.raises(SessionNotFound):
        fresh_app.session_of_records(nobody, taken.records)


def lease_row(pool: ConnectionPool, session_id: UUID) -> tuple[Any, ...] | None:
    """Owner, whether live, and settled version of the session's lease."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT owner, lease_until > now(), settled_version FROM session_leases "
            "WHERE session_id = %s",
            (session_id,),
        ).fetchone()


def held_under_lease(app: Stepline, leases: Leases, owner: str) -> HeldSession:
    session_id = new_session(app, steps=1)
    token = leases.acquire(session_id, "acme", owner)
    assert token is not None
    fence = Fence(session_id, owner, token)
    return HeldSession(app, GroupWriter(app), Snapshotter(app), session_id, fence)


def test_a_last_write_hands_the_lease_back_with_it_only_when_it_is_written(
    fresh_app: Stepline, leases: Leases, pool: ConnectionPool
) -> None:
    """A run's last write can release its lease in the same statement, settled as of the
    session's last event; a write refused (a lease no longer held, a conflict) releases
    nothing, and neither does one that does not ask."""
    ended = held_under_lease(fresh_app, leases, "owner-a")
    ended.decide(lambda s: s.start_step(0))
    ended.decide(lambda s: s.complete_step(0, summary="done"))
    ended.decide(lambda s: s.complete())
    assert ended.commit(hand_back=True)
    assert types(fresh_app, ended.id) == ["Created", "StepStarted", "StepCompleted", "Completed"]
    assert lease_row(pool, ended.id) == (None, False, 4)  # settled as of the last event

    kept = held_under_lease(fresh_app, leases, "owner-a")
    kept.decide(lambda s: s.start_step(0))
    assert not kept.commit()
    assert lease_row(pool, kept.id) == ("owner-a", True, None)

    conflicted = held_under_lease(fresh_app, leases, "owner-a")
    fresh_app.pause(conflicted.id, reason="by someone else", actor="bob")
    conflicted.decide(lambda s: s.start_step(0))
    with pytest.raises(InvalidStateTransition):
        conflicted.commit(hand_back=True)  # decided again on the paused session: refused
    assert lease_row(pool, conflicted.id) == ("owner-a", True, None)

    taken = held_under_lease(fresh_app, leases, "owner-a")
    with pool.connection() as conn:
        conn.execute(
            "UPDATE session_leases SET lease_until = now() - interval '1 second' "
            "WHERE session_id = %s",
            (taken.id,),
        )
    assert leases.acquire(taken.id, "acme", "owner-b") is not None
    taken.decide(lambda s: s.start_step(0))
    with pytest.raises(LeaseLost):
        taken.commit(hand_back=True)
    assert lease_row(pool, taken.id) == ("owner-b", True, None)
    assert types(fresh_app, taken.id) == ["Created"]
