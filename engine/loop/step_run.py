"""What a step attempt needs of the run that drives its session: the one port through which
the deterministic, replayed and AI attempts act, record and read, so that neither depends on
the task loop itself (`SessionRun` is the one implementation)."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

from domain.errors import StandardError
from domain.session import WorkflowSession
from engine.ai.provider import AiProvider
from engine.executors import Command, Executor, Outcome
from engine.loop.definitions import Definitions
from engine.loop.limits import Limits
from engine.loop.replay import RecordedAction, RecordedStep, Replay
from engine.loop.step_results import Deadline, StepFailure
from engine.loop.waits import RecordedDecision, WaitRequest
from engine.secrets import Secrets
from engine.settings import Settings
from engine.tracing import Tracing
from projections.learned_actions import LearnedAction


class StepRun(Protocol):
    """The session run as a step attempt sees it."""

    @property
    def session_id(self) -> UUID: ...

    @property
    def session(self) -> WorkflowSession:
        """The session as decided so far (written or not)."""
        ...

    @property
    def config(self) -> dict[str, Any]: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def secrets(self) -> Secrets:
        """The session's tenant's secrets: what recorded text is redacted of."""
        ...

    @property
    def limits(self) -> Limits:
        """The session's; a step runs with `limits.for_step(its policy)`."""
        ...

    @property
    def definitions(self) -> Definitions: ...

    @property
    def replay(self) -> Replay | None:
        """What the session's source did, if it replays one."""
        ...

    @property
    def ai(self) -> AiProvider | None: ...

    @property
    def tracing(self) -> Tracing:
        """Where the attempt's model calls are traced (see `engine.tracing`)."""
        ...

    def safe_point(self, deadline: Deadline) -> StepFailure | None:
        """Raise Interrupted unless the session is still ours to run; a timeout fails the
        step."""
        ...

    def executor(self, kind: str) -> Executor:
        """The session's executor of `kind` (ValueError if there is no such kind)."""
        ...

    def is_check(self, command: Command) -> bool: ...

    def check(self, index: int, command: Command) -> Outcome:
        """Run a check (no side effect) and record it with its verdict."""
        ...

    def execute(self, index: int, command: Command, key: str | None = None) -> Outcome:
        """Issue, run and record one command, under idempotency key `key`."""
        ...

    def wait(
        self,
        index: int,
        request: WaitRequest,
        key: str,
        decision: RecordedDecision | None = None,
    ) -> Outcome:
        """Wait as `request` asks: the outcome if the wait ends at once, else Interrupted."""
        ...

    def status_judged_after(self, index: int) -> bool: ...

    def attempt_started(self, index: int, attempt: int) -> int:
        """The version of the StepStarted event of one attempt of one step."""
        ...

    def events_since(self, version: int) -> list[WorkflowSession.Event]:
        """The session's events from `version` on, everything decided so far written first."""
        ...

    def record_turn(self, index: int, **turn: Any) -> int: ...

    def record_replayed(self, index: int, recorded: RecordedStep) -> None: ...

    def record_divergence(self, index: int, action: RecordedAction, got: dict[str, Any]) -> bool:
        """Record where the replay diverged; whether the replay is strict (the step fails)."""
        ...

    def model_budget_used_up(self) -> StandardError | None: ...

    def learned_action(self, index: int, attempt: int) -> LearnedAction | None:
        """What an earlier session of the tenant learned for this attempt's step, unless
        learning is off for the session (`config.learn: false`, a replay) or none is."""
        ...

    def record_learned_action_used(self, index: int, **used: Any) -> None: ...
