"""Recovery: a worker carries on from the events a stopped or crashed owner left."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import httpx
import pytest

from domain.session import SessionStatus, WorkflowSession
from domain.waits import WaitKind
from engine.live.projector import Projector
from engine.logs import LOGGER_NAME
from engine.loop.step_attempt import definition_key
from engine.loop.task_loop import TaskLoop
from engine.ownership.leases import Leases
from engine.ownership.sweep import Sweep
from engine.store.app import Stepline
from engine.store.locks import SWEEP
from engine.worker import SessionWorker
from tests import workloads
from tests.conftest import PASSWORD
from tests.integration.conftest import (
    LoopFactory,
    drive,
    event_types,
    kept_states,
    start_session,
)
from tests.scripted_model import ScriptedModel
from tests.waiting import eventually

LOGIN = 'POST /login with {"user": "demo", "password": "{{secrets.DEMO_PASSWORD}}"}'
ADD_TODO = 'POST /todos with {"title": "only once"}'


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    """A database of its own: workers here claim every runnable session they find."""
    return fresh_app


@pytest.fixture
def leases(projector: Projector) -> Leases:
    return Leases(projector.pool, lease_s=1.5)


@pytest.fixture
def workers(leases: Leases) -> Iterator[list[SessionWorker]]:
    started: list[SessionWorker] = []
    yield started
    for worker in started:
        worker.stop()


class Gate:
    """Holds the scripted model's reply until the test opens it."""

    def __init__(self) -> None:
        self.reached, self.opened = threading.Event(), threading.Event()

    def __call__(self) -> None:
        self.reached.set()
        self.opened.wait(timeout=30)


def start_worker(
    workers: list[SessionWorker], loop: TaskLoop, leases: Leases, concurrency: int = 2
) -> SessionWorker:
    worker = SessionWorker(loop, leases, concurrency=concurrency, poll_s=0.1)
    worker.start()
    workers.append(worker)
    return worker


def sweeper(app: Stepline, projector: Projector, leases: Leases, ttl_ms: int) -> Sweep:
    return Sweep(app, projector, leases, kept_states(projector.pool), ttl_ms)


def wait_for(app: Stepline, session_id: UUID, *statuses: SessionStatus) -> WorkflowSession:
    """Poll the write model (a test-side wait; the worker's threads do the driving)."""

    def reached() -> WorkflowSession | None:
        session = app.get_session(session_id)
        return session if session.status in statuses else None

    return eventually(reached, f"session {session_id} is {' or '.join(s.value for s in statuses)}")


def todo_count(target: str) -> int:
    with httpx.Client(base_url=target) as client:
        client.post("/login", json={"user": "demo", "password": PASSWORD})
        count: int = client.get("/todos").json()["count"]
        return count


def starts_of(app: Stepline, session_id: UUID) -> list[int]:
    return [
        e.step_index for e in app.history(session_id) if isinstance(e, WorkflowSession.StepStarted)
    ]


def test_a_command_left_without_a_result_is_marked_interrupted_and_decided_again(
    make_loop: LoopFactory,
    target: str,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, [LOGIN, "GET /todos", "expect json count == 0"], target)
    # What an owner that died mid-command leaves: the command issued, no result recorded.
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app, session_id, 0, command_id="lost-1", executor="http", name="request", args={"url": "/"}
    )
    projector.catch_up()

    start_worker(workers, loop, leases)
    session = wait_for(app, session_id, SessionStatus.COMPLETED)

    finished = [e for e in app.history(session_id) if type(e).__name__ == "CommandFinished"]
    interrupted = finished[0]
    assert (interrupted.command_id, interrupted.ok) == ("lost-1", False)  # type: ignore[attr-defined]
    assert interrupted.error["code"] == "COMMAND_INTERRUPTED"  # type: ignore[attr-defined]
    assert starts_of(app, session_id) == [0, 1, 2]
    assert session.status is SessionStatus.COMPLETED


