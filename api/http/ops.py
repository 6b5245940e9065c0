"""GET /health and GET /metrics (Prometheus text format).

Anyone may ask /health whether the service is up: the answer is its status alone. Its details
(workers, lag) and /metrics show every tenant's figures, so they are the operator's: sent the
operator's metrics key (`STEPLINE_METRICS_KEY_SHA256`, never a tenant's), or asked on the
metrics port (`stepline serve --metrics-port`, loopback by default). Dev mode (no API keys, a
loopback server, one tenant) shows them to its one user.
"""

from __future__ import annotations

from datetime import UTC, datetime

from eventsourcing.persistence import PersistenceError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from psycopg import Error as PsycopgError
from pydantic import BaseModel

from api.http.errors import ApiError, problem_responses
from api.http.middleware import LATENCY_BUCKETS_S, HttpMetrics
from api.http.schemas import Health, HealthState, WorkerHealth
from api.http.services import OperatorDep, Services, ServicesDep

router = APIRouter(tags=["operations"])
STEP_BUCKETS_S = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class HealthStatus(BaseModel):
    """What /health tells anyone: up or not, nothing about who uses it."""

    status: HealthState


def _sees_details(services: Services, operator: bool) -> bool:
    return operator or services.keys.dev_mode


@router.get(
    "/health",
    operation_id="getHealth",
    response_model=Health | HealthStatus,
    responses={503: {"model": Health | HealthStatus}, **problem_responses(422)},
)
def health(services: ServicesDep, operator: OperatorDep) -> JSONResponse:
    """Healthy or not (503). With the operator's metrics key: database reachable, projections
    live and their lag, this server's worker (or worker processes) alive, and every live
    worker with its sessions."""
    database = True
    lag: int | None = None
    workers: list[WorkerHealth] = []
    try:
        with services.runtime.projector.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")  # answer within seconds when the database is gone
        lag = max((view.lag for view in services.runtime.projector.status()), default=0)
        workers = _workers(services)
    except (PsycopgError, PersistenceError):
        database = False
    worker = services.worker_alive
    live = services.runtime.projector.following
    healthy = database and live and worker is not False
    body = Health(
        status="ok" if healthy else "unhealthy",
        database=database,
        worker=worker,
        projections_live=live,
        projection_lag=lag,
        workers=workers,
    )
    status_code = 200 if healthy else 503
    if not _sees_details(services, operator):
        return JSONResponse({"status": body.status}, status_code=status_code)
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code)


def _workers(services: Services) -> list[WorkerHealth]:
    leases = services.runtime.leases
    held = leases.held()
    now = datetime.now(UTC)
    rows = []
    for worker in leases.live_workers():
        ages = [lease.age_s for lease in held if lease.owner == worker.worker_id]
        rows.append(
            WorkerHealth(
                worker_id=worker.worker_id,
                role=worker.role,
                concurrency=worker.concurrency,
                sessions=worker.sessions,
                oldest_lease_s=round(max(ages), 3) if ages else None,
                seen_s_ago=round((now - worker.seen_at).total_seconds(), 3),
            )
        )
    return rows


def _line(name: str, value: float, **labels: object) -> str:
    if not labels:
        return f"{name} {value:g}"
    inner = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value:g}"


def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _view_metrics(services: Services) -> list[str]:
    with services.runtime.projector.pool.connection() as conn:
        sessions = conn.execute(
            "SELECT status, count(*) FROM session_index GROUP BY status"
        ).fetchall()
        steps = conn.execute("SELECT status, count(*) FROM step_history GROUP BY status").fetchall()
        filters = ", ".join(
            f"count(*) FILTER (WHERE duration_ms <= {int(b * 1000)})" for b in STEP_BUCKETS_S
        )
        durations = conn.execute(
            f"SELECT {filters}, count(*), coalesce(sum(duration_ms), 0) "  # noqa: S608
            "FROM step_history WHERE duration_ms IS NOT NULL"
        ).fetchone()
    lines = _header("stepline_sessions", "gauge", "Sessions by status.")
    lines += [_line("stepline_sessions", n, status=status) for status, n in sessions]
    lines += _header("stepline_steps", "gauge", "Steps by status (completed, failed, ...).")
    lines += [_line("stepline_steps", n, status=status) for status, n in steps]
    lines += _header("stepline_step_duration_seconds", "histogram", "Duration of finished steps.")
    assert durations is not None
    *cumulative, count, total_ms = durations
    for bound, n in zip(STEP_BUCKETS_S, cumulative, strict=True):
        lines.append(_line("stepline_step_duration_seconds_bucket", n, le=f"{bound:g}"))
    lines.append(_line("stepline_step_duration_seconds_bucket", count, le="+Inf"))
    lines.append(_line("stepline_step_duration_seconds_sum", total_ms / 1000))
    lines.append(_line("stepline_step_duration_seconds_count", count))
    return lines


