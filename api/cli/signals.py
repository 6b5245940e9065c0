"""The signals that end a `stepline` process end it in order.

Python turns Ctrl-C (SIGINT) into KeyboardInterrupt, so every `with` and `finally` runs; SIGTERM
(`kill`, `timeout`, a service manager) and SIGHUP (the terminal closed) would end the process on
the spot, leaving its sessions' leases to expire and the embedded PostgreSQL running with a
user that will never leave. Here they raise `EndedBySignal` in the main thread instead: sessions
stop at their next safe point and are handed back, and the embedded server is released (and
stopped, by its last user), as on any other exit. Then the process ends by the signal after
all, so its parent (a shell, systemd, `timeout`) sees what it would have seen. The commands
that run a session here (`run`, `replay`, `fork`, `demo`) are the exception: they take
`EndedBySignal` as they take Ctrl-C, and end with their exit code for an interrupted run (3).
"""

from __future__ import annotations

import atexit
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType

ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class EndedBySignal(SystemExit):
    """SIGTERM or SIGHUP arrived: unwind, then end. Its exit code, should the process not end
    by the signal itself, is the shell's for a process a signal ended: 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextmanager
def ended_in_order_by_signals() -> Iterator[None]:
    """Within: SIGTERM and SIGHUP raise `EndedBySignal` (from the main thread only) and, once
    everything has unwound, end the process by that signal. A signal this process was started
    with ignored (`nohup`) stays ignored."""
    for signum in ENDING_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _unwind)
    try:
        yield
    except EndedBySignal as ended:
        _end_by(ended.signum)
        raise


def _unwind(signum: int, frame: FrameType | None) -> None:
    for other in ENDING_SIGNALS:
        if signal.getsignal(other) is _unwind:
            signal.signal(other, _already_ending)
    raise EndedBySignal(signum)


def _already_ending(signum: int, frame: FrameType | None) -> None:
    """Another SIGTERM or SIGHUP while the first one's unwinding runs: cutting it short is what
    would leave the server running, so let it finish (SIGKILL still ends the process)."""


def _end_by(signum: int) -> None:
    """End the process by `signum`, after what the interpreter runs on a normal way out."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe, a closed file
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
