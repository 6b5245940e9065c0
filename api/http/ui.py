"""/ui: the operator's dashboard, served by `stepline serve` next to the API it reads.

The pages are shells rendered from templates; they hold no data. Their scripts read the JSON
API and the event stream with the key the person entered (kept in the browser's session
storage), so the dashboard sees exactly what that key may see, and dev mode needs no key at
all. Nothing is loaded from anywhere but this server: /docs too serves Swagger UI from its own
copy (ReDoc is off), under the same Content-Security-Policy. The statuses the scripts compare
with come from the domain, in a module this server writes (`/ui/static/statuses.js`).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from uuid import UUID

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from domain.session import ENDED, SessionStatus, StepViewStatus, values

FILES = Path(__file__).resolve().parent / "ui_files"
templates = Jinja2Templates(directory=FILES / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

# Scripts and styles only from this server, no inline script, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _members(enum: type[Enum]) -> str:
    return json.dumps({member.name: member.value for member in enum})


STATUSES_MODULE = f"""\
// The statuses of sessions and of steps as the API spells them, written by the server from
// its domain (domain/session.py). StepStatus is the API's: a step as the step history shows it.
export const SessionStatus = Object.freeze({_members(SessionStatus)});
export const StepStatus = Object.freeze({_members(StepViewStatus)});
export const ENDED = Object.freeze({json.dumps(values(ENDED))});
"""


def _page(request: Request, template: str, title: str, **context: object) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"title": title, "page": template.removesuffix(".html"), **context},
        headers=SECURITY_HEADERS,
    )


@router.get("", response_class=HTMLResponse)
def sessions_page(request: Request) -> HTMLResponse:
    statuses = [status.value for status in SessionStatus]
    return _page(request, "sessions.html", "Sessions", statuses=statuses)


@router.get("/sessions/{session_id}", response_class=HTMLResponse)
def session_page(request: Request, session_id: UUID) -> HTMLResponse:
    return _page(request, "session.html", "Session", session_id=session_id)


@router.get("/batches", response_class=HTMLResponse)
def batches_page(request: Request) -> HTMLResponse:
    return _page(request, "batches.html", "Batches")


@router.get("/batches/{batch_id}", response_class=HTMLResponse)
def batch_page(request: Request, batch_id: UUID) -> HTMLResponse:
    return _page(request, "batch.html", "Batch", batch_id=batch_id)


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request) -> HTMLResponse:
    return _page(request, "schedules.html", "Schedules")


@router.get("/workflows", response_class=HTMLResponse)
def workflows_page(request: Request) -> HTMLResponse:
    return _page(request, "workflows.html", "Workflows")


@router.get("/workflows/new", response_class=HTMLResponse)
def new_workflow_page(request: Request) -> HTMLResponse:
    """The workflow editor, empty (routed before a workflow named "new")."""
    return _page(request, "editor.html", "New workflow", workflow_name="")


@router.get("/workflows/{name}/edit", response_class=HTMLResponse)
def edit_workflow_page(request: Request, name: str) -> HTMLResponse:
    """The workflow editor on the workflow's current version; the name is only handed to the
    script (escaped), which loads the version with the person's key."""
    return _page(request, "editor.html", "Edit workflow", workflow_name=name)


@router.get("/workflows/{name}", response_class=HTMLResponse)
def workflow_page(request: Request, name: str) -> HTMLResponse:
    """A registered workflow's versions, documents, diffs, rollback and run; the name is only
    handed to the script (escaped), which asks the API for it with the person's key."""
    return _page(request, "workflow.html", "Workflow", workflow_name=name)


@router.get("/analytics", response_class=HTMLResponse)
def analytics_page(request: Request) -> HTMLResponse:
    return _page(request, "analytics.html", "Analytics")


@router.get("/analytics/{name}", response_class=HTMLResponse)
def workflow_analytics_page(request: Request, name: str) -> HTMLResponse:
    """One workflow's analytics; the name is only handed to the script (escaped)."""
    return _page(request, "analytics_workflow.html", "Workflow analytics", workflow_name=name)


@router.get("/learned", response_class=HTMLResponse)
def learned_page(request: Request) -> HTMLResponse:
    """The tenant's learned actions (the action cache): their commands, hits, forgetting."""
    return _page(request, "learned.html", "Learned actions")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> HTMLResponse:
    return _page(request, "audit.html", "Audit trail")


@router.get("/static/statuses.js")
def statuses_module() -> Response:
    """The domain's statuses, for the scripts to import (routed before the static files)."""
    return Response(STATUSES_MODULE, media_type="text/javascript")


def docs_page(request: Request) -> HTMLResponse:
    """The API's reference, Swagger UI over /openapi.json."""
    return _page(request, "docs.html", "API reference")


def favicon() -> FileResponse:
    """The icon a browser asks every page of this server for."""
    return FileResponse(FILES / "static" / "favicon.ico", media_type="image/x-icon")


def install(app: FastAPI) -> None:
    """The dashboard and /docs; build the app with `docs_url=None, redoc_url=None`."""
    app.include_router(router)
    app.add_api_route("/docs", docs_page, include_in_schema=False, methods=["GET"])
    app.add_api_route("/favicon.ico", favicon, include_in_schema=False, methods=["GET"])
    app.mount("/ui/static", StaticFiles(directory=FILES / "static"), name="ui-static")
    app.add_api_route(
        "/", lambda: RedirectResponse("/ui"), include_in_schema=False, methods=["GET"]
    )
