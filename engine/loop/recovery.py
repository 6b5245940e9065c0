"""What a run does on taking a session over (a start, a restart, another worker's crash):
record the commands left without a result as interrupted, and give the executors back what
they had, from the results of the commands that ran and from the state kept outside the log
(cookies), which is kept here too as commands change it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any
from uuid import UUID

from domain.actions import actions_of
from domain.errors import StandardError
from domain.learning import INTERRUPTED
from domain.session import WorkflowSession
from engine.executors import Command, Executor
from engine.logs import LOGGER_NAME, on_step
from engine.loop.replay import lineage_history
from engine.ownership.executor_state import ExecutorStates
from engine.store.app import Stepline
from engine.store.held_session import HeldSession

log = logging.getLogger(LOGGER_NAME)

TookSignal = Callable[[WorkflowSession.WaitStarted, WorkflowSession.WaitEnded], None]


class Recovery:
    """A session's recovery on a takeover, and the executor state kept outside its log."""

    def __init__(
        self,
        app: Stepline,
        held: HeldSession,
        executor_kinds: Collection[str],
        executor_states: ExecutorStates | None,
    ) -> None:
        self.app = app
        self.held = held
        self.session_id = held.id
        self.executor_kinds = executor_kinds
        self.executor_states = executor_states
        self._kept_states: dict[str, dict[str, Any]] = {}

    def recover(
        self,
        check_still_ours: Callable[[], None],
        executor: Callable[[str], Executor],
        took_signal: TookSignal,
    ) -> None:
        """Record commands left without a result as interrupted; rebuild executor state."""
        session = self.held.session
        running = session.running_step
        if running is not None:
            for command_id in list(session.steps[running].open_commands):
                check_still_ours()
                self.held.decide(_interrupted(running, command_id))
                log.warning(
                    "Command %s was interrupted; deciding again",
                    command_id,
                    extra=on_step(self.session_id, running),
                )
        self.held.commit()
        self._restore_executors(executor, took_signal)

    def _restore_executors(
        self, executor: Callable[[str], Executor], took_signal: TookSignal
    ) -> None:
        """From the results of the commands that ran (a fork: and those of its source's steps
        before it), and the state kept outside the log (a fork's own, else its source's). A
        session that never ran has none of them: nothing is read for it."""
        if self._never_ran():
            return
        history = lineage_history(self.app, self.session_id)
        actions = actions_of(history)
        waits: dict[str, WorkflowSession.WaitStarted] = {}
        for event in history:
            if isinstance(event, WorkflowSession.CommandIssued):
                finished = actions[event.command_id].finished
                if finished is not None and finished.ok and event.executor in self.executor_kinds:
                    executor(event.executor).restore(
                        Command(event.executor, event.name, event.args), finished.output
                    )
            elif isinstance(event, WorkflowSession.WaitStarted):
                waits[event.key] = event
            elif isinstance(event, WorkflowSession.WaitEnded) and event.key in waits:
                took_signal(waits[event.key], event)
        for kind, state in self._kept_outside_the_log().items():
            if kind in self.executor_kinds:
                executor(kind).load_state(state)
                self._kept_states[kind] = state

    def _never_ran(self) -> bool:
        """Only created (no command, no wait, no kept state can exist) and not a fork (which
        starts from its source's)."""
        session = self.held.session
        return session.version == 1 and session.forked_from is None

    def _kept_outside_the_log(self) -> dict[str, dict[str, Any]]:
        """The session's kept executor state; a fork's first run takes its source's, and keeps
        a copy of its own (the source's is forgotten some time after the source ended)."""
        store = self.executor_states
        if store is None:
            return {}
        kept = store.load(self.session_id)
        fork = self.held.session.forked_from
        if kept or fork is None:
            return kept
        kept = store.load(UUID(fork["session_id"]))
        for kind, state in kept.items():
            store.save(self.session_id, kind, state)
        return kept

    def keep_state(self, kind: str, executor: Executor) -> None:
        """Save the executor's state outside the log when a command changed it."""
        store = self.executor_states
        state = executor.state()
        if store is not None and state is not None and state != self._kept_states.get(kind):
            store.save(self.session_id, kind, state)
            self._kept_states[kind] = state


def _interrupted(step_index: int, command_id: str) -> Callable[[WorkflowSession], None]:
    """The decision that a command left without a result will never have one."""
    error = StandardError.of(
        INTERRUPTED, "its owner stopped before this command's result"
    ).to_dict()
    return lambda session: session.finish_command(
        step_index, command_id=command_id, ok=False, output="interrupted", error=error
    )
