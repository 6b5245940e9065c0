"""A session as one self-contained HTML file — its header, its steps with their screenshots
beside them, its audit trail — to attach to a ticket or a CI run.

Self-contained: the styles are in the page, the screenshots are data: URIs and there is no
script at all, so the file reads the same offline, from a mail or years later, and its own
Content-Security-Policy (a <meta> element, beside the header the API sends) lets nothing run or
load even if a text got past the escaping. Everything a tenant wrote is escaped (autoescape).
No web framework here: `stepline sessions report` renders it from the database too.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from jinja2 import Environment, FileSystemLoader

from api.http.schemas import SessionView, StepView
from domain.payloads import ArtifactRef
from domain.session import WorkflowSession as W
from domain.session import stored_artifacts
from domain.step_policy import StepPolicy
from engine.bootstrap import Runtime
from engine.executors.artifacts import Artifacts, artifacts_of
from projections.audit_log import describe

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
MAX_SHOT_BYTES = 5_000_000
"""A screenshot larger than this is named in the report, not inlined."""
MAX_SHOTS_BYTES = 40_000_000
"""All the screenshots of one report together (base64 makes them a third larger)."""
MAX_TRAIL = 10_000
"""Audit entries shown; a longer trail is cut, saying so (the API pages through all of it)."""
INLINED_TYPES = frozenset({"image/png", "image/jpeg"})

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "ui_files" / "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


def report_filename(session_id: UUID) -> str:
    """What a downloaded or written report is called: `stepline-<first 8 of the id>.html`."""
    return f"stepline-{str(session_id)[:8]}.html"


@dataclass(frozen=True)
class Shot:
    """A screenshot beside its step: inlined as a data: URI (`src`), or why it is not."""

    alt: str
    src: str | None
    left_out: str | None = None


@dataclass(frozen=True)
class TrailEntry:
    version: int
    at: datetime
    actor: str
    description: str


@dataclass
class FromTheLog:
    """What the report takes from the session's events rather than from the views."""

    created: W.Created | None = None
    outcome: str | None = None
    erased: W.Erased | None = None
    erased_at: datetime | None = None
    shots: dict[int, list[Shot]] = field(default_factory=dict)
    trail: list[TrailEntry] = field(default_factory=list)
    events: int = 0


class Budget:
    """The bytes of screenshots the report may still take."""

    def __init__(self, limit: int) -> None:
        self.left = limit


def report(runtime: Runtime, session: SessionView, steps: list[StepView]) -> str:
    """The report of `session` (already checked to be the caller's) and its `steps`."""
    artifacts = artifacts_of(Path(runtime.settings.data_dir), session.session_id)
    logged = read_log(runtime.app.history(session.session_id), artifacts)
    return render(session, steps, logged)


def render(session: SessionView, steps: list[StepView], logged: FromTheLog) -> str:
    return _templates.get_template("report.html").render(
        session=session,
        steps=[(step, _step_notes(step), logged.shots.get(step.step_index, [])) for step in steps],
        header=_header(session, logged),
        logged=logged,
        left_out=sum(1 for shots in logged.shots.values() for s in shots if s.src is None),
        csp=CONTENT_SECURITY_POLICY,
        generated_at=datetime.now(UTC),
        when=_when,
        took=_took,
        max_trail=MAX_TRAIL,
    )


# ---- the log ------------------------------------------------------------------------------


def read_log(history: Iterable[W.Event], artifacts: Artifacts) -> FromTheLog:
    """One pass over the events: the creation, the outcome, the erasure, each step's
    screenshots (inlined within the budget) and the audit trail."""
    logged = FromTheLog()
    attempts: dict[int, int] = {}
    issued: dict[str, str] = {}
    budget = Budget(MAX_SHOTS_BYTES)
    for event in history:
        logged.events += 1
        if len(logged.trail) < MAX_TRAIL:
            logged.trail.append(_trail_entry(event))
        _note(logged, event, attempts, issued)
        for ref in stored_artifacts(event):
            index = getattr(event, "step_index", -1)
            alt = _alt(event, index, attempts.get(index, 1), issued, ref)
            logged.shots.setdefault(index, []).append(inlined(ref, alt, artifacts, budget))
    return logged


