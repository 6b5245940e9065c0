"""Vision: with `config.vision` (or STEPLINE_AI_VISION) an AI step on the browser shows the
model the page's screenshot with each turn, as an OpenAI-compatible image part; the image is
an artifact the turn refers to, never inlined in the log."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from psycopg_pool import ConnectionPool

from domain.session import SessionStatus, WorkflowSession, stored_artifacts
from engine.executors.artifacts import artifacts_of
from engine.privacy.erasure import Erasure
from engine.store.app import Stepline
from tests.conftest import PASSWORD
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.scripted_model import ScriptedModel

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = ["open /app/login", "Check that the sign-in form is shown"]


def script_a_look(model: ScriptedModel) -> None:
    model.calls("browser_read_page", reasoning="look at the page")
    model.calls("complete_step", summary="the form is shown", evidence=["a Sign in button"])


def images_sent(model: ScriptedModel, request: int) -> list[str]:
    """The data URLs of the image parts in one request's messages."""
    return [
        part["image_url"]["url"]
        for message in model.requests[request]["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def png_chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Each chunk's type and data, as a minimal PNG reader walks them."""
    chunks, at = [], len(PNG_SIGNATURE)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        chunks.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def turns(app: Stepline, session_id: UUID) -> list[WorkflowSession.TurnRecorded]:
    return [e for e in app.history(session_id) if isinstance(e, WorkflowSession.TurnRecorded)]


def test_with_vision_each_turn_shows_the_model_a_png_of_the_page_stored_as_an_artifact(
    make_loop: LoopFactory, target: str, model: ScriptedModel, tmp_path: Path
) -> None:
    script_a_look(model)
    loop = make_loop()
    session_id = start_session(loop, STEPS, target, executor="browser", vision=True)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert [len(images_sent(model, request)) for request in range(2)] == [1, 1]
    header, encoded = images_sent(model, 0)[0].split(",", 1)
    png = base64.b64decode(encoded)
    assert header == "data:image/png;base64"
    assert png.startswith(PNG_SIGNATURE)
    chunks = png_chunks(png)
    assert chunks[0][0] == b"IHDR"
    assert struct.unpack(">II", chunks[0][1][:8]) == (1280, 720)  # the viewport, no more
    pixels = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    assert len(set(pixels)) > 10  # the page drawn, not a blank image
    assert chunks[-1][0] == b"IEND"

    recorded = turns(loop.app, session_id)
    (artifact,) = recorded[0].artifacts
    assert (artifact["kind"], artifact["media_type"]) == ("model_view", "image/png")
    assert artifact["hash"] == hashlib.sha256(png).hexdigest()
    assert stored_artifacts(recorded[0]) == [artifact]  # served and erased like screenshots
    stored = artifacts_of(Path(loop.settings.data_dir), session_id).path(artifact["hash"])
    assert stored is not None
    assert stored.read_bytes() == png
    log = json.dumps([vars(e) for e in loop.app.history(session_id)], default=str)
    assert encoded[:200] not in log


def test_without_vision_no_image_is_sent_and_no_turn_refers_to_one(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    script_a_look(model)
    loop = make_loop()
    session_id = start_session(loop, STEPS, target, executor="browser")

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert [images_sent(model, request) for request in range(2)] == [[], []]
    assert [turn.artifacts for turn in turns(loop.app, session_id)] == [[], []]


def test_the_setting_turns_vision_on_and_a_workflow_may_turn_it_off(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    loop = make_loop(ai_vision=True)
    outcomes: list[Any] = []
    for config in ({}, {"vision": False}):
        model.calls("complete_step", summary="the form is shown", evidence=["a Sign in button"])
        session_id = start_session(loop, STEPS, target, executor="browser", **config)
        outcomes.append(drive(loop, session_id).status)

    assert outcomes == [SessionStatus.COMPLETED] * 2
    assert [len(images_sent(model, request)) for request in range(2)] == [1, 0]


def test_an_executor_with_nothing_to_show_sends_no_image(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    model.calls("complete_step", summary="nothing to do", evidence=["none"])
    loop = make_loop()
    session_id = start_session(loop, ["Say hello"], target, executor="http", vision=True)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert images_sent(model, 0) == []


def test_in_the_messages_shape_the_image_follows_the_last_tool_result(
    make_loop: LoopFactory, target: str, model: ScriptedModel
) -> None:
    script_a_look(model)
    loop = make_loop(ai_conversation="messages")
    session_id = start_session(loop, STEPS, target, executor="browser", vision=True)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    roles = [message["role"] for message in model.requests[1]["messages"]]
    assert roles[-3:] == ["assistant", "tool", "user"]
    assert len(images_sent(model, 1)) == 1


def files_under(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def test_a_screenshot_shown_to_a_model_call_that_failed_is_not_left_behind_by_erasure(
    make_loop: LoopFactory,
    target: str,
    model: ScriptedModel,
    tmp_path: Path,
    database_url: str,
) -> None:
    model.fails(400, "this model does not take images")
    loop = make_loop()
    session_id = start_session(loop, STEPS, target, executor="browser", vision=True)

    assert drive(loop, session_id).status is SessionStatus.FAILED
    assert len(images_sent(model, 0)) == 1  # the screenshot was taken and sent
    with ConnectionPool(database_url, kwargs={"autocommit": True}) as pool:
        Erasure(loop.app, pool, tmp_path).erase(session_id, "GDPR request 17", "dpo@acme")

    assert files_under(tmp_path / "artifacts") == []


def test_no_screenshot_is_sent_while_the_page_shows_a_secret_and_the_model_is_told_why(
    make_loop: LoopFactory, target: str, model: ScriptedModel, tmp_path: Path
) -> None:
    with httpx.Client(base_url=target) as client:  # a todo whose title is the password
        client.post("/login", json={"user": "demo", "password": PASSWORD}).raise_for_status()
        client.post("/todos", json={"title": PASSWORD}).raise_for_status()
    model.calls("complete_step", summary="the list is shown", evidence=["a todo"])
    loop = make_loop()
    steps = [
        "open /app/login",
        'fill "User" with "demo"',
        'fill "Password" with "{{secrets.DEMO_PASSWORD}}"',
        'click "Sign in"',
        "Check that the todo list is shown",
    ]
    session_id = start_session(loop, steps, target, executor="browser", vision=True)

    assert drive(loop, session_id).status is SessionStatus.COMPLETED
    assert images_sent(model, 0) == []
    assert "No screenshot this turn: the page shows a secret" in model.prompt(0)
    (turn,) = turns(loop.app, session_id)
    assert "[SCREENSHOT_WITHHELD]" in turn.reasoning
    assert turn.artifacts == []
    assert files_under(tmp_path / "artifacts") == []
