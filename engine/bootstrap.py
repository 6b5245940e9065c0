"""The composition root: settings -> logging -> database -> Application, once per process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

from eventsourcing.persistence import PersistenceError
from psycopg.errors import InsufficientPrivilege
from psycopg_pool import ConnectionPool

from engine.ai.provider import AiProvider
from engine.ai.token_budget import TokenBudget
from engine.audit.chain import HeadLog
from engine.live.follower import LogFollower
from engine.live.leadership import process_identity
from engine.live.projector import VIEWS_CHANNEL, Projector
from engine.logs import LOGGER_NAME, configure_logging
from engine.loop.builtin_steps import builtin
from engine.loop.learned import LearnedActionSource
from engine.loop.task_loop import TaskLoop
from engine.ownership.executor_state import ExecutorStates
from engine.ownership.leases import RELEASED_CHANNEL, Leases
from engine.ownership.sweep import Sweep
from engine.privacy.erasure import Erasure
from engine.scheduler import Scheduler
from engine.secrets import Secrets
from engine.settings import Settings
from engine.store import schema
from engine.store.app import Stepline
from engine.store.database import (
    DatabaseUnavailable,
    check_reachable,
    embedded_postgres,
    eventsourcing_env,
)
from engine.store.event_store import CREATED_CHANNEL
from engine.tenancy.policies import Policies
from engine.tenancy.secret_store import MasterKey, SecretStore
from engine.tracing import Tracing
from engine.webhooks import WebhookSender
from engine.worker import SessionWorker

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    app: Stepline
    projector: Projector
    leases: Leases
    executor_states: ExecutorStates
    policies: Policies
    secret_store: SecretStore
    loop: TaskLoop
    database_url: str
    embedded: bool
    tracing: Tracing

    def erasure(self) -> Erasure:
        return Erasure(self.app, self.projector.pool, self.settings.data_dir)

    def sweep(self) -> Sweep:
        return Sweep(
            self.app,
            self.projector,
            self.leases,
            self.executor_states,
            self.settings.session_ttl_ms,
            self.erasure(),
            self.settings.retention_days,
        )

    def head_log(self) -> HeadLog:
        """Logs the chain's head every STEPLINE_AUDIT_HEAD_INTERVAL_S, one process at a time."""
        interval_s = self.settings.audit_head_interval_s
        return HeadLog(self.projector.pool, self.app.events_table, interval_s)

    def scheduler(self) -> Scheduler:
        grace = timedelta(seconds=self.settings.schedule_grace_s)
        return Scheduler(self.app, self.projector, self.loop, grace)

    def webhook_sender(self) -> WebhookSender:
        return WebhookSender(
            self.app,
            self.projector.pool,
            self.secret_store,
            self.policies.of,
            timeout_s=self.settings.webhook_timeout_ms / 1000,
            first_retry_s=self.settings.webhook_first_retry_ms / 1000,
            retry_for_s=self.settings.webhook_retry_for_s,
        )

    def worker(self, concurrency: int, role: str) -> SessionWorker:
        return SessionWorker(
            self.loop,
            self.leases,
            concurrency=concurrency,
            role=role,
            running_limit=lambda tenant: self.policies.of(tenant).max_running,
        )


@dataclass(frozen=True)
class Background:
    follower: LogFollower
    worker: SessionWorker | None


@contextmanager
def running_in_background(
    runtime: Runtime,
    *,
    workers: int,
    role: str,
    also_wake: Sequence[Callable[[], None]] = (),
    wanted: Callable[[], bool] | None = None,
) -> Iterator[Background]:
    """The process's background duties: its candidacy for the projector's lead (see
    `engine.live.leadership`; in reserve without a worker), the follower (its one LISTEN
    connection: new events wake `also_wake`, and are listened to only while `wanted()` if
    given — see `LogFollower.listen_while`; the views' positions reach the projector and
    wake the worker and the webhooks' sender), the worker itself (none when `workers` is 0)
    with the schedules' firings and the webhooks' deliveries, the TTL sweep and the log of the
    chain's head. On exit every session stops at its next safe point, its lease handed back."""
    worker = runtime.worker(workers, role) if workers > 0 else None
    follower = _follower(runtime, events=bool(also_wake), offers=worker is not None)
    events = runtime.app.recorder.channel_name  # type: ignore[attr-defined]
    for callback in also_wake:
        follower.subscribe(callback, channel=events)
    if also_wake and wanted is not None:
        follower.listen_while(events, wanted)
    deliveries_queued = threading.Event()
    # A new (or resumed) session is claimable once the session index shows it (a new one is
    # also offered as soon as it is saved, see `SessionWorker.offer`): the worker looks
    # when the views' leader says it applied a change of status, and at once when a lease
    # is released; a cancel reaches the sessions it drives the same way. A change of status
    # is also when the views queue webhooks: the sender looks then too.
    wake = [] if worker is None else [worker.wake]
    runtime.projector.hear(follower, on_status_change=[*wake, deliveries_queued.set])
    for callback in wake:
        follower.subscribe(callback, channel=RELEASED_CHANNEL)
    if worker is not None:  # a session just created is taken at once, before the index has it
        follower.receive(worker.offer, channel=CREATED_CHANNEL)
    with ExitStack() as stack:
        stack.callback(follower.start())
        # A process that drives no session (the API only) leads only when no worker does.
        identity = process_identity(role)
        stack.callback(runtime.projector.start_leading(identity, reserve=worker is None))
        if worker is not None:
            worker.start()
            stack.callback(worker.stop)
            stack.callback(runtime.scheduler().start())
            stack.callback(runtime.webhook_sender().start(deliveries_queued).stop)
        stack.callback(runtime.sweep().start())
        stack.callback(runtime.head_log().start())
        yield Background(follower, worker)


