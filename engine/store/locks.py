"""Every PostgreSQL advisory lock Stepline takes, by name.

Advisory lock ids share one space per database, so they are picked here, once, and nowhere
else: a second module choosing its own number could silently collide with one of these.
"""

from __future__ import annotations

SCHEMA = 0x5714E
"""One process at a time creates or migrates the schema: the event store, Stepline's own
tables and the views. Held for the whole of `engine.store.schema.prepare`."""

CLAIM = 0x57150
"""Claims take this lock only when a per-tenant running limit applies, so counts cannot race."""

SWEEP = 0x57151
"""One process at a time expires the sessions past their TTL and tidies what ended."""

SCHEDULES = 0x57152
"""One process at a time fires the schedules that are due (engine.scheduler)."""
PROJECTOR = 0x57153
"""The projector's leader: held for as long as one process catches the views up for the whole
deployment (session-level, on that process's connection: its death releases it)."""
