"""The built-in step definitions.

For HTTP: `GET /path`, `POST /path with {"json": true}` (also PUT, PATCH, DELETE),
`expect status 200` (or a class: `expect status 4xx`), `expect body contains "text"`,
`expect json items.0.id == 3`, `save json token as auth`; for the shell: ``run `pytest -q` ``,
`expect exit code 0`, `expect output contains "passed"`; for the browser: `open /login`,
`click "Sign in"`, `fill "Password" with "{{secrets.PASSWORD}}"`, `press Enter`,
`select "Red" in "Colour"`, `expect page contains "Welcome"`, `expect title contains "Todos"`,
`expect url contains "/todos"`, `save text of "Total" as total`, `take a screenshot`, `go back`;
for an MCP server's tools: `call add with {"a": 1, "b": 2}`, `call todo_list`,
`expect result contains "milk"`;
to wait (engine/loop/waits.py): `wait for approval: <question>`, `wait 10 minutes`,
`wait until 2026-12-01T09:00Z`, `wait for signal "payment.received" within 1h`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.executors import Command
from engine.loop.definitions import Build, DefinitionError, Definitions
from engine.loop.waits import add_waits


def _json_literal(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DefinitionError(
            f"{text!r} is not valid JSON: {error.msg}",
            "Write the body as JSON: keys and strings in double quotes, e.g. POST /todos with "
            '{"title": "milk"}',
        ) from None


def _value(text: str) -> Any:
    """`3`, `true`, `"x"` and `null` are JSON; anything else is taken as a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _request(match: re.Match[str]) -> list[Command]:
    body = _json_literal(match["body"]) if match["body"] else None
    args = {"method": match["method"].upper(), "url": match["url"], "body": body}
    return [Command("http", "request", args)]


def _expect_status(match: re.Match[str]) -> list[Command]:
    """`expect status 404`, or a class of statuses: `expect status 4xx`."""
    code = match["code"].lower()
    return [Command("http", "expect_status", {"code": code if code.endswith("xx") else int(code)})]


def _call(match: re.Match[str]) -> list[Command]:
    """`call <tool> with {...}`: one call of the MCP server's tool, its arguments an object."""
    arguments = _json_literal(match["arguments"]) if match["arguments"] else {}
    if not isinstance(arguments, dict):
        raise DefinitionError(
            f"the arguments of {match['tool']} must be a JSON object, not {match['arguments']}",
            'Write them as an object of the tool\'s parameters: call add with {"a": 1, "b": 2}',
        )
    return [Command("mcp", match["tool"], arguments)]


def builtin() -> Definitions:
    definitions = Definitions()
    add = definitions.add
    add(
        r"(?P<method>GET|POST|PUT|PATCH|DELETE) (?P<url>\S+)(?: with (?P<body>.+))?",
        _request,
        'POST /todos with {"title": "milk"}',
    )
    add(r"expect status (?P<code>\d{3}|[1-5]xx)", _expect_status, "expect status 200")
    add(
        r'expect body contains "(?P<text>.*)"',
        lambda m: [Command("http", "expect_body_contains", {"text": m["text"]})],
        'expect body contains "Welcome"',
    )
    add(
        r"expect json (?P<path>\S+) == (?P<value>.+)",
        lambda m: [
            Command("http", "expect_json", {"path": m["path"], "value": _value(m["value"])})
        ],
        "expect json items.0.id == 3",
    )
    add(
        r"save json (?P<path>\S+) as (?P<name>[A-Za-z0-9_]+)",
        lambda m: [Command("http", "save_json", {"path": m["path"], "name": m["name"]})],
        "save json id as todo_id",
    )
    add(
        r"run `(?P<command>[^`]+)`",
        lambda m: [Command("shell", "run", {"command": m["command"]})],
        "run `pytest -q`",
    )
    add(
        r"expect exit code (?P<code>-?\d+)",
        lambda m: [Command("shell", "expect_exit_code", {"code": int(m["code"])})],
        "expect exit code 0",
    )
    add(
        r'expect output contains "(?P<text>.*)"',
        lambda m: [Command("shell", "expect_output_contains", {"text": m["text"]})],
        'expect output contains "passed"',
    )
    add(
        r"call (?P<tool>[A-Za-z0-9_.:/-]+)(?: with (?P<arguments>.+))?",
        _call,
        'call add with {"a": 1, "b": 2}',
    )
    add(
        r'expect result contains "(?P<text>.*)"',
        lambda m: [Command("mcp", "expect_result_contains", {"text": m["text"]})],
        'expect result contains "milk"',
    )
    _add_browser(definitions)
    add_waits(definitions)
    return definitions


def _browser(command: str, **args: str) -> Build:
    """A definition for one browser command whose arguments are the pattern's groups."""
    return lambda match: [
        Command("browser", command, {key: match[group] for key, group in args.items()})
    ]


def _add_browser(definitions: Definitions) -> None:
    add = definitions.add
    add(r"open (?P<url>\S+)", _browser("navigate", url="url"), "open /login")
    add(r'click "(?P<target>.+)"', _browser("click", target="target"), 'click "Sign in"')
    add(
        r'fill "(?P<target>.+?)" with "(?P<value>.*)"',
        _browser("fill", target="target", value="value"),
        'fill "User" with "demo"',
    )
    add(r"press (?P<key>\S+)", _browser("press", key="key"), "press Enter")
    add(
        r'select "(?P<option>.+?)" in "(?P<target>.+)"',
        _browser("select", target="target", option="option"),
        'select "Red" in "Colour"',
    )
    for what, text in (("page", "Welcome"), ("title", "Todos"), ("url", "/todos")):
        add(
            rf'expect {what} contains "(?P<text>.*)"',
            _browser(f"expect_{what}_contains", text="text"),
            f'expect {what} contains "{text}"',
        )
    add(
        r'save text of "(?P<target>.+?)" as (?P<label>[A-Za-z0-9_]+)',
        _browser("save_text", target="target", name="label"),
        'save text of "Total" as total',
    )
    add(r"take a screenshot", _browser("screenshot"), "take a screenshot")
    add(r"go back", _browser("back"), "go back")
