"""`stepline schedules` and `stepline keys webhook-secret` on the database, run as a person
runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from engine.settings import Settings
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.tenancy.secret_store import MasterKey, SecretStore
from tests.conftest import MASTER_KEY, allow_local_targets

STEPLINE = str(Path(sys.executable).parent / "stepline")
WORKFLOW = """\
name: nightly check
executor: shell
labels: {team: ops}
config:
  shell_allow: ["true"]
steps:
  - run `true`
"""


def stepline(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env = {"STEPLINE_DATABASE_URL": database_url, "STEPLINE_MASTER_KEY": MASTER_KEY}
    return subprocess.run(
        [STEPLINE, *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "200", **env},
        timeout=120,
        check=False,
    )


@pytest.fixture
def database(fresh_database_url: str) -> str:
    app = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    allow_local_targets(app)  # acme may run shell steps
    app.close()
    return fresh_database_url


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "nightly.yaml"
    path.write_text(WORKFLOW)
    return path


@pytest.fixture
def store(fresh_database_url: str) -> Iterator[SecretStore]:
    with ConnectionPool(
        fresh_database_url, min_size=1, max_size=2, kwargs={"autocommit": True}
    ) as pool:
        yield SecretStore(pool, MasterKey(Settings(master_key=MASTER_KEY).master_key_bytes()))


def test_a_schedule_is_created_paused_resumed_and_deleted_from_the_command_line(
    database: str, workflow: Path
) -> None:
    made = stepline(
        database,
        "schedules",
        "create",
        str(workflow),
        "--every",
        "1h",
        "--tenant",
        "acme",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    [schedule] = json.loads(made.stdout)
    assert (schedule["every"], schedule["paused"]) == ("1h", False)
    assert schedule["workflow"]["labels"] == {"team": "ops"}
    short = schedule["schedule_id"][:8]

    paused = stepline(database, "schedules", "pause", short, "--tenant", "acme", "--json")
    assert json.loads(paused.stdout)[0]["paused"] is True, paused.stderr
    resumed = stepline(database, "schedules", "resume", short, "--tenant", "acme", "--json")
    assert json.loads(resumed.stdout)[0]["next_firing_at"] is not None, resumed.stderr
    listed = stepline(database, "schedules", "list", "--tenant", "acme")
    assert "nightly check" in listed.stdout
    assert "every 1h" in listed.stdout
    assert stepline(database, "schedules", "list", "--tenant", "globex", "--json").stdout == "[]\n"

    deleted = stepline(database, "schedules", "delete", short, "--tenant", "acme")
    assert deleted.returncode == 0, deleted.stderr
    assert stepline(database, "schedules", "list", "--tenant", "acme", "--json").stdout == "[]\n"


def test_a_schedule_its_tenant_could_not_run_is_refused_with_the_reason(
    database: str, workflow: Path
) -> None:
    made = stepline(database, "schedules", "create", str(workflow), "--cron", "61 * * * *")
    assert made.returncode == 2
    assert "VALIDATION_FAILED" in made.stderr
    refused = stepline(database, "schedules", "create", str(workflow), "--every", "1m",
                       "--tenant", "initech")  # fmt: skip
    assert refused.returncode == 2
    assert "POLICY_REFUSED" in refused.stderr


def test_keys_webhook_secret_prints_the_secret_it_stored_sealed(
    database: str, store: SecretStore
) -> None:
    made = stepline(database, "keys", "webhook-secret", "--tenant", "acme")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("whsec_")
    assert store.webhook_secret("acme") == secret
    assert store.webhook_secret("globex") is None
    with store.pool.connection() as conn:
        sealed = conn.execute("SELECT ciphertext FROM tenant_webhook_secrets").fetchone()
    assert sealed is not None
    assert secret.encode() not in bytes(sealed[0])
