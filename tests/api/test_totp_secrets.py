"""TOTP seeds over HTTP: stored with `"kind": "totp"` only when they are base32, never read
back, and usable by no other tenant (whose sessions are refused as for an unknown one)."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api, ApiFactory
from tests.api.test_errors import assert_problem
from tests.conftest import MASTER_KEY

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def uses(name: str) -> dict[str, Any]:
    return {
        "name": "one-time code",
        "base_url": "http://127.0.0.1:9",
        "steps": [f'POST /totp-login with {{"code": "{{{{totp.{name}}}}}"}}'],
    }


def test_a_seed_is_stored_as_totp_and_never_shown(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    with api.client("alice") as alice:
        stored = alice.put("/v1/secrets/MFA", json={"value": SEED.lower(), "kind": "totp"})
        listed = alice.get("/v1/secrets")

    assert stored.status_code == 200, stored.text
    assert stored.json()["kind"] == "totp"
    assert [s["kind"] for s in listed.json()["secrets"]] == ["totp"]
    for answer in (stored, listed):
        assert SEED not in answer.text.upper()


def test_a_seed_that_is_not_base32_is_refused_with_a_clear_error(start_api: ApiFactory) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    with api.client("alice") as alice:
        refused = alice.put("/v1/secrets/MFA", json={"value": "hunter2-hunter2!", "kind": "totp"})
        listed = alice.get("/v1/secrets")

    assert refused.status_code == 422
    assert "base32" in refused.text
    assert "hunter2" not in refused.text
    assert listed.json()["secrets"] == []


def test_another_tenants_seed_is_refused_at_creation_as_an_unknown_one(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    with api.client("alice") as alice, api.client("eve") as eve:
        assert alice.put("/v1/secrets/MFA", json={"value": SEED, "kind": "totp"}).is_success
        borrowed = assert_problem(eve.post("/v1/sessions", json=uses("MFA")), 422, "SECRET_MISSING")
        unknown = assert_problem(eve.post("/v1/sessions", json=uses("NOPE")), 422, "SECRET_MISSING")
        own = alice.post("/v1/sessions", json=uses("MFA"))

    assert "{{totp.MFA}} (step 0)" in borrowed["message"]
    assert borrowed["message"] == unknown["message"].replace("NOPE", "MFA")
    assert own.status_code == 201, own.text


def test_a_seed_used_as_a_value_or_a_value_as_a_seed_is_refused_at_creation(
    start_api: ApiFactory,
) -> None:
    api: Api = start_api(workers=0, master_key=MASTER_KEY)
    value_as_seed = uses("TOKEN")
    seed_as_value = {**uses("MFA"), "steps": ["GET /login?token={{secrets.MFA}}"]}
    with api.client("alice") as alice:
        assert alice.put("/v1/secrets/MFA", json={"value": SEED, "kind": "totp"}).is_success
        assert alice.put("/v1/secrets/TOKEN", json={"value": "tok-abcdef"}).is_success
        refusals = [alice.post("/v1/sessions", json=w) for w in (value_as_seed, seed_as_value)]
        listed = alice.get("/v1/sessions").json()

    not_a_seed = assert_problem(refusals[0], 422, "SECRET_KIND_MISMATCH")
    a_seed = assert_problem(refusals[1], 422, "SECRET_KIND_MISMATCH")
    assert "TOKEN is not a TOTP seed" in not_a_seed["message"]
    assert "write {{totp.MFA}}" in a_seed["message"]
    assert SEED not in a_seed["message"]
    assert listed["items"] == []
