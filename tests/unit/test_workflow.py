"""The Workflow aggregate: versions pushed only when the document changes, content-addressed,
rolled back by an event, named so a reference can name them."""

from __future__ import annotations

import pytest

from domain.errors import InvalidWorkflow, WorkflowNotFound
from domain.workflow import Reference, Workflow, content_address

DOCUMENT = {"name": "smoke", "steps": ["GET /"]}


def workflow() -> Workflow:
    made = Workflow.create(tenant="acme", name="smoke", actor="alice")
    made.push(DOCUMENT, "alice")
    return made


def test_the_same_document_pushed_again_records_nothing_whatever_its_key_order() -> None:
    made = workflow()
    events = len(made.collect_events())

    again = made.push({"steps": ["GET /"], "name": "smoke"}, "bob")

    assert (events, made.collect_events()) == (2, [])
    assert (again.number, again.actor, again.sha256) == (1, "alice", content_address(DOCUMENT))


def test_a_changed_document_is_the_next_version_and_an_earlier_one_can_be_current_again() -> None:
    made = workflow()
    second = made.push({**DOCUMENT, "steps": ["GET /", "expect status 200"]}, "bob")
    made.roll_back(1, "carol")
    made.roll_back(1, "carol")

    events = made.collect_events()
    assert [type(e).__name__ for e in events] == ["Created", "Pushed", "Pushed", "RolledBack"]
    assert (second.number, made.current, len(made.versions)) == (2, 1, 2)
    assert made.version_numbered().sha256 == content_address(DOCUMENT)


def test_a_version_it_does_not_have_is_refused_naming_what_it_has() -> None:
    made = workflow()

    with pytest.raises(InvalidWorkflow, match=r"has no version 2 to roll back to \(it has 1"):
        made.roll_back(2, "bob")
    with pytest.raises(WorkflowNotFound, match="has no version 3"):
        made.version_numbered(3)


@pytest.mark.parametrize(
    "document",
    [{"name": "other", "steps": ["GET /"]}, {"name": "smoke", "steps": ["GET /\x00"]}],
)
def test_a_document_of_another_name_or_holding_nul_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(InvalidWorkflow):
        workflow().push(document, "bob")


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("smoke", Reference("smoke")),
        ("smoke test@12", Reference("smoke test", 12)),
        ("smoke@0", None),
        ("smoke@", None),
        ("a/b", None),
        ("smoke\n", None),
        (" smoke", None),
    ],
)
def test_a_reference_names_a_workflow_and_perhaps_its_version(
    text: str, reference: Reference | None
) -> None:
    assert Reference.parse(text) == reference


def test_the_same_name_in_two_tenants_is_two_workflows() -> None:
    assert Workflow.create_id("acme", "smoke") != Workflow.create_id("globex", "smoke")
    assert Workflow.create_id("acme", "smoke") == Workflow.create_id("acme", "smoke")
