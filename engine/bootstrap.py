"""The composition root: settings -> logging -> database -> Application, once per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from engine.app import Stepline
from engine.database import check_reachable, embedded_postgres, eventsourcing_env
from engine.logs import configure_logging
from engine.projector import Projector
from engine.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    app: Stepline
    projector: Projector
    database_url: str
    embedded: bool


@contextmanager
def open_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """Everything a process needs, closed (and the embedded server released) on exit."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format)
    with ExitStack() as stack:
        url = settings.database_url
        embedded = url is None
        if url is None:
            url = stack.enter_context(embedded_postgres(settings.data_dir))
        else:
            check_reachable(url)
        app = Stepline(
            eventsourcing_env(url),
            snapshot_interval=settings.snapshot_interval,
            cache_size=settings.session_cache_size,
        )
        stack.callback(app.close)
        pool = ConnectionPool(url, min_size=1, max_size=4, kwargs={"autocommit": True}, open=True)
        stack.callback(pool.close)
        projector = Projector(app, pool)
        projector.prepare()
        yield Runtime(
            settings=settings, app=app, projector=projector, database_url=url, embedded=embedded
        )
