"""`stepline secrets`, run as a person runs it: the value goes in on stdin, never on the
command line, and never comes out again."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from engine.settings import Settings
from engine.tenancy.secret_store import MasterKey, SecretStore, new_master_key
from tests.conftest import MASTER_KEY

STEPLINE = str(Path(sys.executable).parent / "stepline")
VALUE = "cli-Pa55word-from-stdin"


def stepline(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    return subprocess.run(
        [STEPLINE, "secrets", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **env},
        timeout=120,
        check=False,
    )


@pytest.fixture
def store(fresh_database_url: str) -> Iterator[SecretStore]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        key = MasterKey(Settings(master_key=MASTER_KEY).master_key_bytes())
        yield SecretStore(pool, key)


def test_set_reads_the_value_from_stdin_and_list_shows_everything_but_it(
    fresh_database_url: str, store: SecretStore
) -> None:
    env = {"STEPLINE_DATABASE_URL": fresh_database_url, "STEPLINE_MASTER_KEY": MASTER_KEY}
    origin = "http://127.0.0.1:9"

    stored = stepline(
        "set", "API_TOKEN", "--tenant", "acme", "--origin", origin, stdin=VALUE + "\n", **env
    )
    listed = stepline("list", "--tenant", "acme", **env)
    others = stepline("list", "--tenant", "globex", **env)

    assert stored.returncode == 0, stored.stderr
    assert [(s.name, s.value, s.origins) for s in store.secrets_of("acme")] == [
        ("API_TOKEN", VALUE, (origin,))
    ]
    assert listed.returncode == 0, listed.stderr
    assert "API_TOKEN" in listed.stdout
    assert origin in listed.stdout
    assert "API_TOKEN" not in others.stdout
    for result in (stored, listed, others):
        assert VALUE not in result.stdout + result.stderr


def test_delete_forgets_it_and_a_second_delete_says_so(
    fresh_database_url: str, store: SecretStore
) -> None:
    env = {"STEPLINE_DATABASE_URL": fresh_database_url, "STEPLINE_MASTER_KEY": MASTER_KEY}
    stepline("set", "API_TOKEN", "--tenant", "acme", stdin=VALUE, **env)

    first = stepline("delete", "API_TOKEN", "--tenant", "acme", **env)
    second = stepline("delete", "API_TOKEN", "--tenant", "acme", **env)

    assert first.returncode == 0, first.stderr
    assert store.secrets_of("acme") == []
    assert second.returncode == 2
    assert "SECRET_NOT_FOUND" in second.stderr


def test_set_without_a_master_key_outside_dev_mode_stores_nothing(
    fresh_database_url: str, store: SecretStore
) -> None:
    refused = stepline(
        "set",
        "API_TOKEN",
        stdin=VALUE,
        STEPLINE_DATABASE_URL=fresh_database_url,
        STEPLINE_API_KEYS='{"alice": {"tenant": "acme", "sha256": "' + "0" * 64 + '"}}',
    )

    assert refused.returncode == 2
    assert "MASTER_KEY_MISSING" in refused.stderr
    assert store.listed("default") == []


def test_key_prints_a_new_32_byte_master_key() -> None:
    printed = stepline("key")

    assert printed.returncode == 0, printed.stderr
    assert Settings(master_key=printed.stdout.strip()).master_key_bytes() is not None


def test_a_master_key_rotation_keeps_every_tenants_secrets_and_webhook_secret(
    fresh_database_url: str, store: SecretStore, tmp_path: Path
) -> None:
    """Rotate on the old key, restart on the new, retire: the secrets stored before open
    under the new key alone (before, they were lost: only sessions' data keys were rotated),
    and processes still on the old key open them until the retirement."""
    store.put("acme", "API_TOKEN", VALUE, ())
    store.put("globex", "DB_PASSWORD", "globex-db-Pa55", ())
    signing = store.new_webhook_secret("acme")
    new_key = new_master_key()
    (tmp_path / "new.key").write_text(new_key + "\n")
    old_env = {"STEPLINE_DATABASE_URL": fresh_database_url, "STEPLINE_MASTER_KEY": MASTER_KEY}
    new_env = {**old_env, "STEPLINE_MASTER_KEY": new_key}
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        on_new_key = SecretStore(pool, MasterKey(Settings(master_key=new_key).master_key_bytes()))

        retired_too_soon = stepline("retire-master", **new_env)
        rotated = stepline("rotate-master", str(tmp_path / "new.key"), **old_env)
        both_during = [
            [(s.name, s.value) for s in each.secrets_of(tenant)]
            for each in (store, on_new_key)
            for tenant in ("acme", "globex")
        ]
        retired = stepline("retire-master", **new_env)

        assert retired_too_soon.returncode == 2
        assert "does not open under the current master key" in retired_too_soon.stderr
        assert rotated.returncode == 0, rotated.stderr
        assert "Sealed 3 tenant secrets under the new master key too" in rotated.stdout
        assert both_during == 2 * [[("API_TOKEN", VALUE)], [("DB_PASSWORD", "globex-db-Pa55")]]
        assert retired.returncode == 0, retired.stderr
        assert "Kept 3 tenant secrets under the current master key alone" in retired.stdout
        assert [(s.name, s.value) for s in on_new_key.secrets_of("acme")] == [("API_TOKEN", VALUE)]
        assert on_new_key.webhook_secret("acme") == signing
        assert store.secrets_of("acme") == []  # the old key opens nothing any more
        assert store.webhook_secret("acme") is None


def test_set_totp_stores_a_base32_seed_and_refuses_anything_else(
    fresh_database_url: str, store: SecretStore
) -> None:
    env = {"STEPLINE_DATABASE_URL": fresh_database_url, "STEPLINE_MASTER_KEY": MASTER_KEY}
    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

    stored = stepline("set", "MFA", "--tenant", "acme", "--totp", stdin=seed.lower() + "\n", **env)
    not_base32 = "one-time 0189!"
    refused = stepline("set", "BAD", "--tenant", "acme", "--totp", stdin=not_base32, **env)
    listed = stepline("list", "--tenant", "acme", **env)

    assert stored.returncode == 0, stored.stderr
    assert [(s.name, s.value, s.totp) for s in store.secrets_of("acme")] == [("MFA", seed, True)]
    assert refused.returncode != 0
    assert "base32" in refused.stdout + refused.stderr
    assert not_base32 not in refused.stdout + refused.stderr
    assert "totp" in listed.stdout
    assert seed not in listed.stdout.upper()