def _follower(runtime: Runtime, events: bool, offers: bool) -> LogFollower:
    """The channels this process listens to: the views' positions and released leases, new
    events only where something streams them (the API's feed), and sessions just created
    only where a worker may take them."""
    channels = [VIEWS_CHANNEL, RELEASED_CHANNEL]
    if offers:
        channels.append(CREATED_CHANNEL)
    if events:
        channels.append(runtime.app.recorder.channel_name)  # type: ignore[attr-defined]
    return LogFollower(runtime.projector.pool, channels)


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


def _prepare_schema(
    settings: Settings, pool: ConnectionPool, app: Stepline, master_key: MasterKey
) -> None:
    """Through the owner's URL when given (the application's role may not change the schema),
    else through the application's own connections."""
    try:
        if settings.migration_database_url is not None:
            check_reachable(settings.migration_database_url)
            schema.prepare_database(settings.migration_database_url, master_key)
        else:
            schema.prepare(pool, app, master_key)
    except (PersistenceError, InsufficientPrivilege) as error:
        cause = error if isinstance(error, InsufficientPrivilege) else error.__cause__
        if not isinstance(cause, InsufficientPrivilege):
            raise
        raise DatabaseUnavailable(
            f"STEPLINE_DATABASE_URL's role may not change the schema ({cause}): give the "
            "schema owner's URL as STEPLINE_MIGRATION_DATABASE_URL"
        ) from None


@contextmanager
def open_runtime(settings: Settings | None = None) -> Iterator[Runtime]:
    """Everything a process needs, closed (and the embedded server released) on exit."""
    settings = settings or Settings()
    secrets = Secrets.from_environment()
    configure_logging(settings.log_level, settings.log_format, secrets)
    for name in secrets.too_short_to_redact:
        log.warning("Secret %s is shorter than 4 characters: it cannot be redacted safely", name)
    with ExitStack() as stack:
        tracing = Tracing.of(settings)
        stack.callback(tracing.shutdown)  # last: after the sessions' runs have stopped
        url = settings.database_url
        embedded = url is None
        if url is None:
            url = stack.enter_context(embedded_postgres(settings.data_dir))
        else:
            check_reachable(url)
        store_connections = settings.db_connections // 2
        master_key = MasterKey.of(settings)
        app = Stepline(
            eventsourcing_env(url, pool_size=store_connections, max_overflow=0),
            snapshot_interval=settings.snapshot_interval,
            cache_size=settings.session_cache_size,
            # Sessions are sealed under an operator's STEPLINE_MASTER_KEY only: dev mode's key
            # file lies beside the data it would guard, and each data directory has its own.
            master_key=master_key if settings.master_key_bytes() is not None else None,
        )
        stack.callback(app.close)
        pool = ConnectionPool(
            url,
            min_size=1,
            max_size=settings.db_connections - store_connections,
            timeout=5,
            kwargs={"autocommit": True},
            open=True,
        )
        stack.callback(pool.close)
        _prepare_schema(settings, pool, app, master_key)
        projector = Projector(app, pool)
        leases = Leases(pool, lease_s=settings.lease_ms / 1000)
        executor_states = ExecutorStates(pool, master_key, settings.fork_state_ttl_s)
        secret_store = SecretStore(pool, master_key)
        ai = ai_provider(settings)
        if ai is not None:
            stack.callback(ai.close)
        budget = None
        if settings.tenant_daily_tokens is not None:
            budget = TokenBudget(pool, settings.tenant_daily_tokens)
        policies = Policies(app, settings)
        loop = TaskLoop(
            app,
            settings,
            builtin(),
            secrets,
            ai,
            executor_states=executor_states,
            token_budget=budget,
            policies=policies,
            secret_store=secret_store,
            tracing=tracing,
            learned=LearnedActionSource(pool),
        )
        stack.callback(loop.close)
        yield Runtime(
            settings=settings,
            app=app,
            projector=projector,
            leases=leases,
            executor_states=executor_states,
            policies=policies,
            secret_store=secret_store,
            loop=loop,
            database_url=url,
            embedded=embedded,
            tracing=tracing,
        )
