"""`stepline audit verify`'s speed: the chain recomputed client-side, next to merely reading
the same rows, in one run on the same PostgreSQL.

    python -m bench.verify [--events N]

Appends N events (sessions of 20, states of a few hundred bytes, as a step's events are)
through the append function, which chains them, 1,000 to a call as group commit does; then
streams them once without hashing (the floor: the read alone) and once through the verifier.
Uses the server of STEPLINE_DATABASE_URL if set (in a fresh database it drops afterwards),
else the embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import time
from uuid import uuid4

import psycopg
from eventsourcing.persistence import StoredEvent

from bench.appends import bench_database
from engine.audit.chain_verify import BATCH, verify
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.store.event_store import FencedRecorder
from engine.store.schema import EVENTS_TABLE

EVENTS_PER_SESSION = 20
TOPICS = [
    f"domain.session:WorkflowSession.{name}"
    for name in ("StepStarted", "CommandIssued", "CommandFinished", "StepCompleted")
]


def state(n: int) -> bytes:
    payload = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00.000000+00:00"},
        "step_index": n % EVENTS_PER_SESSION,
        "command_id": f"c{n}",
        "output": f"row {n}: " + "x" * (100 + n % 300),
        "actor": "stepline",
    }
    return json.dumps(payload).encode()


def append(app: Stepline, events: int) -> float:
    """Seconds to append `events` through the chaining append function, 1,000 a call."""
    recorder: FencedRecorder = app.recorder  # type: ignore[assignment]
    started = time.perf_counter()
    batch: list[StoredEvent] = []
    session = uuid4()
    for n in range(events):
        version = n % EVENTS_PER_SESSION + 1
        if version == 1:
            session = uuid4()
        batch.append(StoredEvent(session, version, TOPICS[n % len(TOPICS)], state(n)))
        if len(batch) == 1_000:
            recorder.insert_events(batch)
            batch = []
    recorder.insert_events(batch)
    return time.perf_counter() - started


def read_only(url: str) -> float:
    """Rows/s of the verifier's query, streamed the same way, without hashing."""
    with psycopg.connect(url) as conn, conn.cursor(name="read", binary=True) as cursor:
        started = time.perf_counter()
        cursor.execute(
            "SELECT notification_id, uuid_send(originator_id), originator_version, "
            "convert_to(topic, 'UTF8'), state, hash FROM stepline_events ORDER BY notification_id"
        )
        count = 0
        while rows := cursor.fetchmany(BATCH):
            count += len(rows)
        return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    events = parser.parse_args().events

    with bench_database() as url:
        app = Stepline(eventsourcing_env(url))
        try:
            appended_s = append(app, events)
        finally:
            app.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE stepline_events")  # both reads find the rows settled
        floor = read_only(url)
        with psycopg.connect(url) as conn:
            report = verify(conn, EVENTS_TABLE)
        if not report.clean or report.events != events:
            raise SystemExit(f"the chain did not verify: {report.as_json()}")

    print(f"{events} events, same PostgreSQL, one run")
    print(f"append, chained, 1,000 a call    {events / appended_s:10,.0f} events/s")
    print(f"read the rows only (the floor)   {floor:10,.0f} rows/s")
    print(
        f"audit verify                     {report.events_per_s:10,.0f} events/s "
        f"({report.events_per_s / floor:.2f}x the read alone)"
    )


if __name__ == "__main__":
    main()
