"""A session as a JUnit XML report: the shape CI systems read (GitHub Actions' test reporters,
GitLab's test reports, Jenkins' JUnit plugin). A `<testsuites>` root holds one `<testsuite>`
per session (its session id a property) and one `<testcase>` per step.

It is folded from the session's events as the run saw them. A step's time runs from its first
start to its end, every attempt and the back-off between them included. A step that failed is
a `<failure>` with its error's code and message; one still under way when its session failed,
expired or was cancelled takes the session's ending as its failure (the first step not done,
when none was under way). One under way when the run stopped with the session not ended
(interrupted, paused, waiting) is an `<error>`: it neither passed nor failed. Steps never
reached are `<skipped>`, and so are steps whose `if:` was false (the reason as the message).
A loop is a passing case once it came up, its iterations' steps the cases after it. The
counts and times of each element add up from the elements within.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from uuid import UUID
from xml.etree import ElementTree

from domain.payloads import ErrorPayload
from domain.session import ENDED, SessionStatus, status_after
from domain.session import WorkflowSession as W
from domain.waits import described

NOT_REACHED = "not reached"
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold, even escaped (control characters in a command's output)."""


class Verdict(Enum):
    PASSED = "passed"
    FAILED = "failure"
    UNFINISHED = "error"
    NOT_REACHED = "skipped"
    CONDITION_FALSE = "condition-false"
    """Its `if:` was false: a `<skipped>` too, saying so."""


@dataclass(frozen=True)
class Problem:
    """What a failure or an error element says: `type` and `message`, and what to do."""

    code: str
    message: str
    advice: str = ""


INTERRUPTED = Problem(
    "INTERRUPTED",
    "the run stopped before the step ended: the session was handed back",
    "A worker (stepline serve or stepline worker) carries on with the session",
)


@dataclass
class StepCase:
    text: str
    verdict: Verdict = Verdict.NOT_REACHED
    started_at: datetime | None = None
    ended_at: datetime | None = None
    problem: Problem | None = None

    @property
    def time_ms(self) -> int:
        if self.started_at is None or self.ended_at is None:
            return 0
        return max(0, round((self.ended_at - self.started_at).total_seconds() * 1000))


@dataclass
class SessionCases:
    """A session's steps as test cases, and how far the session got."""

    session_id: UUID
    name: str
    created_at: datetime
    last_at: datetime
    """When the last event the run saw happened."""
    steps: list[StepCase]
    status: SessionStatus = SessionStatus.PENDING
    ending: Problem | None = None
    """Why the session stopped short: its error, its cancellation, its pause or wait."""

    def count(self, verdict: Verdict) -> int:
        return sum(1 for step in self.steps if step.verdict is verdict)

    @property
    def time_ms(self) -> int:
        return sum(step.time_ms for step in self.steps)


def session_cases(events: Sequence[W.Event]) -> SessionCases:
    """The session's steps as test cases, from its events (the first is its `Created`)."""
    created = events[0]
    assert isinstance(created, W.Created), "a session's history starts with Created"
    cases = SessionCases(
        session_id=created.originator_id,
        name=created.name,
        created_at=created.timestamp,
        last_at=created.timestamp,
        steps=[StepCase(step["text"]) for step in created.steps],
    )
    started = False
    for event in events[1:]:
        started = started or isinstance(event, W.StepStarted)
        cases.status = status_after(event, cases.status, started)
        cases.last_at = event.timestamp
        _evolve(cases, event)
    _close(cases)
    return cases


def _evolve(cases: SessionCases, event: W.Event) -> None:
    at = event.timestamp
    match event:
        case W.StepStarted(step_index=index):
            started = cases.steps[index]
            started.verdict, started.ended_at, started.problem = Verdict.UNFINISHED, None, None
            started.started_at = started.started_at or at
        case W.StepCompleted(step_index=index):
            _passed(cases.steps[index], started_at=cases.steps[index].started_at, at=at)
        case W.StepFailed(step_index=index, error=error):
            failed = cases.steps[index]
            failed.verdict, failed.ended_at, failed.problem = Verdict.FAILED, at, _problem(error)
        case W.Failed(error=error) | W.Expired(error=error):
            cases.ending = _problem(error)
        case W.Cancelled(reason=reason, actor=actor):
            cases.ending = Problem("CANCELLED", f"cancelled by {actor}: {reason or 'no reason'}")
        case W.Paused(reason=reason, actor=actor):
            cases.ending = Problem("PAUSED", f"paused by {actor}: {reason or 'no reason'}")
        case W.WaitStarted(kind=kind, question=question, signal=signal):
            cases.ending = Problem("WAITING", f"waiting for {described(kind, question, signal)}")
        case W.Resumed() | W.WaitEnded():
            cases.ending = None
        case _:
            _passed_over(cases, event, at)


