"""A secret stored as a TOTP seed: `{{totp.NAME}}` is its current code, filled in only by the
executor, for the seed's origins; the seed is never sent, and seed and code are redacted."""

from __future__ import annotations

import pyotp
import pytest

from engine.executors import with_variables
from engine.secrets import (
    Secret,
    SecretKindMismatch,
    SecretNotFound,
    SecretOriginRefused,
    Secrets,
    UnreadableSeed,
    normalized_seed,
)

SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
SITE = "https://login.example.com"


def seeded() -> Secrets:
    return Secrets(
        bound=[Secret("MFA", SEED, (SITE,), totp=True), Secret("TOKEN", "tok-abcdef", (SITE,))]
    )


def test_a_totp_placeholder_is_filled_with_the_seeds_current_code() -> None:
    code = seeded().resolve('{"code": "{{ totp.MFA }}"}', SITE)

    assert pyotp.TOTP(SEED).verify(code[10:16], valid_window=1)
    assert code == f'{{"code": "{code[10:16]}"}}'


def test_the_seed_itself_is_never_sent_as_a_secrets_placeholder() -> None:
    with pytest.raises(SecretKindMismatch, match=r"write \{\{totp.MFA\}\}") as raised:
        seeded().resolve("{{secrets.MFA}}", SITE)
    assert raised.value.code == "SECRET_KIND_MISMATCH"
    assert SEED not in raised.value.message


def test_a_plain_secret_is_no_seed() -> None:
    with pytest.raises(SecretKindMismatch, match="is not a TOTP seed"):
        seeded().resolve("{{totp.TOKEN}}", SITE)


def test_an_unknown_seed_is_not_found_and_says_how_to_store_one() -> None:
    with pytest.raises(SecretNotFound, match="stepline secrets set NOPE --totp"):
        seeded().resolve("{{totp.NOPE}}", SITE)


def test_a_code_goes_only_to_the_seeds_origins() -> None:
    with pytest.raises(SecretOriginRefused):
        seeded().resolve("{{totp.MFA}}", "https://evil.example.net")


def test_a_code_filled_in_is_redacted_where_it_stands_alone_and_the_seed_everywhere() -> None:
    secrets = seeded()
    code = secrets.resolve("{{totp.MFA}}", SITE)

    assert secrets.redact(f"accepted {code}.") == "accepted {{totp.MFA}}."
    assert secrets.redact(f'{{"code":"{code}"}}') == '{"code":"{{totp.MFA}}"}'
    assert secrets.redact(f"id 9{code}9") == f"id 9{code}9"  # a longer number is left alone
    assert secrets.redact(f"seed {SEED.lower()}") == "seed {{secrets.MFA}}"


def test_a_code_not_filled_in_by_this_run_is_not_redacted() -> None:
    secrets = seeded()
    code = pyotp.TOTP(SEED).now()

    assert secrets.redact(f"count {code}") == f"count {code}"


def test_variables_leave_totp_placeholders_for_the_executor() -> None:
    assert with_variables("{{totp.MFA}} {{vars.x}}", {"x": 1}) == "{{totp.MFA}} 1"


def test_a_seed_is_read_as_sites_print_it() -> None:
    assert normalized_seed("jbsw y3dp-ehpk 3pxp") == "JBSWY3DPEHPK3PXP"


@pytest.mark.parametrize("value", ["not-a-seed!", "JBSWY3DP", "12345678901234567890"])
def test_anything_but_a_base32_seed_is_refused_without_repeating_it(value: str) -> None:
    with pytest.raises(ValueError, match="base32") as raised:
        normalized_seed(value)
    assert value not in str(raised.value)


def test_the_dev_tenants_environment_may_hold_seeds() -> None:
    secrets = Secrets.from_environment({"STEPLINE_TOTP_MFA": SEED.lower(), "STEPLINE_TOTP_X": ""})

    assert (secrets.names, secrets.seed_names) == (["MFA"], ["MFA"])
    assert pyotp.TOTP(SEED).verify(secrets.resolve("{{totp.MFA}}", SITE), valid_window=1)


def test_a_seed_in_the_environment_that_is_not_base32_stops_the_start_naming_the_variable() -> None:
    with pytest.raises(UnreadableSeed, match="STEPLINE_TOTP_MFA: a TOTP seed is base32") as raised:
        Secrets.from_environment({"STEPLINE_TOTP_MFA": "hunter2!"})
    assert raised.value.code == "CONFIGURATION_INVALID"
    assert "hunter2" not in raised.value.message
