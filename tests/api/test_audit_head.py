"""GET /v1/audit/head: the head of the hash chain over the whole log, for anyone with a key."""

from __future__ import annotations

import psycopg

from engine.audit.chain_verify import record, verify
from engine.store.schema import EVENTS_TABLE
from tests.api.conftest import Api, shell_workflow


def test_every_tenant_reads_the_same_head_of_the_whole_log(api: Api) -> None:
    with api.client("alice") as alice, api.client("eve") as eve, api.client(None) as anyone:
        alice.post("/v1/sessions", json=shell_workflow("true")).raise_for_status()
        seen_by_alice = alice.get("/v1/audit/head")
        seen_by_eve = eve.get("/v1/audit/head")
        without_key = anyone.get("/v1/audit/head")

    assert seen_by_alice.status_code == seen_by_eve.status_code == 200
    # The session goes on being driven meanwhile: each head is checked against the log's row
    # at its own position, which later appends do not change.
    for seen in (seen_by_alice.json(), seen_by_eve.json()):
        with psycopg.connect(api.services.runtime.database_url) as conn:
            row = conn.execute(
                f"SELECT hash FROM {EVENTS_TABLE} WHERE notification_id = %s",
                (seen["position"],),
            ).fetchone()
        assert row is not None
        assert seen["hash"] == bytes(row[0]).hex()
        assert seen["last_verification"] is None
    assert seen_by_eve.json()["position"] >= seen_by_alice.json()["position"]
    assert without_key.status_code == 401


def test_the_head_shows_what_the_last_verification_found(api: Api) -> None:
    with api.client("alice") as alice:
        alice.post("/v1/sessions", json=shell_workflow("true")).raise_for_status()
    with psycopg.connect(api.services.runtime.database_url) as conn:
        report = verify(conn, EVENTS_TABLE)
        record(conn, report, actor="cli:ops")
        conn.commit()

    with api.client("alice") as alice:
        shown = alice.get("/v1/audit/head").json()["last_verification"]

    assert report.last_hash is not None
    assert shown["actor"] == "cli:ops"
    assert shown["clean"] is True
    assert (shown["from_position"], shown["to_position"]) == (1, report.last_position)
    assert shown["head_hash"] == report.last_hash.hex()
    assert shown["first_break"] is None