def test_an_interrupted_command_is_sent_again_under_the_key_it_was_first_sent_with(
    make_loop: LoopFactory,
    target: str,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    loop = make_loop(ai=False)
    effect = 'POST /effects with {"name": "once"}'
    session_id = start_session(loop, [effect, "expect status 201"], target)
    key = definition_key(session_id, 0, 1, 0)
    # The owner sent the request, then died before recording its result.
    workloads.start_step(app, session_id, 0)
    workloads.issue_command(
        app,
        session_id,
        0,
        command_id="lost-1",
        executor="http",
        name="request",
        args={"method": "POST", "url": "/effects", "body": {"name": "once"}},
        idempotency_key=key,
    )
    httpx.post(f"{target}/effects", json={"name": "once"}, headers={"Idempotency-Key": key})
    projector.catch_up()

    start_worker(workers, loop, leases)
    wait_for(app, session_id, SessionStatus.COMPLETED)

    seen = httpx.get(f"{target}/effects").json()
    assert [d["key"] for d in seen["delivered"]] == [key, key]  # sent again, same key
    assert len(seen["applied"]) == 1  # so the app applied it once
    history = app.history(session_id)
    reissued = [e for e in history if isinstance(e, WorkflowSession.CommandIssued)]
    assert [e.idempotency_key for e in reissued] == [key, key]
    checked = [e for e in history if isinstance(e, WorkflowSession.Checked)]
    assert [(e.step_index, e.name, e.ok) for e in checked] == [(1, "expect_status", True)]


def test_a_resumed_step_skips_the_commands_that_already_succeeded(
    make_loop: LoopFactory,
    target: str,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
    tmp_path: Path,
) -> None:
    module = tmp_path / "two_effects.py"
    module.write_text(
        "from engine.executors import Command\n"
        "def effect(name):\n"
        "    return Command('http', 'request', {'method': 'POST', 'url': '/effects',"
        " 'body': {'name': name}})\n"
        "def register(definitions):\n"
        "    definitions.add(r'record first and second',"
        " lambda m: [effect('first'), effect('second')])\n"
    )
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["Record first and second"], target, definitions=str(module))
    first = definition_key(session_id, 0, 1, 0)
    # The owner ran the first command to the end, then died sending the second.
    workloads.start_step(app, session_id, 0)
    body = {"method": "POST", "url": "/effects", "body": {"name": "first"}}
    workloads.issue_command(
        app,
        session_id,
        0,
        command_id="c1",
        executor="http",
        name="request",
        args=body,
        idempotency_key=first,
    )
    httpx.post(f"{target}/effects", json={"name": "first"}, headers={"Idempotency-Key": first})
    workloads.finish_command(app, session_id, 0, command_id="c1", ok=True, output='{"status": 201}')
    projector.catch_up()

    start_worker(workers, loop, leases)
    wait_for(app, session_id, SessionStatus.COMPLETED)

    delivered = httpx.get(f"{target}/effects").json()["delivered"]
    assert [d["effect"] for d in delivered] == ["first", "second"]  # first not sent again
    assert delivered[1]["key"] == definition_key(session_id, 0, 1, 1)


