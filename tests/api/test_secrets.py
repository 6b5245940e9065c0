"""A tenant's secrets over HTTP: written, listed by name, deleted; never read back, never
another tenant's."""

from __future__ import annotations

import stat

import httpx
import psycopg
import pytest

from tests.api.conftest import Api, ApiFactory
from tests.api.test_errors import assert_problem
from tests.conftest import MASTER_KEY

VALUE = "acme-api-Pa55word"
ORIGIN = "https://api.example.com"


@pytest.fixture
def keyed_api(start_api: ApiFactory) -> Api:
    started: Api = start_api(master_key=MASTER_KEY)
    return started


def put(client: httpx.Client, name: str, value: str = VALUE, **body: object) -> httpx.Response:
    return client.put(f"/v1/secrets/{name}", json={"value": value, **body})


def test_a_secret_put_is_listed_with_its_origins_and_times_but_never_its_value(
    keyed_api: Api, fresh_database_url: str
) -> None:
    with keyed_api.client("alice") as alice, keyed_api.client("bob") as bob:
        stored = put(alice, "API_TOKEN", origins=["HTTPS://API.example.com:443/"])
        listed = bob.get("/v1/secrets")  # bob's key is acme's too

    assert stored.status_code == 200, stored.text
    assert stored.json()["origins"] == [ORIGIN]
    assert listed.status_code == 200
    (secret,) = listed.json()["secrets"]
    assert (secret["name"], secret["origins"]) == ("API_TOKEN", [ORIGIN])
    assert secret["created_at"] <= secret["updated_at"]
    for answer in (stored, listed):
        assert VALUE not in answer.text
    with psycopg.connect(fresh_database_url) as conn:
        stored_anywhere = conn.execute(
            "SELECT state FROM stepline_events UNION ALL SELECT ciphertext FROM tenant_secrets"
        ).fetchall()
    assert stored_anywhere
    assert not [row for row in stored_anywhere if VALUE.encode() in bytes(row[0])]


def test_another_tenant_neither_sees_nor_deletes_nor_overwrites_a_secret(keyed_api: Api) -> None:
    with keyed_api.client("alice") as alice, keyed_api.client("eve") as eve:
        assert put(alice, "API_TOKEN").status_code == 200
        seen_by_eve = eve.get("/v1/secrets")
        deleted_by_eve = eve.delete("/v1/secrets/API_TOKEN")
        eves_own = put(eve, "API_TOKEN", "globex-own-value")
        still_acmes = alice.get("/v1/secrets")

    assert seen_by_eve.json() == {"secrets": []}
    assert_problem(deleted_by_eve, 404, "SECRET_NOT_FOUND")
    assert eves_own.status_code == 200
    assert [s["name"] for s in still_acmes.json()["secrets"]] == ["API_TOKEN"]
    opened = keyed_api.services.runtime.secret_store.secrets_of("acme")
    assert [(s.name, s.value) for s in opened] == [("API_TOKEN", VALUE)]


def test_a_secret_is_deleted_once(keyed_api: Api) -> None:
    with keyed_api.client("alice") as alice:
        put(alice, "API_TOKEN")
        first = alice.delete("/v1/secrets/API_TOKEN")
        second = alice.delete("/v1/secrets/API_TOKEN")
        listed = alice.get("/v1/secrets")

    assert first.status_code == 204
    assert_problem(second, 404, "SECRET_NOT_FOUND")
    assert listed.json() == {"secrets": []}


@pytest.mark.parametrize("name", ["bad-name", "has.dot", "x" * 101, "caf%C3%A9"])
def test_a_name_other_than_letters_digits_and_underscores_is_refused(
    keyed_api: Api, name: str
) -> None:
    with keyed_api.client("alice") as alice:
        assert_problem(put(alice, name), 422, "VALIDATION_FAILED")
        assert_problem(alice.delete(f"/v1/secrets/{name}"), 422, "VALIDATION_FAILED")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": "abc"}, "body.value"),  # too short to redact
        ({"value": VALUE, "origins": ["*"]}, "body.origins"),
        ({"value": VALUE, "origins": ["https://api.example.com/path"]}, "body.origins"),
        ({"value": VALUE, "extra": 1}, "body.extra"),
    ],
)
def test_a_bad_body_is_refused_without_repeating_the_value(
    keyed_api: Api, body: dict[str, object], field: str
) -> None:
    with keyed_api.client("alice") as alice:
        refused = alice.put("/v1/secrets/API_TOKEN", json=body)

    problem = assert_problem(refused, 422, "VALIDATION_FAILED")
    assert field in [error["field"] for error in problem["details"]["errors"]]
    assert str(body["value"]) not in refused.text


def test_without_a_master_key_a_secret_is_refused_not_stored_in_clear(
    start_api: ApiFactory, fresh_database_url: str
) -> None:
    api = start_api()  # API keys, and no STEPLINE_MASTER_KEY
    with api.client("alice") as alice:
        refused = put(alice, "API_TOKEN")

    assert_problem(refused, 503, "MASTER_KEY_MISSING")
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM tenant_secrets").fetchone() == (0,)


def test_dev_mode_makes_its_own_master_key_file_readable_by_its_owner_only(
    start_api: ApiFactory,
) -> None:
    api = start_api(keys=False)
    with api.client(None) as dev:
        stored = put(dev, "API_TOKEN")

    assert stored.status_code == 200, stored.text
    key_file = api.services.runtime.settings.data_dir / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    opened = api.services.runtime.secret_store.secrets_of("default")
    assert [(s.name, s.value) for s in opened] == [("API_TOKEN", VALUE)]
