from __future__ import annotations

import pytest

from engine.executors import Command
from engine.loop.builtin_steps import builtin
from engine.loop.definitions import DefinitionError


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


def test_each_built_in_example_is_a_step_its_definition_matches() -> None:
    for definition in builtin():
        assert definition.example is not None, definition.pattern.pattern
        assert definition.pattern.fullmatch(definition.example), definition.example


def test_a_misspelt_first_word_is_suggested_spelt_as_the_definition_has_it() -> None:
    near = builtin().near_miss("GTE /login")

    assert near is not None
    assert near.hint == 'did you mean "GET /login"?'
    assert near.written == "GET /login"


def test_an_unquoted_target_is_suggested_quoted() -> None:
    near = builtin().near_miss("click Sign in")

    assert near is not None
    assert near.hint == 'targets are quoted: click "Sign in"'


def test_every_unquoted_target_of_a_step_is_quoted() -> None:
    near = builtin().near_miss('fill Password with "{{secrets.PASSWORD}}')

    assert near is not None
    assert near.written == 'fill "Password" with "{{secrets.PASSWORD}}"'


def test_a_misspelt_step_with_an_unquoted_target_is_suggested_whole() -> None:
    near = builtin().near_miss("clik Sign in")

    assert near is not None
    assert near.written == 'click "Sign in"'
    assert near.hint == "did you mean 'click \"Sign in\"'?"


def test_a_step_that_starts_as_a_definition_is_shown_its_example() -> None:
    near = builtin().near_miss("expect status ok")

    assert near is not None
    assert near.written is None
    assert near.hint == 'the definition it starts like reads e.g. "expect status 200"'


def test_a_near_miss_of_a_users_definition_is_suggested_too() -> None:
    definitions = builtin()
    definitions.add(r"sign in as (?P<user>\w+)", lambda _: [])

    near = definitions.near_miss("sgin in as demo")

    assert near is not None
    assert near.written == "sign in as demo"


def test_a_step_in_plain_language_is_no_near_miss() -> None:
    assert builtin().near_miss("Sign in as the demo user") is None
    assert builtin().near_miss("Put the milk on the list") is None


def test_bad_json_says_how_a_body_is_written() -> None:
    with pytest.raises(DefinitionError) as raised:
        builtin().match("POST /x with {oops}")

    assert raised.value.suggested_action is not None
    assert 'POST /todos with {"title": "milk"}' in raised.value.suggested_action


def test_a_command_out_of_backticks_is_suggested_in_them() -> None:
    near = builtin().near_miss("run pytest -q")

    assert near is not None
    assert near.hint == "commands are in backticks: run `pytest -q`"


def test_a_step_spelt_as_one_definition_starts_is_not_respelt_as_another() -> None:
    near = builtin().near_miss("expect exit code zero")  # not `expect title contains "zero"`

    assert near is not None
    assert near.written is None
    assert near.hint == 'the definition it starts like reads e.g. "expect exit code 0"'
