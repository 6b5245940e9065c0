"""The task loop: drive a session step by step until it ends, pauses or is told to stop.

For the current step: decide (a step definition, else the AI model) -> record the decision ->
issue the command -> run it on an executor -> record the result -> repeat until the step is
completed or failed; then the next step; then the session completes or fails. Every decision
and result is an event, made on the session the run holds in memory and written before the
next side effect (`HeldSession`): a command is durably issued before it runs, and the write
proves the lease in the same transaction. A pause, a cancel or a lost lease therefore takes
effect before the next side effect; a write that loses a race reloads and decides again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

from domain.errors import InvalidStateTransition, InvalidWorkflow, StandardError
from domain.session import (
    ENDED,
    SessionStatus,
    StepSpec,
    StepState,
    StepStatus,
    WorkflowSession,
)
from domain.tenant import Policy
from domain.waits import variable_of
from engine.ai.provider import AiProvider
from engine.ai.token_budget import TokenBudget
from engine.executors import Command, Executor, Outcome
from engine.executors.kinds import EXECUTOR_NAMES, ExecutorKind, ExecutorSetup, builtin_kinds
from engine.logs import LOGGER_NAME, on_session, on_step
from engine.loop.definitions import Definitions, DefinitionsCache
from engine.loop.learned import LearnedActionSource, key_of
from engine.loop.limits import Limits
from engine.loop.recovery import Recovery
from engine.loop.replay import RecordedAction, RecordedStep, Replay
from engine.loop.step_attempt import StepAttempt
from engine.loop.step_flow import StepFlow
from engine.loop.step_results import (
    Deadline,
    Interrupted,
    StepDone,
    StepFailure,
    StepOnHold,
    StepResult,
)
from engine.loop.waits import (
    RecordedDecision,
    WaitRequest,
    check_signal,
    outcome_of,
    variable_value,
)
from engine.ownership.executor_state import ExecutorStates
from engine.secrets import IN_USE, Secrets, origin_of
from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.event_store import Fence, LeaseLost
from engine.store.held_session import HeldSession
from engine.store.snapshots import Snapshotter
from engine.store.writer import GroupWriter
from engine.tenancy.policies import Policies, base_policy, is_dev_tenant
from engine.tenancy.secret_store import SealedSecrets, SecretStore
from engine.tracing import OFF, Tracing, ended
from engine.workflows.plan import PlannedStep, planned_step, unset_explained
from projections.learned_actions import LearnedAction

log = logging.getLogger(LOGGER_NAME)

MAX_REFUSALS = 10
BACK_OFF_LOOK_EVERY_S = 1.0
"""A back-off looks at the log at least this often, even if no notification came."""
BACK_OFF_LOOK_GAP_S = 0.1
"""...and at most this often, however fast notifications come (a busy log notifies a lot)."""
CLOCK_SKEW_S = 1.0
"""How far this process's clock may lag the database's, which says when a wait is due: a
session claimed as due this much before its due time by this clock is woken once it is."""


class Ownership(Protocol):
    """The lease under which this process drives the session: every write of the run must
    still hold `fence`, and `lose` is told when one did not. Without one (a single process,
    tests), the session is always ours."""

    @property
    def fence(self) -> Fence: ...

    def lose(self) -> None: ...

    def handing_back(self) -> AbstractContextManager[None]:
        """While the run's last write, which releases the lease (`HeldSession.commit`), is
        made and said (`settle`): a renewal that finds no lease meanwhile is that release, not
        a loss."""
        ...

    def settle(self, version: int, *, handed_back: bool = False) -> None:
        """The run ended with the session needing no driving (paused, waiting, ended) as of
        `version`: it is claimable again only after a later change (a resume, an approval).
        `handed_back`: its last write released the lease so (`HeldSession.commit`)."""
        ...

    @property
    def news(self) -> threading.Event:
        """Set when the log may hold news for the session (someone else may have written),
        and when the run is told to stop: what a back-off waits on."""
        ...


class TaskLoop:
    """Everything a session run needs; `drive` runs one session."""

    def __init__(
        self,
        app: Stepline,
        settings: Settings,
        definitions: Definitions,
        secrets: Secrets,
        ai: AiProvider | None = None,
        *,
        executor_kinds: Mapping[str, ExecutorKind] | None = None,
        executor_states: ExecutorStates | None = None,
        token_budget: TokenBudget | None = None,
        policies: Policies | None = None,
        secret_store: SecretStore | None = None,
        tracing: Tracing = OFF,
        learned: LearnedActionSource | None = None,
    ) -> None:
        """`secrets` are the environment's, for the dev tenant only; `executor_kinds` adds
        executors to (or replaces) the registered kinds; `executor_states` keeps what
        executors need after a takeover (cookies); `token_budget` is each tenant's daily
        allowance of model tokens; `policies` gives each tenant's policy (without: the
        operator's defaults); `secret_store` holds each tenant's own secrets; `tracing`
        makes each run of a session a span of the session's trace; `learned` finds what
        earlier AI steps learned (without: every AI step asks the model)."""
        self.tracing = tracing
        self.learned = learned
        self.secret_store = secret_store
        self.token_budget = token_budget
        self.policies = policies
        self.executor_kinds = {**builtin_kinds(), **(executor_kinds or {})}
        self.executor_states = executor_states
        self.app = app
        self.writer = GroupWriter(app)
        self.snapshotter = Snapshotter(app)
        self.settings = settings
        self.definitions = DefinitionsCache(definitions)
        self.secrets = secrets
        self.ai = ai

    def policy_of(self, tenant: str) -> Policy:
        if self.policies is None:
            return base_policy(self.settings, tenant)
        return self.policies.of(tenant)

    def secrets_of(self, session: WorkflowSession, read: SealedSecrets | None = None) -> Secrets:
        """The session's tenant's secrets and no one else's: those it stored (bound, unless
        stored with origins, to the workflow's base URL), and the environment's for the dev
        tenant only. `read`: the stored ones as the run's first statement read them (used
        only if read for the session's tenant)."""
        tenant = session.tenant
        env = self.secrets if is_dev_tenant(self.settings, tenant) else Secrets()
        if self.secret_store is None:
            return env
        base_origin = origin_of(str(session.config.get("base_url") or ""))
        return env.joined(self.secret_store.secrets_of(tenant, base_origin, read))

    def signal(self, session_id: UUID, name: str, body: Any, actor: str) -> WorkflowSession:
        """Send the session a signal, as its log may record it: checked (`check_signal`: a
        body is data, never a placeholder), its tenant's secret values in it replaced by
        their placeholders, as in every recorded result."""
        check_signal(name, body)
        recorded = self.secrets_of(self.app.get_session(session_id)).redact_all(body)
        self.app.signal(session_id, name, recorded, actor=actor)
        return self.app.get_session(session_id)

    def secret_names(self, tenant: str) -> set[str]:
        """The names of the secrets a session of `tenant` can fill in (see `secrets_of`)."""
        env = set(self.secrets.names) if is_dev_tenant(self.settings, tenant) else set()
        if self.secret_store is None:
            return env
        return env | {stored.name for stored in self.secret_store.listed(tenant)}

    def seed_names(self, tenant: str) -> set[str]:
        """The names of the TOTP seeds a session of `tenant` can fill in (`{{totp.NAME}}`):
        those it stored, and the environment's for the dev tenant only."""
        env = set(self.secrets.seed_names) if is_dev_tenant(self.settings, tenant) else set()
        if self.secret_store is None:
            return env
        return env | {stored.name for stored in self.secret_store.listed(tenant) if stored.totp}

    def close(self) -> None:
        """Release what the executor kinds hold for the process (the browser, kept HTTP
        connections)."""
        for kind in self.executor_kinds.values():
            close = getattr(kind, "close", None)
            if callable(close):
                close()

    def drive(
        self,
        session_id: UUID,
        stop: threading.Event,
        ownership: Ownership | None = None,
        saved: WorkflowSession | None = None,
        *,
        secrets: SealedSecrets | None = None,
    ) -> SessionStatus:
        """Run the session until it ends or pauses, until `stop` is set, or until
        `ownership` can no longer be proven. `saved`: the session as the caller has just
        saved it, which the run then holds instead of loading it (see HeldSession);
        `secrets`: its tenant's stored secrets as read with its lease (see `secrets_of`)."""
        try:
            run = SessionRun(self, session_id, stop, ownership, saved, secrets=secrets)
        except InvalidWorkflow as unusable:  # e.g. its definitions module cannot be loaded
            session = self.app.get_session(session_id)
            if session.status in (SessionStatus.PENDING, SessionStatus.RUNNING):
                self.app.fail_session(session_id, unusable.to_standard_error())
            return self.app.get_session(session_id).status
        try:
            return run.to_the_end()
        finally:
            run.close()


