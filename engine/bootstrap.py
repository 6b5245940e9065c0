"""The composition root: settings -> logging -> database -> Application, once per process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from engine.ai import AiProvider
from engine.app import Stepline
from engine.database import check_reachable, embedded_postgres, eventsourcing_env
from engine.definitions import builtin
from engine.logs import LOGGER_NAME, configure_logging
from engine.projector import Projector
from engine.secrets import Secrets
from engine.settings import Settings
from engine.task_loop import TaskLoop

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    app: Stepline
    projector: Projector
    loop: TaskLoop
    database_url: str
    embedded: bool


def ai_provider(settings: Settings) -> AiProvider | None:
    """The configured AI provider, or None when STEPLINE_AI_MODEL is unset."""
    if not settings.ai_model:
        return None
    key = settings.ai_api_key.get_secret_value() if settings.ai_api_key else "not-needed"
    return AiProvider(
        model=settings.ai_model,
        api_key=key,
        base_url=settings.ai_base_url,
        timeout_s=settings.ai_timeout_s,
        max_retries=settings.ai_max_retries,
    )


@contextmanager
def open_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """Everything a process needs, closed (and the embedded server released) on exit."""
    settings = settings or Settings()
    secrets = Secrets.from_environment()
    configure_logging(settings.log_level, settings.log_format, secrets)
    for name in secrets.too_short_to_redact:
        log.warning("Secret %s is shorter than 4 characters: it cannot be redacted safely", name)
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
        ai = ai_provider(settings)
        if ai is not None:
            stack.callback(ai.close)
        loop = TaskLoop(app, settings, builtin(), secrets, ai)
        yield Runtime(
            settings=settings,
            app=app,
            projector=projector,
            loop=loop,
            database_url=url,
            embedded=embedded,
        )
