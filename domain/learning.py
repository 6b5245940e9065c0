"""Learned actions: what an AI step did to complete, kept to do again without the model.

A learned action is keyed by its tenant, its workflow (a registered name and version, else a
hash of the session's step texts), the step's text, its executor and where the step started.
The actions themselves are a view of the log (`projections.learned_actions`); what a tenant
decides about them — to forget one — is this module's aggregate, so a rebuild of the view
forgets it again.

Where a step started (`starting_point`) is read from the log alone, so the view and the task
loop find the same key: the executor, the workflow's base URL and, for the browser, the path
of the last page the session navigated to before the step's attempt (its query string left
out: ids and times vary there). An HTTP request does not depend on the path asked before it
(only on cookies), so for `http` the base URL is the starting point: a step that had to go
elsewhere does not make the steps after it new. The browser's page *structure* is not part of
it: the log does not hold it, and each command done again checks the page's targets instead
(a target not found is a miss). A workflow naming an MCP server starts at that server too
(`start_base`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidWorkflow

_NAMESPACE = uuid.UUID("6f1c1d5e-5b8a-4f5e-9d0e-4c1a7e2b9f10")
WHERE_TO = {("browser", "navigate"): "url"}
"""The commands that move a session somewhere, and the argument that says where."""


def workflow_identity(name: str, config: Mapping[str, Any], step_texts: Iterable[str]) -> str:
    """`name@vN` for a registered version the config records, else a hash of the steps as
    written: the same workflow sent inline twice is one workflow, a changed step another."""
    registered = config.get("workflow")
    if isinstance(registered, Mapping) and isinstance(registered.get("version"), int):
        return f"{registered.get('name') or name}@v{registered['version']}"
    texts = json.dumps(list(step_texts), ensure_ascii=False)
    return "steps:" + hashlib.sha256(texts.encode()).hexdigest()[:16]


def target_of(executor: str, name: str, args: Mapping[str, Any]) -> str | None:
    """The path a command goes to, if it is one that moves the session (`WHERE_TO`)."""
    argument = WHERE_TO.get((executor, name))
    if argument is None or not isinstance(args.get(argument), str):
        return None
    return urlsplit(str(args[argument])).path or "/"


def start_base(config: Mapping[str, Any]) -> str | None:
    """What a workflow's starting points are relative to: its base URL and, when it names an
    MCP server, which server (a digest of its command or URL; not its env or headers, which
    hold secrets): tool calls learned against one server are not done again against another."""
    base_url = config.get("base_url")
    server = config.get("mcp")
    if not isinstance(server, Mapping):
        return base_url if isinstance(base_url, str) else None
    which = json.dumps([server.get("command"), server.get("url")], ensure_ascii=False)
    digest = hashlib.sha256(which.encode()).hexdigest()[:16]
    return f"{base_url or ''} mcp:{digest}".lstrip()


def starting_point(executor: str, base_url: str | None, last_target: str | None) -> str:
    """Where a step starts: its executor, the base URL (`start_base`), and the last path
    gone to."""
    return f"{executor} {base_url or ''} {last_target or '/'}"


@dataclass(frozen=True)
class LearnedKey:
    """What a learned action is found by: one action per key (in versions)."""

    tenant: str
    workflow: str
    step_text: str
    executor: str
    start: str

    @property
    def action_id(self) -> uuid.UUID:
        """The same key gives the same id, in the view and in the task loop."""
        parts = json.dumps([self.tenant, self.workflow, self.step_text, self.executor, self.start])
        return uuid.uuid5(_NAMESPACE, parts)


class LearnedActions(Aggregate):
    """A tenant's decisions about its learned actions: which it forgot, by whom, in order.
    (The actions are the log's; forgetting one must outlive a rebuild of their view.)"""

    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        tenant: str

    class Forgotten(Event):
        """The action's versions up to now are no longer used; a later run learns it anew."""

        tenant: str
        action_id: str
        actor: str

    tenant: str
    forgotten: list[str]

    @staticmethod
    def create_id(tenant: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"learned-actions:{tenant}")

    @classmethod
    def create(cls, tenant: str) -> LearnedActions:
        return cls(tenant=tenant)

    @event(Created)
    def __init__(self, *, tenant: str) -> None:
        self.tenant = tenant
        self.forgotten = []

    def forget(self, action_id: str, actor: str) -> None:
        try:
            uuid.UUID(action_id)
        except ValueError:
            raise InvalidWorkflow(
                f"not a learned action's id: {action_id!r}", field="action_id"
            ) from None
        self._forgotten(tenant=self.tenant, action_id=action_id, actor=actor)

    @event(Forgotten)
    def _forgotten(self, *, tenant: str, action_id: str, actor: str) -> None:
        self.forgotten.append(action_id)


ESSENTIAL = {("http", "request"): "status", ("shell", "run"): "exit_code"}
"""The part of a command's recorded output a result must reproduce, by command."""
INTERRUPTED = "COMMAND_INTERRUPTED"


def essentials(executor: str, name: str, ok: bool, output: str) -> dict[str, Any]:
    """The part of a result a replay (or a learned action) must reproduce: whether it
    succeeded, and the status or exit code it came with (a request failed on its 4xx still
    has its status). Bodies differ from run to run (ids, times) and are not compared."""
    found: dict[str, Any] = {"ok": ok}
    key = ESSENTIAL.get((executor, name))
    if key is not None:
        try:
            recorded = json.loads(output)
        except json.JSONDecodeError:
            return found
        if isinstance(recorded, dict) and key in recorded:
            found[key] = recorded[key]
    return found