def _passed_over(cases: SessionCases, event: W.Event, at: datetime) -> None:
    """Steps done without running in this session: a fork's first ones, done in its source;
    one whose `if:` was false; a loop, which made its iterations' steps."""
    match event:
        case W.StepsCarriedOver(steps=carried):
            for done in carried:
                if done.get("skipped"):
                    _skipped(cases.steps[done["step_index"]], done["summary"], at)
                else:
                    _passed(cases.steps[done["step_index"]], started_at=at, at=at)
        case W.StepSkipped(step_index=index, reason=reason):
            _skipped(cases.steps[index], reason, at)
        case W.LoopExpanded(step_index=index, steps=steps):
            _passed(cases.steps[index], started_at=cases.steps[index].started_at, at=at)
            cases.steps[index + 1 : index + 1] = [StepCase(step["text"]) for step in steps]


def _skipped(step: StepCase, reason: str, at: datetime) -> None:
    step.verdict, step.problem = Verdict.CONDITION_FALSE, Problem("SKIPPED", reason, "")
    step.started_at = step.ended_at = at


def _passed(step: StepCase, started_at: datetime | None, at: datetime) -> None:
    step.verdict, step.problem = Verdict.PASSED, None
    step.started_at, step.ended_at = started_at, at


def _problem(error: ErrorPayload) -> Problem:
    return Problem(error["code"], error["message"], error["suggested_action"])


def _close(cases: SessionCases) -> None:
    """The step the session stopped at, if it stopped short: failed by the session's ending,
    or unfinished when the session did not end (the run stopped; the session paused, waits)."""
    if cases.status is SessionStatus.COMPLETED or cases.count(Verdict.FAILED):
        return
    stopped_at = next(
        (s for s in cases.steps if s.verdict not in (Verdict.PASSED, Verdict.CONDITION_FALSE)), None
    )
    if stopped_at is None:
        return
    if stopped_at.started_at is not None:
        stopped_at.ended_at = cases.last_at
    if cases.status in ENDED:
        stopped_at.verdict = Verdict.FAILED
        stopped_at.problem = cases.ending or Problem(cases.status.name, cases.status.value)
    else:
        stopped_at.verdict = Verdict.UNFINISHED
        stopped_at.problem = cases.ending or INTERRUPTED


# ---- the XML ----------------------------------------------------------------------------


def junit_xml(cases: SessionCases) -> ElementTree.Element:
    """The report's root: <testsuites>, holding the session's <testsuite>."""
    root = ElementTree.Element("testsuites", _totals(cases, with_skipped=False))
    root.append(_testsuite(cases))
    ElementTree.indent(root)
    return root


def write_junit(path: Path, events: Sequence[W.Event]) -> None:
    """Write the session's report to `path`: UTF-8, with the XML declaration."""
    body = ElementTree.tostring(junit_xml(session_cases(events)), encoding="unicode")
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n', encoding="utf-8")


def _totals(cases: SessionCases, with_skipped: bool) -> dict[str, str]:
    totals = {
        "name": _text(cases.name),
        "tests": str(len(cases.steps)),
        "failures": str(cases.count(Verdict.FAILED)),
        "errors": str(cases.count(Verdict.UNFINISHED)),
    }
    if with_skipped:  # the suites' root has no such attribute in the schemas CI tools follow
        skipped = cases.count(Verdict.NOT_REACHED) + cases.count(Verdict.CONDITION_FALSE)
        totals["skipped"] = str(skipped)
    totals["time"] = _seconds(cases.time_ms)
    return totals


def _testsuite(cases: SessionCases) -> ElementTree.Element:
    suite = ElementTree.Element(
        "testsuite",
        {
            **_totals(cases, with_skipped=True),
            # Ant's shape: UTC, with no offset (some readers take no other).
            "timestamp": cases.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    properties = ElementTree.SubElement(suite, "properties")
    for name, value in (("session_id", str(cases.session_id)), ("status", cases.status.value)):
        ElementTree.SubElement(properties, "property", {"name": name, "value": value})
    for step in cases.steps:
        suite.append(_testcase(step, cases.name))
    return suite


def _testcase(step: StepCase, workflow: str) -> ElementTree.Element:
    case = ElementTree.Element(
        "testcase",
        {"name": _text(step.text), "classname": _text(workflow), "time": _seconds(step.time_ms)},
    )
    if step.verdict is Verdict.NOT_REACHED:
        ElementTree.SubElement(case, "skipped", {"message": NOT_REACHED})
    elif step.verdict is Verdict.CONDITION_FALSE and step.problem is not None:
        ElementTree.SubElement(case, "skipped", {"message": _text(step.problem.message)})
    elif step.verdict is not Verdict.PASSED and step.problem is not None:
        problem = step.problem
        element = ElementTree.SubElement(
            case, step.verdict.value, {"message": _text(problem.message), "type": problem.code}
        )
        element.text = _text("\n".join(filter(None, [problem.message, problem.advice])))
    return case


def _seconds(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _text(text: str) -> str:
    return NOT_XML.sub("\ufffd", text)
