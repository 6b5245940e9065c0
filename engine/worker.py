"""The session worker: claims runnable sessions under a lease and drives each in a thread.

One per process (`stepline worker`, `stepline serve`, `stepline run`). It claims as many
sessions as it has free slots, when woken (the log grew, a lease was released, a slot freed),
when the earliest wait it knows of is due (a timer, an approval's timeout), and at least every
`poll_s`. A heartbeat renews its leases every third of the lease; a session
whose lease was not renewed, or was taken, is stopped at its next safe point. Stopping hands
every lease back at once, so another worker carries on without waiting for expiry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from uuid import UUID

import psycopg
from eventsourcing.persistence import PersistenceError

from domain.errors import DomainError, SessionNotFound
from domain.session import SessionStatus, WorkflowSession, check_tenant
from engine.logs import LOGGER_NAME, on_session
from engine.loop.task_loop import TaskLoop
from engine.ownership.leases import Claim, Leases, RunningLimit, WorkerCounts, new_worker_id
from engine.store.app import SessionRequest
from engine.store.event_store import Fence
from engine.tenancy.secret_store import SealedSecrets

log = logging.getLogger(LOGGER_NAME)

DATABASE_ERRORS = (psycopg.Error, PersistenceError)
DUE_GAP_S = 0.1
"""The least a claim loop waits for a due session: the session index may still show one just
claimed (by this worker or another) as due for a moment (until the views' leader next catches
up: within its gathering, 0.2 s)."""
OFFERS_KEPT = 1_000
"""Offers of sessions just created kept until a slot frees; older ones are left to the index."""
OFFER_TTL_S = 2.0
"""How long an offer waits for a slot: by then the session index shows the session (the views'
leader gathers 0.2 s), and claims from it keep the order of creation."""


@dataclass
class HeldLease:
    """A lease this worker holds: the proof of ownership the task loop asks for."""

    claim: Claim
    owner: str
    leases: Leases
    stop: threading.Event = field(default_factory=threading.Event)
    news: threading.Event = field(default_factory=threading.Event)
    """Set on new events in the log and when told to stop: wakes a waiting run (a back-off)."""
    saved: WorkflowSession | None = None
    """The session as this worker saved it (it created it), for the run to start from."""
    offered: list[tuple[int, str, bytes]] | None = None
    """Taken as just created (an offer): its events, read with its first lease."""
    secrets: SealedSecrets | None = None
    """...and its tenant's stored secrets, read in the same statement."""
    lost: bool = False
    settled_version: int | None = None
    """The version as of which the run left the session needing no driving, if it did."""
    handed_back: bool = False
    """The run's last write released the lease (settled): nothing is left to release."""
    handing_back_now: bool = False
    """The run's last write, which releases the lease, is under way."""

    @property
    def session_id(self) -> UUID:
        return self.claim.session_id

    @property
    def fence(self) -> Fence:
        return Fence(self.session_id, self.owner, self.claim.token)

    def lose(self) -> None:
        self.lost = True
        self.halt()

    @contextmanager
    def handing_back(self) -> Iterator[None]:
        self.handing_back_now = True
        try:
            yield
        finally:
            self.handing_back_now = False

    def settle(self, version: int, *, handed_back: bool = False) -> None:
        self.settled_version = version
        self.handed_back = handed_back

    def halt(self) -> None:
        self.stop.set()
        self.news.set()


@dataclass
class WorkerMetrics:
    claimed: int = 0
    takeovers: int = 0
    renew_failures: int = 0
    lost: int = 0

    def counts(self) -> WorkerCounts:
        return WorkerCounts(self.claimed, self.renew_failures, self.lost)


