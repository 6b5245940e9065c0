from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest

from engine.ai.prompt import within_budget
from engine.secrets import (
    NO_ORIGIN,
    SHELL,
    RedactingFilter,
    Secret,
    SecretNotFound,
    SecretOriginRefused,
    Secrets,
    SecretsInUse,
    normalized_origin,
    origin_of,
)

API = "https://api.example.com"
VALUE = "hunter2-Secret/+é?"


def test_placeholders_resolve_from_stepline_secret_variables() -> None:
    secrets = Secrets.from_environment({"STEPLINE_SECRET_API_TOKEN": "tok-abc", "OTHER": "x"})
    assert secrets.names == ["API_TOKEN"]
    assert secrets.resolve("Bearer {{ secrets.API_TOKEN }}", API) == "Bearer tok-abc"


def test_a_missing_secret_says_how_to_store_it() -> None:
    with pytest.raises(SecretNotFound, match="stepline secrets set NOPE") as raised:
        Secrets({}).resolve("{{secrets.NOPE}}", API)
    assert raised.value.code == "SECRET_NOT_FOUND"
    assert "STEPLINE_SECRET_NOPE" in raised.value.message


def test_values_are_redacted_to_their_placeholders_everywhere() -> None:
    secrets = Secrets({"A": "hunter2-long", "B": "hunter2-long-and-longer"})
    data = {"x": ["pw=hunter2-long-and-longer", {"y": "hunter2-long"}], "n": 3}
    assert secrets.redact_all(data) == {
        "x": ["pw={{secrets.B}}", {"y": "{{secrets.A}}"}],
        "n": 3,
    }


def test_very_short_values_are_not_redacted_from_ordinary_text() -> None:
    assert Secrets({"PIN": "42"}).redact("answer 42") == "answer 42"


ENCODINGS = {
    "url-encoded": quote(VALUE, safe=""),
    "url-encoded, / kept": quote(VALUE),
    "form-encoded": quote_plus(VALUE),
    "base64": base64.b64encode(VALUE.encode()).decode(),
    "base64 unpadded": base64.b64encode(VALUE.encode()).decode().rstrip("="),
    "url-safe base64": base64.urlsafe_b64encode(VALUE.encode()).decode(),
    "url-safe base64 unpadded": base64.urlsafe_b64encode(VALUE.encode()).decode().rstrip("="),
    "hex": VALUE.encode().hex(),
    "HEX": VALUE.encode().hex().upper(),
    "reversed": VALUE[::-1],
    "JSON-escaped": json.dumps(VALUE)[1:-1],
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_common_encoding_of_a_value_is_redacted(encoding: str) -> None:
    encoded = ENCODINGS[encoding]
    assert encoded != VALUE
    text = f"the server said <{encoded}> back"
    assert Secrets({"PW": VALUE}).redact(text) == "the server said <{{secrets.PW}}> back"


def test_a_value_in_another_letter_case_is_redacted_and_refused_too() -> None:
    secrets = Secrets(bound=[Secret("PW", VALUE, (API,))])
    assert secrets.redact(f"<{VALUE.upper()}>") == "<{{secrets.PW}}>"
    with pytest.raises(SecretOriginRefused):  # e.g. a host name, which browsers lower-case
        secrets.filled(f"https://{VALUE.lower()}.evil.example/", "https://evil.example")


def test_a_bound_secret_fills_in_only_for_its_origins() -> None:
    secrets = Secrets(bound=[Secret("TOKEN", "tok-1234", (API,))])
    assert secrets.resolve("Bearer {{secrets.TOKEN}}", API) == "Bearer tok-1234"
    with pytest.raises(SecretOriginRefused, match=re.escape("not to http://127.0.0.1:9")) as raised:
        secrets.resolve("Bearer {{secrets.TOKEN}}", "http://127.0.0.1:9")
    assert raised.value.details["allowed_origins"] == [API]


def test_a_value_that_reached_a_request_through_a_variable_is_refused_there() -> None:
    secrets = Secrets(bound=[Secret("TOKEN", "tok-1234", (API,))])
    laundered = {"url": "https://evil.example/?t=" + base64.b64encode(b"tok-1234").decode()}
    with pytest.raises(SecretOriginRefused):
        secrets.filled(laundered, "https://evil.example")
    assert secrets.filled(laundered, API) == laundered


def test_environment_secrets_go_anywhere_but_a_bound_one_only_to_a_shell_that_is_named() -> None:
    secrets = Secrets({"ENV": "env-value"}, bound=[Secret("API", "api-value", (API,))])
    assert secrets.resolve("{{secrets.ENV}}", SHELL) == "env-value"
    with pytest.raises(SecretOriginRefused):
        secrets.resolve("{{secrets.API}}", SHELL)
    shell_too = Secrets(bound=[Secret("API", "api-value", (API, SHELL))])
    assert shell_too.resolve("{{secrets.API}}", SHELL) == "api-value"


def test_a_redirect_may_go_only_where_every_bound_secret_carried_may_go() -> None:
    other = "https://other.example"
    secrets = Secrets(
        {"ENV": "env-value"},
        bound=[Secret("A", "a-value", (API, other)), Secret("B", "b-value", (API,))],
    )
    assert secrets.reach_of({"headers": {"X": "env-value"}}) is None
    assert secrets.reach_of({"headers": {"X": "a-value"}}) == {API, other}
    assert secrets.reach_of(["a-value", {"b": "b-value"}]) == {API}


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("HTTPS://API.Example.com:443/path?q=1", API),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("http://[::1]:80/", "http://[::1]"),
        ("http://evil.example\\@api.example.com/", "http://evil.example"),  # as Chromium reads it
        ("about:blank", "null"),
        ("/relative", "null"),
        ("ftp://example.com/", "null"),
    ],
)
def test_origins_are_spelled_as_browsers_spell_them(url: str, origin: str) -> None:
    assert origin_of(url) == origin


@pytest.mark.parametrize(
    "text", ["*", "https://api.example.com/path", "https://u:p@api.example.com", "api.example.com"]
)
def test_a_secret_may_only_be_bound_to_plain_origins(text: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        normalized_origin(text)


def test_log_lines_are_redacted_with_the_secrets_of_every_session_running_now() -> None:
    in_use = SecretsInUse()
    log_filter = RedactingFilter(Secrets({"ENV": "env-value"}), in_use)
    release = in_use.hold(Secrets(bound=[Secret("STORED", VALUE, (API,))]))

    def logged(*args: str) -> str:
        record = logging.LogRecord("stepline", logging.INFO, __file__, 1, "%s %s", args, None)
        log_filter.filter(record)
        return record.getMessage()

    hexed = VALUE.encode().hex()
    assert logged("env-value", hexed) == "{{secrets.ENV}} {{secrets.STORED}}"
    release()  # the session ended
    assert logged("env-value", hexed) == f"{{{{secrets.ENV}}}} {hexed}"


def test_the_context_keeps_the_most_recent_actions_within_budget() -> None:
    entries = [f"action {i} " + "x" * 90 for i in range(10)]
    kept = within_budget(entries, budget=350)
    assert kept[0] == "[7 earlier actions omitted]"
    assert kept[1:] == entries[-3:]


def test_a_secret_bound_to_no_origin_goes_nowhere() -> None:
    secrets = Secrets(bound=[Secret("TOKEN", "s3cr3t-token", (NO_ORIGIN,))])

    with pytest.raises(SecretOriginRefused):
        secrets.filled("{{secrets.TOKEN}}", NO_ORIGIN)
