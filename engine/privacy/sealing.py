"""The log's mapper: a session's events (and snapshots) are stored with every field sealed under
the session's data key, except an explicit list of fields that are not personal data.

Sealed by default: an event type added later is sealed unless someone adds its fields to
CLEAR_FIELDS on purpose. What stays clear is what the runtime, the views' tombstones and the
audit of an erasure need without the key: ids, versions, step numbers, attempts, statuses,
timings, token counts, the model's name, the tenant and the actor. Everything else — step
texts and expectations, the workflow's name, config and labels, the model's reasoning,
commands' names, arguments and output, summaries and evidence, errors (their messages may
quote what a page said), reasons and outcomes — is sealed. An `Erased` event is all clear.

A sealed stored state is MARK, the length of the clear part, the clear part (JSON), the nonce
and the AES-GCM ciphertext of the rest (JSON). The associated data binds the ciphertext to the
event's id (session and version), its topic and its clear part: moved to another event, or
with a clear field changed, it does not open.

Once a session's key is destroyed its sealed parts cannot be opened: its `Created` comes back
with placeholders (ERASED) and every other sealed event as a `Redacted` event holding the
clear fields only, so loading, the views' rebuild and the stream still work.
"""

from __future__ import annotations

import os
import struct
from typing import Any, cast
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic

from domain.session import ERASED, WorkflowSession
from engine.privacy.data_keys import DataKeys, Erased, InClear

MARK = b"\x01"
"""JSON starts with `{`: a state starting with this byte is sealed."""
_LENGTH = struct.Struct(">I")
_VERSION = struct.Struct(">q")
NONCE_BYTES = 12
SESSION_TOPICS = "domain.session:WorkflowSession"
SNAPSHOT_TOPIC = "eventsourcing.domain:Snapshot"

CLEAR_FIELDS = frozenset(
    {
        # the library's own: which aggregate, when, which version of the event class
        "originator_topic",
        "timestamp",
        "class_version",
        "topic",
        # who and where
        "tenant",
        "actor",
        "replay_of",
        "forked_from",
        "source_session_id",
        # the run's shape: steps, attempts, commands by id, outcomes as flags
        "step_index",
        "attempt",
        "turn",
        "command_id",
        "idempotency_key",
        "executor",
        "ok",
        "retryable",
        "strict",
        # counts and timings
        "duration_ms",
        "latency_ms",
        "prompt_tokens",
        "completion_tokens",
        "actions",
        "turns_saved",
        "tokens_saved",
        "model",
        # which learned action a step used, and whether it held (see projections.learned_actions)
        "action_id",
        "action_version",
        "hit",
    }
)
"""Fields kept in clear in every session event; all others are sealed."""

CLEAR_EVENTS = frozenset({get_topic(WorkflowSession.Erased)})
"""Events kept wholly in clear: the audit of an erasure must outlive the key."""

_CREATED_TOPIC = get_topic(WorkflowSession.Created)
_ERASED_CREATED = {
    "name": ERASED,
    "steps": [{"text": ERASED, "expect": None, "policy": {}}],
    "config": {},
    "labels": {},
}


