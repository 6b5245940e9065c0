"""`stepline serve`'s session slots in worker processes of its own.

One Python process serving the API, the views and the sessions' threads runs them all under
one GIL: measured end to end (bench/e2e.py), the API in one process beside one worker process
drives about half as many sessions again as the same slots in the API's process, for less CPU
per session. So `serve` starts STEPLINE_WORKER_PROCESSES of `stepline worker` (the same
settings, the slots shared out among them), restarts one that dies, and stops them — each
handing its sessions back at their next safe point — before it stops itself. A worker whose
`serve` died without stopping it (SIGKILL) sees its parent change within a second and stops
on its own: the leases and fencing that make any worker safe (engine.ownership) make these
so too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

SUPERVISOR_PID = "STEPLINE_SUPERVISOR_PID"
"""Set in a worker `serve` started: the pid whose end means the worker's end."""

WATCH_S = 0.2
STOP_S = 30.0
"""How long a worker may take to hand its sessions back once told to stop; then it is killed
(its leases expire, and another worker takes its sessions over under a new fence)."""

FIRST_RESTART_S = 1.0
LAST_RESTART_S = 30.0
STEADY_S = 60.0
"""A worker that ran this long before it died is restarted at once, as a first failure."""


def shares(slots: int, processes: int) -> list[int]:
    """`slots` shared out among at most `processes` workers, none of them empty."""
    count = min(slots, processes)
    return [slots // count + (1 if n < slots % count else 0) for n in range(count)]


def supervisor_gone() -> bool:
    """In a worker `serve` started: whether that `serve` is no longer its parent."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    return supervisor is not None and os.getppid() != int(supervisor)


@dataclass
class _Child:
    concurrency: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_after_s: float = FIRST_RESTART_S
    restart_at: float = 0.0


@dataclass
class WorkerProcesses:
    """`serve`'s workers, watched from one thread that starts, restarts and stops them."""

    slots: int
    processes: int
    _children: list[_Child] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def shares(self) -> list[int]:
        """The slots of each worker process."""
        return shares(self.slots, self.processes)

    @property
    def alive(self) -> bool:
        """Every worker running (one being restarted is not)."""
        return all(c.process is not None and c.process.poll() is None for c in self._children)

    @contextmanager
    def running(self) -> Iterator[WorkerProcesses]:
        self._children = [_Child(share) for share in self.shares]
        for child in self._children:
            self._start(child)
        thread = threading.Thread(target=self._watch, name="worker-processes", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_S):
            for child in self._children:
                self._restart_if_ended(child)
        self._stop_all()

    def _start(self, child: _Child) -> None:
        command = [sys.executable, "-m", "api.cli", "worker", "--concurrency"]
        environment = {**os.environ, SUPERVISOR_PID: str(os.getpid())}
        # A session of its own: a Ctrl-C at the terminal reaches `serve` only, which then stops
        # its workers in order (rather than seeing them end and starting others).
        child.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own command
            [*command, str(child.concurrency)], env=environment, start_new_session=True
        )
        child.started_at = time.monotonic()
        log.info("Worker process %d started (%d slots)", child.process.pid, child.concurrency)

    def _restart_if_ended(self, child: _Child) -> None:
        process = child.process
        now = time.monotonic()
        if process is not None:
            if process.poll() is None:
                return
            ran_s = now - child.started_at
            if ran_s >= STEADY_S:
                child.restart_after_s = FIRST_RESTART_S
            log.warning(
                "Worker process %d ended (exit status %s) after %.1f s; another starts in %.0f s",
                process.pid,
                process.returncode,
                ran_s,
                child.restart_after_s,
            )
            child.process = None
            child.restart_at = now + child.restart_after_s
            child.restart_after_s = min(child.restart_after_s * 2, LAST_RESTART_S)
        if now >= child.restart_at:
            self._start(child)

    def _stop_all(self) -> None:
        running = [c.process for c in self._children if c.process is not None]
        for process in running:
            if process.poll() is None:
                process.terminate()  # the worker hands its sessions back, then exits
        deadline = time.monotonic() + STOP_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("Worker process %d did not stop in %.0f s: killed", process.pid, STOP_S)
                process.kill()
                process.wait()