class SessionWorker:
    def __init__(
        self,
        loop: TaskLoop,
        leases: Leases,
        *,
        concurrency: int,
        role: str = "worker",
        running_limit: RunningLimit | None = None,
        poll_s: float = 1.0,
    ) -> None:
        self.loop = loop
        self.leases = leases
        self.concurrency = concurrency
        self.role = role
        self.running_limit = running_limit
        self.poll_s = poll_s
        self.worker_id = new_worker_id(role)
        self.metrics = WorkerMetrics()
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="session")
        self._held: dict[UUID, HeldLease] = {}
        self._slots_taken = 0
        """Slots promised to claims and reservations in progress, not yet in `_held`."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._look_at_index = threading.Event()
        """Set when the session index may show something to claim (a change of status, a
        released lease, a freed slot); offers alone do not need the index."""
        self._offered: deque[tuple[UUID, str, float]] = deque(maxlen=OFFERS_KEPT)
        """Sessions just created elsewhere, with when they were offered, newest last."""
        self._background: list[threading.Thread] = []

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self._stopping.is_set() and all(t.is_alive() for t in self._background)

    def start(self, claiming: bool = True) -> None:
        """Register, start the heartbeat and (unless only driving given sessions) claiming."""
        self.leases.register(self.worker_id, self.role, self.concurrency)
        self._spawn(self._heartbeat, "heartbeat")
        if claiming:
            self._spawn(self._claim_loop, "claimer")
        log.info("Worker %s started (%d slots)", self.worker_id, self.concurrency)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._background.append(thread)

    def stop(self, wait: bool = True) -> None:
        """Stop every session at its next safe point and hand its lease back."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            for held in self._held.values():
                held.halt()
        self._threads.shutdown(wait=wait, cancel_futures=True)
        if wait:
            for thread in self._background:
                thread.join(timeout=10)
            try:
                self.leases.unregister(self.worker_id)
            except DATABASE_ERRORS:
                log.warning("Could not unregister worker %s", self.worker_id)

    def wake(self) -> None:
        """Claim now rather than at the next poll (e.g. the log grew, a lease was freed); and
        tell the sessions held here that the log may have news for them (a cancel ends a
        back-off at once)."""
        self._look_at_index.set()
        self._wake.set()
        with self._lock:
            for held in self._held.values():
                held.news.set()

    def offer(self, payload: str) -> None:
        """A session was just created elsewhere (announced: `Stepline.save_new`): take it soon
        if a slot is free, without waiting for the session index to show it. Called in the
        follower's thread: only queued here. The payload is checked, never trusted: the run
        drives the session only if the log says it is the named tenant's (`_drive`)."""
        offer = _offer_in(payload)
        if offer is None:
            log.warning("Ignored a malformed offer of a session: %r", payload[:200])
            return
        if len(self._offered) == self._offered.maxlen:  # the oldest is dropped: left to the
            self._look_at_index.set()  # session index
        self._offered.append((*offer, time.monotonic()))
        self._wake.set()

    def _take_slots(self, wanted: int) -> int:
        """Promise up to `wanted` free slots (give them back with `_give_back`)."""
        with self._lock:
            free = self.concurrency - len(self._held) - self._slots_taken
            taken = max(0, min(wanted, free))
            self._slots_taken += taken
            return taken

    def _give_back(self, slots: int) -> None:
        with self._lock:
            self._slots_taken -= slots

    def held_sessions(self) -> list[UUID]:
        with self._lock:
            return list(self._held)

    # ---- claiming -----------------------------------------------------------------------

    def _claim_loop(self) -> None:
        next_due_s: float | None = None
        while not self._stopping.is_set():
            due_s = self.poll_s if next_due_s is None else max(DUE_GAP_S, next_due_s)
            if not self._wake.wait(min(self.poll_s, due_s)):
                self._look_at_index.set()  # the poll, or a wait that is due
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                # The index first: what waits there (resumed, signalled, due, taken over) is
                # older than any offer, which the index shows too once it is old enough.
                if self._look_at_index.is_set():
                    next_due_s = self._claim_from_index(next_due_s)
                self._take_offered()
            except DATABASE_ERRORS:
                log.warning("Could not claim sessions (database unavailable); retrying")
                self._look_at_index.set()
                self._stopping.wait(self.poll_s)

    def _take_offered(self) -> None:
        """Drive the sessions just created elsewhere while slots are free, oldest first; the
        rest wait here for a slot (a slot that frees wakes this loop) for up to `OFFER_TTL_S`,
        after which the session index has them. One another worker took first, or one over
        its tenant's running limit, is left to the session index."""
        while self._offered:
            if not self._take_slots(1):
                return
            try:
                session_id, tenant, offered_at = self._offered.popleft()
                if time.monotonic() - offered_at <= OFFER_TTL_S:
                    self._take_offer(session_id, tenant)
            finally:
                self._give_back(1)

    def _take_offer(self, session_id: UUID, tenant: str) -> None:
        try:
            limit = None if self.running_limit is None else self.running_limit(tenant)
        except DomainError:  # no tenant that could be
            log.warning("Ignored an offer naming no valid tenant", extra=on_session(session_id))
            return
        events = self.loop.app.events_relation
        taken = self.leases.acquire_first_and_read(
            session_id, tenant, self.worker_id, limit, events
        )
        if taken is not None:
            claim = Claim(session_id, tenant, taken.token, None)
            self.drive(claim, offered=taken.records, secrets=taken.secrets)

    def _claim_from_index(self, next_due_s: float | None) -> float | None:
        """Claim what the session index shows runnable, for every free slot; seconds until
        the earliest wait known is due (as known before, with no slot free). With no slot
        free, or after a claim that took any, the index is looked at again when one frees."""
        slots = self._take_slots(self.concurrency)
        if not slots:  # nothing to claim for: a slot that frees wakes this loop
            return next_due_s
        try:
            self._look_at_index.clear()
            claims = self.leases.claim(self.worker_id, slots, self.running_limit)
            if claims:
                self._look_at_index.set()  # there may be more, past those lost to others
            for claim in claims:
                self.drive(claim)
            return self.leases.next_due_s()
        finally:
            self._give_back(slots)

    def create(
        self, request: SessionRequest, *, tenant: str, actor: str, here: bool = False
    ) -> tuple[WorkflowSession, Future[SessionStatus | None] | None]:
        """Create a session and, with a free slot, drive it here at once: its lease is taken
        before it is saved, so no other worker can claim it first. Otherwise the session is
        only saved, and whichever worker has room claims it. A tenant already running as many
        sessions as its running limit allows waits for a claim too, unless `here` insists."""
        session = request.build(tenant, actor)
        slot = self._take_slots(1) if not self._stopping.is_set() else 0
        try:
            limit = None if here or self.running_limit is None else self.running_limit(tenant)
            token = self.leases.acquire(session.id, tenant, self.worker_id, limit) if slot else None
            if token is None:  # nobody else can know a session not yet saved: over the limit
                # Without a slot here, another worker may have one (or this one, once a slot
                # frees): announced with its commit.
                self.loop.app.save_new(session, announced=not slot)
                if not slot:
                    self._look_at_index.set()
                return session, None
            claim = Claim(session.id, tenant, token, None)
            try:
                self.loop.app.save_new(session)
            except BaseException:
                self.leases.forget(session.id, self.worker_id, token)
                raise
            return session, self.drive(claim, saved=deepcopy(session))
        finally:
            self._give_back(slot)

    def drive(
        self,
        claim: Claim,
        saved: WorkflowSession | None = None,
        *,
        offered: list[tuple[int, str, bytes]] | None = None,
        secrets: SealedSecrets | None = None,
    ) -> Future[SessionStatus | None]:
        """Drive a claimed session in one of the worker's threads (from `saved`, the session
        as this worker has just saved it, if given: the run then need not load it; `offered`:
        the events of one just created elsewhere, read with its lease, to build it from, and
        `secrets`, its tenant's as read then, for the run not to read them again)."""
        held = HeldLease(
            claim, self.worker_id, self.leases, saved=saved, offered=offered, secrets=secrets
        )
        with self._lock:
            self._held[claim.session_id] = held
        self.metrics.claimed += 1
        if claim.taken_over_from is not None:
            self.metrics.takeovers += 1
            log.warning(
                "Took the session over from %s, whose lease expired",
                claim.taken_over_from,
                extra=on_session(claim.session_id),
            )
        try:
            return self._threads.submit(self._drive, held)
        except RuntimeError:  # stopping: hand it back rather than let it wait for expiry
            self._forget(held)
            self.leases.release(claim.session_id, self.worker_id, claim.token, None)
            handed_back: Future[SessionStatus | None] = Future()
            handed_back.set_result(None)
            return handed_back

    def _drive(self, held: HeldLease) -> SessionStatus | None:
        status = None
        try:
            saved = held.saved
            if saved is None and held.offered is not None:
                saved = self._offered_session(held)
                if saved is None:
                    return None
            status = self.loop.drive(held.session_id, held.stop, held, saved, secrets=held.secrets)
        except (*DATABASE_ERRORS, DomainError):
            # Like a crash: the lease is kept until it expires, then another owner replays.
            log.exception("Stopped driving on an error", extra=on_session(held.session_id))
            self._forget(held)
            return None
        except Exception:
            log.exception("The task loop stopped on an error", extra=on_session(held.session_id))
            self._forget(held)
            raise
        self._hand_back(held, status)
        return status

    def _offered_session(self, held: HeldLease) -> WorkflowSession | None:
        """The session an offer named, from its events as read with its lease; None (its
        lease dropped, the index left to claim it) unless it is there and its tenant's, as the
        offer said."""
        try:
            session = self.loop.app.session_of_records(held.session_id, held.offered or [])
        except SessionNotFound:
            session = None
        if session is None or session.tenant != held.claim.tenant:  # not an announcement
            log.warning(
                "Dropped an offer the log does not bear out", extra=on_session(held.session_id)
            )
            self._forget(held)
            self.leases.forget(held.session_id, self.worker_id, held.claim.token)
            return None
        return session

    def _hand_back(self, held: HeldLease, status: SessionStatus) -> None:
        """Release the lease: settled when the session needs no driving (paused, ended); an
        ended session's went with the run's last write (`HeldSession.commit`)."""
        self._forget(held)
        if held.handed_back:  # released with the run's last write (a heartbeat that ran in
            return  # between found no lease: not a loss)
        if held.lost:
            self.metrics.lost += 1
            return
        settled = None
        if not held.stop.is_set():
            # As the run left it: an approval or a resume written since is a later change,
            # which makes the session claimable again.
            settled = held.settled_version or self.loop.app.get_session(held.session_id).version
        try:
            self.leases.release(held.session_id, self.worker_id, held.claim.token, settled)
        except DATABASE_ERRORS:
            log.warning(
                "Could not release the lease; it will expire", extra=on_session(held.session_id)
            )
        log.debug("Released (%s)", status.value, extra=on_session(held.session_id))

    def _forget(self, held: HeldLease) -> None:
        with self._lock:
            if self._held.get(held.session_id) is held:
                del self._held[held.session_id]
        self._wake.set()  # a slot is free: for what waited for one (`_look_at_index`)

    # ---- heartbeat ----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        every_s = self.leases.lease_s / 3
        last_renewed = time.monotonic()
        while not self._stopping.wait(every_s):
            with self._lock:
                held = dict(self._held)
            try:
                tokens = {session_id: h.claim.token for session_id, h in held.items()}
                renewed = self.leases.renew(self.worker_id, tokens)
                self.leases.seen(self.worker_id, self.metrics.counts())
            except DATABASE_ERRORS:
                self.metrics.renew_failures += 1
                log.warning("Could not renew leases (database unavailable)")
                if time.monotonic() - last_renewed > self.leases.lease_s:
                    self._lose(held.values())
                continue
            last_renewed = time.monotonic()
            self._lose(h for i, h in held.items() if i not in renewed)

    def _lose(self, candidates: Iterable[HeldLease]) -> None:
        for held in candidates:
            with self._lock:
                current = self._held.get(held.session_id) is held
            # A run's last write releases its lease: a renewal between that commit and the
            # run's word that it handed the lease back finds none, and that is no loss.
            if current and not (held.lost or held.handed_back or held.handing_back_now):
                log.warning(
                    "Lease lost; stopping at the next safe point",
                    extra=on_session(held.session_id),
                )
                held.lose()


def _offer_in(payload: str) -> tuple[UUID, str] | None:
    """The session id and tenant an announcement names (`announcement`), if it is one."""
    try:
        named = json.loads(payload)
    except ValueError:
        return None
    if not (isinstance(named, list) and len(named) == 2 and all(isinstance(n, str) for n in named)):
        return None
    try:
        session_id = UUID(named[0])
        check_tenant(named[1])
    except (ValueError, DomainError):
        return None
    return session_id, named[1]