def _note(
    logged: FromTheLog, event: W.Event, attempts: dict[int, int], issued: dict[str, str]
) -> None:
    """What the report keeps of `event` besides its audit entry and its screenshots; the
    attempt each step is at and each command's name, to label the screenshots."""
    match event:
        case W.Created():
            logged.created = event
        case W.Completed(outcome=outcome) | W.Failed(outcome=outcome) | W.Expired(outcome=outcome):
            logged.outcome = outcome
        case W.Erased():
            logged.erased, logged.erased_at = event, event.timestamp
        case W.StepStarted(step_index=index, attempt=attempt):
            attempts[index] = attempt
        case W.CommandIssued(command_id=command_id, executor=executor, name=name):
            issued[command_id] = f"{executor}.{name}"


def _trail_entry(event: W.Event) -> TrailEntry:
    """As the audit log files it (`projections.audit_log`): who, when, a sentence."""
    actor = getattr(event, "actor", "") or ""
    return TrailEntry(event.originator_version, event.timestamp, actor, describe(event))


def _alt(event: W.Event, index: int, attempt: int, issued: dict[str, str], ref: ArtifactRef) -> str:
    if isinstance(event, W.Checked):
        what = f"{event.executor}.{event.name}"
    else:
        command_id = getattr(event, "command_id", "")
        what = issued.get(command_id, command_id)
    kind = ref.get("kind", "screenshot").replace("_", " ")
    return f"Screenshot of step {index}, attempt {attempt}: {what} ({kind})"


def inlined(ref: ArtifactRef, alt: str, artifacts: Artifacts, budget: Budget) -> Shot:
    """The screenshot as a data: URI, if it is an image, its file is here and it fits."""
    media_type = ref.get("media_type", "")
    if media_type not in INLINED_TYPES:
        return Shot(alt, None, f"not inlined: a {media_type or 'file'} is not an image")
    path = artifacts.path(ref.get("hash", ""))
    if path is None:
        return Shot(alt, None, "not inlined: its file is not on this server")
    size = path.stat().st_size
    if size > MAX_SHOT_BYTES:
        return Shot(alt, None, f"left out: {size:,} bytes, over {MAX_SHOT_BYTES:,} per screenshot")
    if size > budget.left:
        return Shot(alt, None, f"left out: the report holds {MAX_SHOTS_BYTES:,} bytes of images")
    budget.left -= size
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return Shot(alt, f"data:{media_type};base64,{encoded}")


# ---- what the template shows --------------------------------------------------------------


def _header(session: SessionView, logged: FromTheLog) -> dict[str, Any]:
    created = logged.created
    config = created.config if created else {}
    return {
        "labels": created.labels if created else {},
        "workflow": _workflow(config.get("workflow")),
        "origin": _origin(created),
        "outcome": logged.outcome,
        "duration_ms": _duration_ms(session.started_at, session.finished_at),
    }


def _workflow(recorded: Any) -> str | None:
    """The registered workflow's version the session runs, if it runs one."""
    if not isinstance(recorded, dict):
        return None
    digest = str(recorded.get("sha256", ""))[:12]
    return f"{recorded.get('name')} version {recorded.get('version')} ({digest})"


def _origin(created: W.Created | None) -> str | None:
    if created is None:
        return None
    if created.replay_of is not None:
        strict = ", strict" if created.replay_of.get("strict") else ""
        return f"a replay of {created.replay_of['session_id']}{strict}"
    if created.forked_from is not None:
        fork = created.forked_from
        return f"a fork of {fork['session_id']} from step {fork['step']}"
    return None


def _step_notes(step: StepView) -> list[str]:
    """Beside the step's text: its own policy, its `if`, the loop iteration it came from."""
    notes = []
    policy = StepPolicy.from_dict(step.policy).described()
    if policy:
        notes.append(policy)
    if step.condition:
        notes.append(f"if {step.condition}")
    origin = step.origin or {}
    if origin.get("loop"):
        notes.append(f"{origin['loop']}: {origin.get('iteration', 0) + 1} of {origin.get('of')}")
    return notes


def _duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return round((finished - started).total_seconds() * 1000)


def _when(at: datetime | None) -> str:
    """In UTC: a report is read anywhere."""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


def _took(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