class SessionRun:
    """One run of one session, from taking it over until it settles or stops; what its step
    attempts act through (the `StepRun` they take)."""

    def __init__(
        self,
        loop: TaskLoop,
        session_id: UUID,
        stop: threading.Event,
        ownership: Ownership | None,
        saved: WorkflowSession | None = None,
        *,
        secrets: SealedSecrets | None = None,
    ) -> None:
        self.loop = loop
        self.app = loop.app
        self.session_id = session_id
        self.stop = stop
        self.ownership = ownership
        fence = ownership.fence if ownership is not None else None
        self.held = HeldSession(
            self.app, loop.writer, loop.snapshotter, session_id, fence, saved=saved
        )
        session = self.held.session
        self.config = session.config
        self.secrets = loop.secrets_of(session, secrets)
        self.policy = loop.policy_of(session.tenant)
        self.limits = Limits.of(session, loop.settings)
        self.definitions = loop.definitions.for_module(session.config.get("definitions"))
        self.replay = Replay.of(self.app, session)
        self.executors: dict[str, Executor] = {}
        self.tracing = loop.tracing
        self._claimed_waiting = session.status is SessionStatus.WAITING
        """The run was started for a waiting session: the database's clock says it is due."""
        self._plans: dict[tuple[int, str, str | None], PlannedStep] = {}
        """What the definitions make of each step (`status_judged_after`), by its text."""
        self._signalled: dict[str, Any] = {}
        """The bodies of the signals the session's waits took, as `{{vars.NAME}}` gives them."""
        self.recovery = Recovery(self.app, self.held, loop.executor_kinds, loop.executor_states)
        self.flow = StepFlow(self.held, session_id, self.secrets)
        self._release_secrets = IN_USE.hold(self.secrets)  # redacted from log lines meanwhile

    @property
    def session(self) -> WorkflowSession:
        return self.held.session

    @property
    def settings(self) -> Settings:
        return self.loop.settings

    @property
    def ai(self) -> AiProvider | None:
        return self.loop.ai

    def close(self) -> None:
        ended = self.held.session.status in ENDED
        for executor in self.executors.values():
            executor.close(ended=ended)
        self._release_secrets()

    # ---- the session --------------------------------------------------------------------

    def to_the_end(self) -> SessionStatus:
        with self.tracing.session_run(self.session) as span:
            status = self._recovered_and_advanced()
            span.set_attribute("stepline.status", status.value)
            return status

    def _recovered_and_advanced(self) -> SessionStatus:
        try:
            self.recovery.recover(self._check_still_ours, self.executor, self._took_signal)
            return self._advance_until_settled()
        except LeaseLost:
            log.warning("Lost the session's lease; stopping", extra=on_session(self.session_id))
            if self.ownership is not None:
                self.ownership.lose()
            self.stop.set()
            return self.held.session.status

    def _advance_until_settled(self) -> SessionStatus:
        refusals = 0
        while True:
            session = self.held.session
            try:
                if session.status is SessionStatus.WAITING and not self._woken(session):
                    return self._settled()
                if session.status.is_terminal or session.status is SessionStatus.PAUSED:
                    return self._settled()
                if self.stop.is_set():
                    self.held.commit()
                    return session.status
                self._advance(session)
                refusals = 0
            except Interrupted:
                continue
            except InvalidStateTransition as refused:
                refusals += 1
                if refusals > MAX_REFUSALS:
                    log.error("Gave up driving: %s", refused, extra=on_session(self.session_id))
                    return self.held.session.status

    def _settled(self) -> SessionStatus:
        """Write what is decided; the session needs no driving as of now. An ended one's
        lease is handed back with that write (nothing can want it driven again); a paused or
        waiting one's once the run has closed (its executors may keep what a resumed run
        picks up)."""
        ownership = self.ownership
        ended = ownership is not None and self.held.session.status in ENDED
        with ownership.handing_back() if ownership is not None and ended else nullcontext():
            handed_back = self.held.commit(hand_back=ended)
            if ownership is not None:
                ownership.settle(self.held.session.version, handed_back=handed_back)
        return self.held.session.status

    def _woken(self, session: WorkflowSession) -> bool:
        """End the session's wait if it is due (a timer's time, an approval's or a signal's
        timeout): whether it was. A session is claimed as due by the database's clock; this
        process's may lag it a little, and is waited for up to CLOCK_SKEW_S."""
        wait = session.waiting
        if wait is None or wait.due_at is None:
            return False
        left_s = (wait.due_at - datetime.now(UTC)).total_seconds()
        lag_s = CLOCK_SKEW_S if self._claimed_waiting else 0.0
        if left_s > lag_s or self.stop.wait(max(0.0, left_s)):
            return False
        self.held.decide(lambda s: s.wake())
        self.held.commit()  # the one wake-up, written before the step goes on
        log.info("Woken: %s", wait.describe(), extra=on_step(self.session_id, wait.step_index))
        return True

    def _advance(self, session: WorkflowSession) -> None:
        self._check_still_ours()
        if self._workflow_timed_out(session):
            error = StandardError.of(
                "TASK_LOOP_TIMEOUT",
                f"the workflow ran longer than {self.limits.workflow_timeout_ms} ms",
                {"limit": "workflow_timeout_ms"},
            )
            self._fail_session(error)
            return
        if session.all_steps_done:
            self.held.decide(lambda s: s.complete())
            log.info("Session completed", extra=on_session(self.session_id))
            return
        index = session.current_step
        step = session.steps[index]
        if (step.condition or step.loop) and self.flow.passed_over(index, step, self._variables()):
            return
        attempt = step.attempts
        resuming = step.status is StepStatus.RUNNING  # started before a stop or a takeover
        if not resuming:
            if step.status is StepStatus.FAILED and not session.can_start_next_step():
                self._after_failure(index, step)
                return
            if step.status is StepStatus.FAILED:
                self.held.commit()
                backoff_ms = self.limits.for_step(step.policy).retry_backoff_ms
                self._back_off(step.attempts, backoff_ms)
                self._check_still_ours()
            attempt = self.held.decide(lambda s: s.start_step(index))
            if step.status is StepStatus.FAILED:
                # Written at once: a pause or cancel made during the back-off refuses it now.
                self.held.commit()
            log.info(
                'Step started: "%s" (attempt %d)',
                step.text,
                attempt,
                extra=on_step(self.session_id, index),
            )
        with self.tracing.step(session, index, step.text, attempt) as span:
            result = StepAttempt(self, index, step, attempt, resuming).run()
            ended(span, *_outcome_of(result))
            self._record(index, result)

    def _after_failure(self, index: int, step: StepState) -> None:
        """The step failed for good: the session fails, or goes on past it if the step's
        policy says `on_failure: continue`."""
        if not step.policy.continues:
            self._fail_session(StandardError.from_dict(step.error or {}))
            return
        self.held.decide(lambda s: s.continue_after_failure(index))
        log.warning(
            "Step failed; the session goes on (on_failure: continue)",
            extra=on_step(self.session_id, index),
        )

    def _fail_session(self, error: StandardError) -> None:
        self.held.decide(lambda s: s.fail(error.to_dict()))
        log.error(
            "Session failed: %s (%s)", error.message, error.code, extra=on_session(self.session_id)
        )

    def _record(self, index: int, result: StepResult) -> None:
        if isinstance(result, StepOnHold):
            reason = self.secrets.redact(f"{result.error.code}: {result.error.message}")
            self.held.decide(lambda s: s.pause(reason))
            log.warning(
                "Step on hold, session paused: %s", reason, extra=on_step(self.session_id, index)
            )
            return
        if isinstance(result, StepDone):
            summary = self.secrets.redact(result.summary)
            evidence = self.secrets.redact_all(result.evidence)
            data = self.secrets.redact_all(result.data)
            self.held.decide(
                lambda s: s.complete_step(index, summary=summary, evidence=evidence, data=data)
            )
            self._share_signalled_all()
            log.info("Step completed", extra=on_step(self.session_id, index))
        else:
            error = StandardError.from_dict(self.secrets.redact_all(result.error.to_dict()))
            self.held.decide(
                lambda s: s.fail_step(index, error=error.to_dict(), retryable=error.retryable)
            )
            log.error(
                "Step failed: %s (%s)",
                error.message,
                error.code,
                extra=on_step(self.session_id, index),
            )

    def _workflow_timed_out(self, session: WorkflowSession) -> bool:
        """Whether the session has run longer than its limit: time spent waiting is not
        running time."""
        elapsed = datetime.now(UTC) - session.created_on
        running_ms = elapsed.total_seconds() * 1000 - session.waited_ms
        return running_ms > self.limits.workflow_timeout_ms

    def _back_off(self, attempts_so_far: int, backoff_ms: int) -> None:
        """Wait before the failed step's next attempt (`backoff_ms`, doubled after each
        attempt but the first), holding the lease. Someone else's
        change (a pause, a cancel, an expiry) ends the wait at once, however long it was to
        be, so the session settles and its lease and slot are freed: the owner's `news`
        wakes it on new events, and it looks at the log every few seconds whatever comes."""
        delay_s = backoff_ms / 1000 * 2 ** (attempts_so_far - 1)
        due = time.monotonic() + delay_s
        news = self.ownership.news if self.ownership is not None else threading.Event()
        while (left := due - time.monotonic()) > 0:
            news.wait(min(left, BACK_OFF_LOOK_EVERY_S))
            news.clear()
            self._check_still_ours()
            if self._no_longer_running():
                return
            self.stop.wait(min(BACK_OFF_LOOK_GAP_S, max(0.0, due - time.monotonic())))

    def _no_longer_running(self) -> bool:
        """Whether someone else has since stopped the session (paused, cancelled, expired):
        one indexed read when nothing was written, the session's new events when it was."""
        held = self.held.session
        if not self.app.history(self.session_id, after=held.version, limit=1):
            return False
        return self.app.get_session(self.session_id).status is not SessionStatus.RUNNING

    def _check_still_ours(self) -> None:
        """Raise Interrupted once told to stop (a shutdown, a lease the heartbeat could not
        renew). Ownership itself is proven by every write: see `HeldSession`."""
        if self.stop.is_set():
            raise Interrupted

    # ---- what steps use -----------------------------------------------------------------

    def safe_point(self, deadline: Deadline) -> StepFailure | None:
        """Raise Interrupted unless the session is still ours to run; a timeout fails the step."""
        self._check_still_ours()
        if self.held.session.status is not SessionStatus.RUNNING:
            raise Interrupted
        return deadline.passed()

    def executor(self, kind: str) -> Executor:
        if kind not in self.executors:
            build = self.loop.executor_kinds.get(kind)
            if build is None:
                kinds = ", ".join(sorted(self.loop.executor_kinds))
                raise ValueError(f"no executor named {kind!r}; there are {kinds}")
            setup = ExecutorSetup(
                self.session_id,
                self.config,
                self.loop.settings,
                self.secrets,
                self.policy,
                self.session.tenant,
            )
            self.executors[kind] = build(setup)
            self._share_signalled(self.executors[kind])
        return self.executors[kind]

    # ---- waits --------------------------------------------------------------------------

    def wait(
        self,
        index: int,
        request: WaitRequest,
        key: str,
        decision: RecordedDecision | None = None,
    ) -> Outcome:
        """Wait as `request` asks, under `key`: the wait is written and the run ends with the
        session waiting (Interrupted), unless it ends at once: a signal already in the
        mailbox, or a replay's `decision` (its source's approval or signal, used again)."""
        before = self.held.session.version
        now = datetime.now(UTC)
        if decision is not None:
            decision.before(self.held)
        self.held.decide(
            lambda s: s.begin_wait(
                index,
                kind=request.kind,
                key=key,
                question=request.question,
                signal=request.signal,
                due_at=request.due_at(now),
                now=now,
            )
        )
        if decision is not None:
            decision.after(self.held)
        self.held.commit()
        if self.held.session.status is SessionStatus.WAITING:
            log.info("Waiting for %s", request.describe(), extra=on_step(self.session_id, index))
            raise Interrupted
        started, ended = self.wait_of(key, after=before)
        self._took_signal(started, ended)
        return outcome_of(started, ended)

    def wait_of(
        self, key: str, after: int
    ) -> tuple[WorkflowSession.WaitStarted, WorkflowSession.WaitEnded]:
        """The wait recorded under `key` since version `after`, and how it ended."""
        started = ended = None
        for event in self.app.history(self.session_id, after=after):
            if isinstance(event, WorkflowSession.WaitStarted) and event.key == key:
                started = event
            elif isinstance(event, WorkflowSession.WaitEnded) and event.key == key:
                ended = event
        assert started is not None  # it was just written
        assert ended is not None  # a wait not waiting has ended
        return started, ended

    def _took_signal(
        self, started: WorkflowSession.WaitStarted, ended: WorkflowSession.WaitEnded
    ) -> None:
        """A signal's body is `{{vars.<its name>}}` from the wait that took it on."""
        if started.signal is None or ended.outcome != "signalled":
            return
        self._signalled[variable_of(started.signal)] = variable_value(ended.data)
        for executor in self.executors.values():
            self._share_signalled(executor)

    def _variables(self) -> dict[str, Any]:
        """`{{vars.NAME}}` as the session's executors fill it in: what its steps saved, and
        the bodies of the signals its waits took."""
        variables: dict[str, Any] = {}
        for executor in self.executors.values():
            variables.update(getattr(executor, "variables", None) or {})
        return variables | self._saved()

    def _saved(self) -> dict[str, Any]:
        """What the session saved beside its commands: the data its steps extracted (their
        `save_as`, as the log records it) and the bodies of the signals its waits took."""
        extracted = {
            step.save_as: step.data
            for step in self.held.session.steps
            if step.save_as and step.status is StepStatus.COMPLETED and step.data is not None
        }
        return extracted | self._signalled

    def _share_signalled(self, executor: Executor) -> None:
        """Executors that fill `{{vars.NAME}}` in keep the variables in `variables`."""
        variables = getattr(executor, "variables", None)
        if isinstance(variables, dict):
            variables.update(self._saved())

    def _share_signalled_all(self) -> None:
        for executor in self.executors.values():
            self._share_signalled(executor)

    def attempt_started(self, index: int, attempt: int) -> int:
        """The version of the StepStarted event of one attempt of one step."""
        self.held.commit()
        return next(
            e.originator_version
            for e in reversed(self.app.history(self.session_id))
            if isinstance(e, WorkflowSession.StepStarted)
            and (e.step_index, e.attempt) == (index, attempt)
        )

    def events_since(self, version: int) -> list[WorkflowSession.Event]:
        """The session's events from `version` on, everything decided so far written first
        (this is also what commits a command's result before the model is asked again)."""
        self.held.commit()
        return self.app.history(self.session_id, after=version - 1)

    def record_replayed(self, index: int, recorded: RecordedStep) -> None:
        replay = self.replay
        assert replay is not None
        self.held.decide(
            lambda s: s.record_replayed(
                index,
                source_session_id=replay.source_session_id,
                actions=len(recorded.actions),
                turns_saved=recorded.turns,
                tokens_saved=recorded.tokens,
            )
        )
        log.info("Step replayed, no model call", extra=on_step(self.session_id, index))

    def record_divergence(self, index: int, action: RecordedAction, got: dict[str, Any]) -> bool:
        """Record where the replay diverged; whether the replay is strict (the step fails)."""
        strict = self.replay is not None and self.replay.strict
        command = action.command
        self.held.decide(
            lambda s: s.record_divergence(
                index,
                executor=command.executor,
                name=command.name,
                args=command.args,
                expected=action.expected,
                got=got,
                strict=strict,
            )
        )
        log.warning(
            "Replay diverged at %s.%s: expected %s, got %s",
            command.executor,
            command.name,
            action.expected,
            got,
            extra=on_step(self.session_id, index),
        )
        return strict

    def model_budget_used_up(self) -> StandardError | None:
        """Why the session's tenant may not call the model now (its daily budget), or None."""
        budget = self.loop.token_budget
        return None if budget is None else budget.used_up(self.held.session.tenant)

    def learned_action(self, index: int, attempt: int) -> LearnedAction | None:
        source = self.loop.learned
        if source is None or self.config.get("learn") is False or self.replay is not None:
            return None
        self.held.commit()
        history = self.app.history(self.session_id)
        return source.current(key_of(history, index, self.session.steps[index].text, attempt))

    def record_learned_action_used(self, index: int, **used: Any) -> None:
        self.held.decide(lambda s: s.record_learned_action_used(index, **used))
        said = "held, no model call" if used["hit"] else "missed; the model takes over"
        log.info("Learned action %s", said, extra=on_step(self.session_id, index))

    def record_turn(self, index: int, **turn: Any) -> int:
        number = self.held.decide(lambda s: s.record_turn(index, **turn))
        log.debug("Turn %d recorded", number, extra=on_step(self.session_id, index))
        return number

    def execute(self, index: int, command: Command, key: str | None = None) -> Outcome:
        """Issue, run and record one command. Secrets never reach the recorded args or output.
        `key` is the idempotency key; a new command gets its command id as its key."""
        refusal = self._refusal_of(command.executor)
        if refusal is not None:
            return refusal
        try:
            executor = self.executor(command.executor)
        except ValueError as error:
            return Outcome.failed("UNKNOWN_EXECUTOR", str(error))
        command_id = f"s{index}-{uuid4().hex[:12]}"
        key = key or command_id
        args = self.secrets.redact_all(command.args)
        self.held.decide(
            lambda s: s.issue_command(
                index,
                command_id=command_id,
                executor=command.executor,
                name=command.name,
                args=args,
                idempotency_key=key,
            )
        )
        self.held.commit()  # durably issued, under the lease, before the side effect starts
        log.debug(
            "Command issued: %s.%s",
            command.executor,
            command.name,
            extra=on_step(self.session_id, index),
        )
        outcome, result = self._run_on(index, executor, replace(command, idempotency_key=key), args)
        self.held.decide(lambda s: s.finish_command(index, command_id=command_id, **result))
        log.debug("Command finished: ok=%s", outcome.ok, extra=on_step(self.session_id, index))
        return outcome

    def _refusal_of(self, kind: str) -> Outcome | None:
        """A step may name any executor (`open /x` is the browser's, in an http workflow):
        each command is held to the tenant's executors, not only the workflow's own."""
        if kind in self.policy.executors or kind not in EXECUTOR_NAMES:
            return None  # a kind the operator's code added (a bench's) is not a tenant's
        allowed = ", ".join(self.policy.executors) or "none"
        return Outcome.failed(
            "POLICY_REFUSED",
            f"executor {kind!r} is not allowed for this tenant; allowed: {allowed}",
            executor=kind,
        )

    def check(self, index: int, command: Command) -> Outcome:
        """Run a check, which has no side effect, and record it with its verdict as one event,
        written with whatever the step decides next."""
        refusal = self._refusal_of(command.executor)
        if refusal is not None:
            return refusal
        executor = self.executor(command.executor)
        args = self.secrets.redact_all(command.args)
        outcome, result = self._run_on(index, executor, command, args)
        self.held.decide(
            lambda s: s.record_check(
                index, executor=command.executor, name=command.name, args=args, **result
            )
        )
        log.debug(
            "Checked %s: ok=%s", command.name, outcome.ok, extra=on_step(self.session_id, index)
        )
        return outcome

    def is_check(self, command: Command) -> bool:
        """Whether the command only looks (see `Executor.checks`)."""
        try:
            return command.name in self.executor(command.executor).checks
        except ValueError:  # an unknown executor: `execute` reports it
            return False

    def _run_on(
        self, index: int, executor: Executor, command: Command, recorded_args: dict[str, Any]
    ) -> tuple[Outcome, dict[str, Any]]:
        """Run the command; its outcome, and its result as recorded (secrets redacted, as in
        `recorded_args`, the command's own as recorded)."""
        started = time.monotonic()
        with self.tracing.command(self.session, index, command, recorded_args) as span:
            outcome = self._explained(index, executor.run(command))
            ended(span, "ok" if outcome.ok else "failed", outcome.error)
        self.recovery.keep_state(command.executor, executor)
        result: dict[str, Any] = {
            "ok": outcome.ok,
            "output": self.secrets.redact(outcome.output),
            "duration_ms": int((time.monotonic() - started) * 1000),
            "error": self.secrets.redact_all(outcome.error.to_dict()) if outcome.error else None,
            "artifacts": list(outcome.artifacts),
        }
        return outcome, result

    def _explained(self, index: int, outcome: Outcome) -> Outcome:
        """A variable not set, said with the steps that could have saved it."""
        error = outcome.error
        if error is None or error.code != "VARIABLE_NOT_SET":
            return outcome
        steps = [StepSpec(step.text, step.expect) for step in self.held.session.steps]
        explained = unset_explained(error, self.definitions, steps, index)
        return replace(outcome, output=explained.message, error=explained)

    def status_judged_after(self, index: int) -> bool:
        """Whether an error status answering step `index`'s last request is judged by a check:
        its own expect, or the next step, is an `expect status`. Each step is planned once a
        run: the next step's plan is its own when it comes up."""
        steps = self.held.session.steps
        if self._planned(index, steps[index]).checks_status:
            return True
        following = index + 1
        return following < len(steps) and self._planned(following, steps[following]).is_status_check

    def _planned(self, index: int, step: StepState) -> PlannedStep:
        key = (index, step.text, step.expect)
        planned = self._plans.get(key)
        if planned is None:
            spec = StepSpec(step.text, step.expect)
            planned = self._plans[key] = planned_step(self.definitions, index, spec)
        return planned


def _outcome_of(result: StepResult) -> tuple[str, StandardError | None]:
    """How a step attempt came out, as its span says: its status and error."""
    if isinstance(result, StepDone):
        return "completed", None
    return ("on_hold" if isinstance(result, StepOnHold) else "failed"), result.error
