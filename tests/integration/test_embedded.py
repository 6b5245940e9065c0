"""The default a new user gets: no URL set, so Stepline runs its own PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from uuid import UUID

import pytest

from domain.session import StepSpec
from engine.bootstrap import open_runtime
from engine.settings import Settings
from engine.store.app import Stepline
from tests import workloads

pytestmark = pytest.mark.embedded

# Creates a session and prints its id, waits for a line on stdin, then does it again.
CLIENT = textwrap.dedent(
    """
    import sys
    from domain.session import StepSpec
    from engine.bootstrap import open_runtime
    from tests import workloads

    def create(app, name):
        return workloads.create_session(
            app, name=name, steps=[StepSpec("s")], tenant="t", actor="a"
        )

    with open_runtime() as runtime:
        print(create(runtime.app, sys.argv[1] + "-1"), flush=True)
        sys.stdin.readline()
        print(create(runtime.app, sys.argv[1] + "-2"), flush=True)
    """
)


def _create(app: Stepline, name: str) -> UUID:
    return workloads.create_session(app, name=name, steps=[StepSpec("s")], tenant="t", actor="a")


def _client(data_dir: Path, name: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPLINE_")}
    env |= {"STEPLINE_DATA_DIR": str(data_dir), "STEPLINE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-c", CLIENT, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _next_id(client: subprocess.Popen[str]) -> UUID:
    assert client.stdout is not None
    return UUID(client.stdout.readline().strip())


def _finish(client: subprocess.Popen[str]) -> UUID:
    assert client.stdin is not None
    client.stdin.write("go\n")
    client.stdin.flush()
    session_id = _next_id(client)
    assert client.wait(timeout=60) == 0
    return session_id


def _server_running(data_dir: Path) -> bool:
    return (data_dir / "pg" / "postmaster.pid").exists()


def test_the_embedded_server_stores_sessions_and_stops_on_exit(tmp_path: Path) -> None:
    with open_runtime(Settings(database_url=None, data_dir=tmp_path)) as runtime:
        assert runtime.embedded
        assert _server_running(tmp_path)
        session_id = _create(runtime.app, "kept")
    assert not _server_running(tmp_path)

    with open_runtime(Settings(database_url=None, data_dir=tmp_path)) as runtime:
        assert runtime.app.get_session(session_id).name == "kept"


def test_a_second_process_shares_the_running_server(tmp_path: Path) -> None:
    first = _client(tmp_path, "first")
    first_ids = [_next_id(first)]
    second = _client(tmp_path, "second")
    second_ids = [_next_id(second)]

    second_ids.append(_finish(second))  # the second leaves while the first still works
    assert _server_running(tmp_path)
    first_ids.append(_finish(first))  # the server outlived the second's exit
    assert not _server_running(tmp_path)

    with open_runtime(Settings(database_url=None, data_dir=tmp_path)) as runtime:
        names = [runtime.app.get_session(i).name for i in first_ids + second_ids]
    assert names == ["first-1", "first-2", "second-1", "second-2"]