def _log_metrics(services: Services) -> list[str]:
    statuses = services.runtime.projector.status()
    head = statuses[0].head if statuses else services.runtime.projector.head()
    lines = _header("stepline_events_appended_total", "counter", "Events in the log.")
    lines.append(_line("stepline_events_appended_total", head))
    lines += _header("stepline_projection_lag_events", "gauge", "Events a view has not applied.")
    lines += [_line("stepline_projection_lag_events", s.lag, view=s.name) for s in statuses]
    return lines


def _worker_metrics(services: Services) -> list[str]:
    """Every live worker of the deployment, from its row: one scrape sees them all."""
    workers = services.runtime.leases.live_workers()
    lines: list[str] = []
    for name, kind, text, value in (
        ("stepline_leases_held", "gauge", "Session leases a worker holds.", "sessions"),
        ("stepline_sessions_claimed_total", "counter", "Sessions a worker claimed.", "claimed"),
        ("stepline_takeovers_total", "counter", "Sessions taken from a dead owner.", "takeovers"),
        ("stepline_lease_renew_failures_total", "counter", "Failed heartbeats.", "renew_failures"),
        ("stepline_leases_lost_total", "counter", "Leases lost while driving.", "leases_lost"),
    ):
        lines += _header(name, kind, text)
        lines += [_line(name, getattr(w, value), worker=w.worker_id) for w in workers]
    return lines


def _http_metrics(metrics: HttpMetrics) -> list[str]:
    snapshot = metrics.snapshot()
    lines = _header("stepline_http_requests_total", "counter", "HTTP requests.")
    for (method, route, status), n in sorted(snapshot["counts"].items()):
        lines.append(
            _line("stepline_http_requests_total", n, method=method, route=route, status=status)
        )
    name = "stepline_http_request_duration_seconds"
    lines += _header(name, "histogram", "HTTP request latency.")
    for bound in LATENCY_BUCKETS_S:
        lines.append(_line(f"{name}_bucket", snapshot["buckets"].get(bound, 0), le=f"{bound:g}"))
    lines.append(_line(f"{name}_bucket", snapshot["observed"], le="+Inf"))
    lines.append(_line(f"{name}_sum", snapshot["total_s"]))
    lines.append(_line(f"{name}_count", snapshot["observed"]))
    return lines


def _stream_metrics(services: Services) -> list[str]:
    name = "stepline_stream_subscribers"
    lines = _header(name, "gauge", "Live SSE streams open on this process.")
    lines.append(_line(name, services.feed.subscriber_count()))
    return lines


@router.get(
    "/metrics",
    operation_id="getMetrics",
    response_class=PlainTextResponse,
    responses=problem_responses(401, 422),
)
def metrics(services: ServicesDep, operator: OperatorDep, request: Request) -> PlainTextResponse:
    """Prometheus metrics: sessions, steps, step durations, events, lag, leases, HTTP. Only
    with the operator's metrics key, or on the metrics port."""
    if not _sees_details(services, operator):
        raise ApiError.of(
            "UNAUTHORIZED",
            "/metrics needs the operator's metrics key (a tenant's key is not one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    services.read_your_writes()
    lines = _view_metrics(services) + _log_metrics(services) + _worker_metrics(services)
    lines += _stream_metrics(services) + _http_metrics(request.app.state.http)
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
