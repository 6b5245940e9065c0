from __future__ import annotations

import pytest

from engine.definitions import DefinitionError, builtin
from engine.executors import Command


@pytest.mark.parametrize(
    ("step", "command"),
    [
        (
            "GET /login",
            Command("http", "request", {"method": "GET", "url": "/login", "body": None}),
        ),
        (
            'post /todos with {"title": "x"}',
            Command("http", "request", {"method": "POST", "url": "/todos", "body": {"title": "x"}}),
        ),
        ("expect status 201", Command("http", "expect_status", {"code": 201})),
        ("expect status 4XX", Command("http", "expect_status", {"code": "4xx"})),
        (
            'expect body contains "Sign in"',
            Command("http", "expect_body_contains", {"text": "Sign in"}),
        ),
        (
            "expect json items.0.id == 3",
            Command("http", "expect_json", {"path": "items.0.id", "value": 3}),
        ),
        (
            'expect json title == "x"',
            Command("http", "expect_json", {"path": "title", "value": "x"}),
        ),
        (
            "expect json name == plain",
            Command("http", "expect_json", {"path": "name", "value": "plain"}),
        ),
        (
            "save json token as auth",
            Command("http", "save_json", {"path": "token", "name": "auth"}),
        ),
        ("open /login", Command("browser", "navigate", {"url": "/login"})),
        ('click "Sign in"', Command("browser", "click", {"target": "Sign in"})),
        (
            'fill "Password" with "{{secrets.PASSWORD}}"',
            Command("browser", "fill", {"target": "Password", "value": "{{secrets.PASSWORD}}"}),
        ),
        ("press Enter", Command("browser", "press", {"key": "Enter"})),
        (
            'select "Red" in "Colour"',
            Command("browser", "select", {"target": "Colour", "option": "Red"}),
        ),
        (
            'expect page contains "Welcome"',
            Command("browser", "expect_page_contains", {"text": "Welcome"}),
        ),
        (
            'expect title contains "Todos"',
            Command("browser", "expect_title_contains", {"text": "Todos"}),
        ),
        (
            'expect url contains "/todos"',
            Command("browser", "expect_url_contains", {"text": "/todos"}),
        ),
        (
            'save text of "Total" as total',
            Command("browser", "save_text", {"target": "Total", "name": "total"}),
        ),
        ("take a screenshot", Command("browser", "screenshot", {})),
        ("go back", Command("browser", "back", {})),
        ("run `pytest -q`", Command("shell", "run", {"command": "pytest -q"})),
        ("expect exit code 0", Command("shell", "expect_exit_code", {"code": 0})),
        (
            'expect output contains "passed"',
            Command("shell", "expect_output_contains", {"text": "passed"}),
        ),
    ],
)
def test_built_in_definitions_map_steps_to_commands(step: str, command: Command) -> None:
    assert builtin().match(step) == [command]


def test_a_step_no_definition_matches_goes_elsewhere() -> None:
    assert builtin().match("Sign in as the demo user") is None
    assert builtin().match("GET") is None
    assert builtin().match("Open the login page") is None  # plain language: the model's


def test_bad_json_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="not valid JSON"):
        builtin().match("POST /x with {oops}")


def test_user_definitions_take_precedence() -> None:
    definitions = builtin()
    definitions.add(r"GET /login", lambda _: [Command("http", "request", {"special": True})])
    assert definitions.match("GET /login") == [Command("http", "request", {"special": True})]
