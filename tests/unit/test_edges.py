"""The API's edges decided without a server: which Host headers are answered, the settings
that configure them, and the failed-authentication window."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.http.auth import AuthFailures, digest
from api.http.errors import ApiError
from api.http.middleware import HostPolicy, host_of_header
from engine.settings import ApiKey, Settings


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("[::1", ""),
    ],
)
def test_the_name_of_a_host_header(header: str, name: str) -> None:
    assert host_of_header(header) == name


@pytest.mark.parametrize(
    "header", ["localhost:8000", "127.0.0.1", "127.0.0.2:9", "[::1]:8000", "LOCALHOST"]
)
def test_with_no_list_only_loopback_names_are_answered(header: str) -> None:
    assert HostPolicy().admits(header)


@pytest.mark.parametrize(
    "header",
    [
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.1",
        "169.254.169.254",
        "[fe80::1]",
        "",
        None,
    ],
)
def test_with_no_list_any_other_host_is_refused(header: str | None) -> None:
    assert not HostPolicy().admits(header)


def test_a_list_admits_only_its_names_and_star_admits_all() -> None:
    listed = HostPolicy(["stepline.example.org", "[::1]"])
    assert listed.admits("stepline.example.org:443")
    assert listed.admits("[::1]:8000")
    assert not listed.admits("127.0.0.1")
    assert HostPolicy(["*"]).admits("anything.example")
    assert HostPolicy(any_host=True).admits(None)


def test_allowed_hosts_come_as_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPLINE_ALLOWED_HOSTS", "Stepline.Example.org, localhost,")
    assert Settings().allowed_hosts == ["stepline.example.org", "localhost"]


def test_the_operator_metrics_key_cannot_be_a_tenants_key() -> None:
    tenant_key = digest("sk_tenant")
    with pytest.raises(ValidationError, match="METRICS_KEY_SHA256 is a tenant's API key"):
        Settings(
            api_keys={"t": ApiKey(tenant="acme", sha256=tenant_key)},
            metrics_key_sha256=tenant_key,
        )


def test_an_address_is_refused_after_its_failures_then_others_are_not() -> None:
    failures = AuthFailures(per_minute=2)
    failures.record("198.51.100.7")
    failures.refuse_if_blocked("198.51.100.7")  # one failure: still let through
    failures.record("198.51.100.7")
    with pytest.raises(ApiError) as refused:
        failures.refuse_if_blocked("198.51.100.7")
    assert refused.value.error.code == "TOO_MANY_AUTH_FAILURES"
    assert int(refused.value.headers["Retry-After"]) >= 1
    failures.refuse_if_blocked("198.51.100.8")


def test_the_remembered_addresses_are_bounded() -> None:
    failures = AuthFailures(per_minute=1, max_addresses=3)
    for n in range(10):
        failures.record(f"198.51.100.{n}")
    failures.refuse_if_blocked("198.51.100.0")  # forgotten, the oldest of a full table
    with pytest.raises(ApiError):
        failures.refuse_if_blocked("198.51.100.9")