class SealingMapper(Mapper[UUID]):
    """The library's mapper, sealing session events when given `keys` (else all clear)."""

    def __init__(self, transcoder: Transcoder, keys: DataKeys | None = None) -> None:
        super().__init__(transcoder)
        self.keys = keys

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        topic = get_topic(domain_event.__class__)
        if self.keys is None or not _sealable(topic, domain_event):
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        session_id: UUID = state.pop("originator_id")
        version: int = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        clear = {name: value for name, value in state.items() if name in CLEAR_FIELDS}
        secret = {name: value for name, value in state.items() if name not in CLEAR_FIELDS}
        key = None
        if topic not in CLEAR_EVENTS and secret:
            key = self._key_to_seal(topic, session_id, state)
        if key is None:
            stored = self.transcoder.encode(state)
        else:
            clear_bytes = self.transcoder.encode(clear)
            nonce = os.urandom(NONCE_BYTES)
            sealed = key.encrypt(
                nonce,
                self.transcoder.encode(secret),
                _bound_to(session_id, version, topic, clear_bytes),
            )
            stored = MARK + _LENGTH.pack(len(clear_bytes)) + clear_bytes + nonce + sealed
        return StoredEvent(
            originator_id=session_id, originator_version=version, topic=topic, state=stored
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        if not stored_event.state.startswith(MARK):
            event = super().to_domain_event(stored_event)
            if self.keys is not None and isinstance(event, WorkflowSession.Erased):
                self.keys.forget(event.originator_id)
            return event
        topic, state = self._opened(stored_event)
        return _event(topic, stored_event, state)

    def _key_to_seal(self, topic: str, session_id: UUID, state: dict[str, Any]) -> AESGCM | None:
        """The key to seal with; None: the session is stored in clear (it was made without a
        master key, or this is its creation and there is none)."""
        assert self.keys is not None
        if topic == _CREATED_TOPIC:
            if not self.keys.enabled():
                return None
            return self.keys.create(session_id, state["tenant"])
        key = self.keys.of(session_id)
        if isinstance(key, Erased):
            raise ValueError(f"session {session_id} is erased: nothing more is written to it")
        return None if isinstance(key, InClear) else key

    def _opened(self, stored: StoredEvent) -> tuple[str, dict[str, Any]]:
        """The event's topic and state: opened with the session's key, or what is left of
        them if the key was destroyed."""
        if self.keys is None:
            raise ValueError("a sealed event, read by a process built without data keys")
        session_id = cast(UUID, stored.originator_id)
        state = stored.state
        (length,) = _LENGTH.unpack_from(state, 1)
        clear_end = 1 + _LENGTH.size + length
        clear_bytes = state[1 + _LENGTH.size : clear_end]
        clear: dict[str, Any] = self.transcoder.decode(clear_bytes)
        key = self.keys.of(session_id)
        if isinstance(key, Erased):
            return _redacted(stored, clear)
        if isinstance(key, InClear):
            raise ValueError(f"a sealed event of session {session_id}, which has no data key")
        nonce = state[clear_end : clear_end + NONCE_BYTES]
        bound = _bound_to(session_id, stored.originator_version, stored.topic, clear_bytes)
        secret = self.transcoder.decode(key.decrypt(nonce, state[clear_end + NONCE_BYTES :], bound))
        return stored.topic, {**clear, **secret}


def _sealable(topic: str, event: object) -> bool:
    if topic.startswith(SESSION_TOPICS):
        return True
    return topic == SNAPSHOT_TOPIC and str(getattr(event, "topic", "")).startswith(SESSION_TOPICS)


def _bound_to(session_id: UUID, version: int, topic: str, clear: bytes) -> bytes:
    return (
        b"stepline.event.v1"
        + session_id.bytes
        + _VERSION.pack(version)
        + topic.encode()
        + b"\x00"
        + clear
    )


def _redacted(stored: StoredEvent, clear: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """What is left of a sealed event once its key is destroyed."""
    if stored.topic == _CREATED_TOPIC:
        return stored.topic, {**clear, **_ERASED_CREATED}
    if stored.topic == SNAPSHOT_TOPIC:
        raise ValueError(f"a snapshot of erased session {stored.originator_id} was kept")
    event_type = resolve_topic(stored.topic).__name__
    clear.pop("class_version", None)
    return get_topic(WorkflowSession.Redacted), {**clear, "event_type": event_type}


def _event(topic: str, stored: StoredEvent, state: dict[str, Any]) -> DomainEventProtocol[UUID]:
    """The domain event, made as the library's mapper makes it from a decoded state."""
    cls = resolve_topic(topic)
    state["originator_id"] = stored.originator_id
    state["originator_version"] = stored.originator_version
    class_version = getattr(cls, "class_version", 1)
    from_version = state.pop("class_version", 1)
    while from_version < class_version:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1
    domain_event = object.__new__(cls)
    object.__setattr__(domain_event, "__dict__", state)
    return cast(DomainEventProtocol[UUID], domain_event)
