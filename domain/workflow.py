"""A Workflow in a tenant's registry: the versions of one named workflow document.

Each push of a document that differs from the current version's records a new version, n + 1;
a push of the current document records nothing and answers that version. A version never
changes: it is its document, content-addressed by the SHA-256 of its canonical JSON (keys
sorted, no spaces), as normalised before it is pushed. A rollback makes another version current
again, as an event of its own; nothing is ever deleted.

A workflow's id is derived from its tenant and name (`Workflow.create_id`), so the same name in
two tenants is two workflows, and a name resolves to its workflow without a lookup.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidWorkflow, WorkflowNotFound
from domain.json_values import unstorable
from domain.session import MAX_NAME, check_tenant

_NAME_TEXT = r"\w(?:[\w .,:()-]*[\w.,:()-])?"
NAME = f"^{_NAME_TEXT}$"
"""A registered workflow's name: letters, digits and `_`, with spaces and `. , : ( ) -` inside;
never `@` (a reference's `name@3` names a version) or `/` (the name is a path segment)."""
REFERENCE = f"^{_NAME_TEXT}(?:@[1-9][0-9]{{0,8}})?$"
"""A reference to a registered workflow: `name` (its current version) or `name@3`."""
_NAME = re.compile(NAME)
_REFERENCE = re.compile(f"^(?P<name>{_NAME_TEXT})(?:@(?P<version>[1-9][0-9]{{0,8}}))?$")
_NAMESPACE = uuid.UUID("0d6f6c1e-3b7a-4f0e-9a59-6b1f2c8e4d21")


def content_address(document: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the document's canonical JSON: the same for the same content,
    whatever the order its keys were written in."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def canonical_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Reference:
    """A registered workflow's version: `name@3`, or `name` for its current one."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> Reference | None:
        """The reference `text` is, or None if it is none."""
        found = _REFERENCE.fullmatch(text)
        if found is None or len(found["name"]) > MAX_NAME:
            return None
        number = found["version"]
        return cls(found["name"], None if number is None else int(number))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def is_name(text: str) -> bool:
    return len(text) <= MAX_NAME and _NAME.fullmatch(text) is not None


def check_name(name: str) -> str:
    if not is_name(name):
        raise InvalidWorkflow(
            f"{name!r} cannot name a registered workflow",
            suggested_action=f"Name it in 1 to {MAX_NAME} letters, digits, `_` and, inside, "
            "spaces and . , : ( ) - (no @ or /)",
            field="name",
        )
    return name


@dataclass(frozen=True)
class Version:
    number: int
    sha256: str
    document: dict[str, Any]
    actor: str


class Workflow(Aggregate):
    class Event(Aggregate.Event):
        class_version = 1

    class Created(Event, Aggregate.Created):
        tenant: str
        name: str
        actor: str

    class Pushed(Event):
        """Version `version` of the workflow: `document`, whose content address is `sha256`."""

        version: int
        sha256: str
        document: dict[str, Any]
        actor: str

    class RolledBack(Event):
        """Version `to_version` is current again (it was `from_version`)."""

        to_version: int
        from_version: int
        actor: str

    tenant: str
    name: str
    versions: list[Version]
    current: int
    """The current version's number (0 before the first push)."""

    @staticmethod
    def create_id(tenant: str, name: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, json.dumps([tenant, name]))

    @classmethod
    def create(cls, *, tenant: str, name: str, actor: str) -> Workflow:
        check_tenant(tenant)
        return cls(tenant=tenant, name=check_name(name), actor=actor)

    @event(Created)
    def __init__(self, *, tenant: str, name: str, actor: str) -> None:
        self.tenant = tenant
        self.name = name
        self.versions = []
        self.current = 0

    # ---- reading ------------------------------------------------------------------------

    def version_numbered(self, number: int | None = None) -> Version:
        """Version `number`, or the current one; WorkflowNotFound if there is no such one."""
        wanted = self.current if number is None else number
        if not 1 <= wanted <= len(self.versions):
            raise WorkflowNotFound(
                f"workflow {self.name!r} has no version {wanted} ({self._which()})",
                workflow=self.name,
                version=wanted,
            )
        return self.versions[wanted - 1]

    def _which(self) -> str:
        if not self.versions:
            return "it has none"
        return f"it has 1 to {len(self.versions)}, {self.current} current"

    # ---- commands -----------------------------------------------------------------------

    def push(self, document: dict[str, Any], actor: str) -> Version:
        """Record `document` as the next version, unless it is the current one's; the version
        that is current afterwards."""
        if document.get("name") != self.name:
            raise InvalidWorkflow(
                f"the document is named {document.get('name')!r}, not {self.name!r}",
                field="name",
            )
        if (problem := unstorable(document)) is not None:
            raise InvalidWorkflow(
                f"the document cannot be kept: {problem}",
                suggested_action="Remove what the message names from the document",
            )
        sha256 = content_address(document)
        if self.current and self.version_numbered().sha256 == sha256:
            return self.version_numbered()
        self._pushed(version=len(self.versions) + 1, sha256=sha256, document=document, actor=actor)
        return self.version_numbered()

    def roll_back(self, to_version: int, actor: str) -> None:
        """Make version `to_version` current again (nothing if it is already)."""
        if not 1 <= to_version <= len(self.versions):
            raise InvalidWorkflow(
                f"workflow {self.name!r} has no version {to_version} to roll back to "
                f"({self._which()})",
                suggested_action="Name one of its versions: `stepline workflows show NAME` "
                "lists them",
                field="to_version",
            )
        if to_version != self.current:
            self._rolled_back(to_version=to_version, from_version=self.current, actor=actor)

    # ---- events -------------------------------------------------------------------------

    @event(Pushed)
    def _pushed(self, *, version: int, sha256: str, document: dict[str, Any], actor: str) -> None:
        self.versions.append(Version(version, sha256, document, actor))
        self.current = version

    @event(RolledBack)
    def _rolled_back(self, *, to_version: int, from_version: int, actor: str) -> None:
        self.current = to_version