def test_a_worker_stopped_mid_step_hands_its_session_to_another_at_once(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    hold = Gate()
    model.calls("http_request", method="GET", url="/todos")
    model.calls("http_request", method="GET", url="/todos/1", before=hold)
    model.calls("complete_step", summary="the todo is listed")
    loop = make_loop()
    session_id = start_session(loop, [LOGIN, ADD_TODO, "Check the todo is listed"], target)
    projector.catch_up()

    first = start_worker(workers, loop, leases)
    assert hold.reached.wait(timeout=30)  # the model is deciding the second turn of step 2
    first.stop(wait=False)
    hold.opened.set()
    second = start_worker(workers, make_loop(), leases)
    second.wake()
    wait_for(app, session_id, SessionStatus.COMPLETED)

    assert second.metrics.claimed == 1
    assert second.metrics.takeovers == 0  # handed back, not left to expire
    assert starts_of(app, session_id) == [0, 1, 2]  # no step ran twice
    assert todo_count(target) == 1
    assert event_types(app, session_id).count("TurnRecorded") == 3
    assert "COMMAND_INTERRUPTED" not in str(app.history(session_id))
    assert len(model.requests) == 3


def test_a_session_taken_over_keeps_its_cookies_though_the_log_never_holds_them(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    hold = Gate()
    model.calls("http_request", method="GET", url="/todos", before=hold)  # never runs
    model.calls("http_request", method="POST", url="/todos", body={"title": "after takeover"})
    model.calls("complete_step", summary="added")
    states = kept_states(projector.pool)
    session_id = start_session(make_loop(), [LOGIN, "Add a todo"], target)
    projector.catch_up()
    first = start_worker(workers, make_loop(states=states), leases)
    assert hold.reached.wait(timeout=30)  # signed in; the model is deciding step 1
    first.stop(wait=False)
    hold.opened.set()

    start_worker(workers, make_loop(states=states), leases).wake()
    wait_for(app, session_id, SessionStatus.COMPLETED)

    finished = [
        e for e in app.history(session_id) if isinstance(e, WorkflowSession.CommandFinished)
    ]
    assert json.loads(finished[-1].output)["status"] == 201  # still signed in: not a 401
    assert todo_count(target) == 1
    cookie = states.load(session_id)["http"]["cookies"][0]["value"]
    assert cookie not in str([vars(e) for e in app.history(session_id)])


def test_a_dead_owners_lease_expires_and_the_session_is_taken_over(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector, leases: Leases
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["GET /login"], target)
    projector.catch_up()
    (first,) = leases.claim("dead-worker", 5)  # claims, then never renews: it "died"
    assert leases.claim("another", 5) == []  # held: nobody else may have it

    (second,) = eventually(lambda: leases.claim("another", 5), "the 1.5 s lease expires")

    assert second.session_id == first.session_id == session_id
    assert second.token == first.token + 1
    assert second.taken_over_from == "dead-worker"
    assert not leases.holds(session_id, "dead-worker", first.token)
    assert leases.holds(session_id, "another", second.token)


def test_claims_from_racing_workers_never_overlap(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector, leases: Leases
) -> None:
    loop = make_loop(ai=False)
    created = {start_session(loop, ["GET /login"], target) for _ in range(40)}
    projector.catch_up()
    barrier = threading.Barrier(4)
    claimed: dict[str, list[UUID]] = {}

    def claim(owner: str) -> None:
        barrier.wait()
        mine: list[UUID] = []
        while batch := leases.claim(owner, 3):
            mine += [c.session_id for c in batch]
        claimed[owner] = mine

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    every_claim = [session_id for mine in claimed.values() for session_id in mine]
    assert sorted(every_claim) == sorted(created)  # each exactly once, none left over
    assert sum(1 for mine in claimed.values() if mine) > 1  # the race was real


def test_a_worker_whose_lease_was_stolen_stops_before_its_next_command(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    hold = Gate()
    model.calls("http_request", method="GET", url="/login", before=hold)
    loop = make_loop()
    session_id = start_session(loop, ["Look at the login page"], target)
    projector.catch_up()
    worker = start_worker(workers, loop, leases)
    assert hold.reached.wait(timeout=30)

    with projector.pool.connection() as conn:  # the lease "expires" under the worker
        conn.execute("UPDATE session_leases SET lease_until = now() - interval '1 second'")
    (thief,) = leases.claim("thief", 1)
    hold.opened.set()
    eventually(lambda: worker.metrics.lost, "the worker notices it lost the lease")

    assert thief.session_id == session_id
    assert worker.metrics.lost == 1
    assert worker.held_sessions() == []
    assert "CommandIssued" not in event_types(app, session_id)  # the command never started
    assert leases.holds(session_id, "thief", thief.token)  # and the thief's lease stands


def test_a_paused_session_is_handed_back_and_claimed_again_only_after_resume(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    def pause() -> None:
        app.pause(session_id, reason="lunch", actor="bob")

    model.calls("http_request", method="GET", url="/login", before=pause)
    model.calls("complete_step", summary="seen")
    loop = make_loop()
    session_id = start_session(loop, ["Look at the login page"], target)
    projector.catch_up()
    worker = start_worker(workers, loop, leases)
    wait_for(app, session_id, SessionStatus.PAUSED)
    eventually(lambda: not worker.held_sessions(), "the worker hands the paused session back")
    projector.catch_up()

    assert worker.held_sessions() == []
    assert leases.claim("other", 5) == []  # paused: nobody claims it, however often asked
    app.resume(session_id, actor="bob")
    projector.catch_up()
    worker.wake()
    assert wait_for(app, session_id, SessionStatus.COMPLETED).status is SessionStatus.COMPLETED


def test_claims_keep_each_tenant_under_its_running_limit(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector, leases: Leases
) -> None:
    loop = make_loop(ai=False)
    for _ in range(5):
        start_session(loop, ["GET /login"], target)  # tenant acme
    projector.catch_up()

    first = leases.claim("w1", 10, lambda _: 2)
    second = leases.claim("w2", 10, lambda _: 2)

    assert len(first) == 2
    assert second == []


def test_leases_taken_at_once_keep_a_tenant_under_its_running_limit(leases: Leases) -> None:
    """Twelve workers take the first lease of twelve new sessions of one tenant at the same
    moment, with a running limit of 3: three get one. A session that had a lease is never
    taken as a first one again, even once it is released."""
    sessions = [uuid4() for _ in range(12)]
    start = threading.Barrier(len(sessions))
    tokens: dict[UUID, int | None] = {}

    def take(session_id: UUID) -> None:
        start.wait()
        tokens[session_id] = leases.acquire(session_id, "acme", f"w-{session_id}", 3, first=True)

    threads = [threading.Thread(target=take, args=(session_id,)) for session_id in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    taken = {session_id: token for session_id, token in tokens.items() if token is not None}

    assert sorted(taken.values()) == [1, 1, 1]
    released, token = next(iter(taken.items()))
    leases.release(released, f"w-{released}", token, settled_version=None)
    assert leases.acquire(released, "acme", "w-again", None, first=True) is None
    assert leases.acquire(released, "acme", "w-again", None) == 2  # the claim's way takes it


def test_sessions_past_their_ttl_expire_and_ended_ones_stay(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector, leases: Leases
) -> None:
    loop = make_loop(ai=False)
    waiting = start_session(loop, ["GET /login"], target)
    app.pause(waiting, reason="lunch", actor="bob")
    finished = start_session(loop, ["GET /login"], target)
    drive(loop, finished)

    assert sweeper(app, projector, leases, ttl_ms=3_600_000).once() == []  # none an hour old
    swept = eventually(
        lambda: sweeper(app, projector, leases, ttl_ms=1).once(), "a session is 1 ms old"
    )
    assert swept == [waiting]

    expired = app.get_session(waiting)
    assert expired.status is SessionStatus.EXPIRED
    assert expired.error is not None
    assert expired.error["code"] == "SESSION_EXPIRED"
    assert app.get_session(finished).status is SessionStatus.COMPLETED


def test_a_waiting_session_is_claimed_once_its_wait_is_due_and_not_before(
    app: Stepline, projector: Projector, leases: Leases
) -> None:
    assert leases.next_due_s() is None  # nothing waits: the claim loop only polls
    later = workloads.waiting(app)  # due in an hour
    due = workloads.create(app)
    workloads.start_step(app, due, 0)
    past = datetime.now(UTC) - timedelta(seconds=1)
    workloads.begin_wait(app, due, 0, WaitKind.TIMER, due_at=past)
    projector.catch_up()

    assert leases.next_due_s() == 0.0
    assert [claim.session_id for claim in leases.claim("w1", 10)] == [due]
    app.change(due, lambda s: s.wake())
    projector.catch_up()
    next_due_s = leases.next_due_s()
    assert next_due_s is not None
    assert 3_500 < next_due_s <= 3_600
    assert leases.claim("w2", 10) == []  # `later` is not due; `due` is w1's
    assert app.get_session(later).status is SessionStatus.WAITING


class ApprovesOnceWaiting(logging.Handler):
    """Approves the session the moment its run logs that it waits: before the worker hands
    its lease back, the race a fast approver (or an early signal's sender) can win."""

    def __init__(self, app: Stepline, session_id: UUID) -> None:
        super().__init__()
        self.app, self.session_id = app, session_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Waiting for"):
            self.app.approve(self.session_id, actor="quick")


def test_an_approval_before_the_lease_is_handed_back_still_gets_the_session_driven(
    make_loop: LoopFactory,
    target: str,
    app: Stepline,
    projector: Projector,
    leases: Leases,
    workers: list[SessionWorker],
) -> None:
    loop = make_loop(ai=False)
    session_id = start_session(loop, ["wait for approval", "GET /effects"], target)
    handler = ApprovesOnceWaiting(app, session_id)
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    stop_leading = projector.start_leading("test")  # keeps the session index up with the log
    logger.addHandler(handler)
    try:
        logger.setLevel(logging.INFO)
        start_worker(workers, loop, leases)
        wait_for(app, session_id, SessionStatus.COMPLETED)  # claimed again after the approval
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        stop_leading()


def test_a_waiting_session_outlives_its_ttl_and_its_waits_count_towards_none(
    app: Stepline, projector: Projector, leases: Leases
) -> None:
    still_waiting = workloads.waiting(app)
    waited = workloads.waiting(app)
    an_hour_later = datetime.now(UTC) + timedelta(hours=1)
    app.change(waited, lambda s: s.approve(actor="bob", now=an_hour_later))  # waited an hour
    paused = workloads.paused(app)

    swept = eventually(
        lambda: sweeper(app, projector, leases, ttl_ms=1).once(), "a session is 1 ms old"
    )

    assert swept == [paused]  # the others are older, but have not run for 1 ms
    assert app.get_session(still_waiting).status is SessionStatus.WAITING
    assert app.get_session(waited).status is SessionStatus.RUNNING


def test_only_one_process_sweeps_at_a_time(
    make_loop: LoopFactory, target: str, app: Stepline, projector: Projector, leases: Leases
) -> None:
    waiting = start_session(make_loop(ai=False), ["GET /login"], target)
    app.pause(waiting, actor="bob")
    with projector.pool.connection() as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (SWEEP,))  # another sweeper
        assert sweeper(app, projector, leases, ttl_ms=1).once() is None
    assert sweeper(app, projector, leases, ttl_ms=1).once() == [waiting]
