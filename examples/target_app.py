"""A small web app for workflows to run against: a login form and a todo list.

    python examples/target_app.py [PORT]     (default 8765, on 127.0.0.1)

The demo user is `demo`; the password is $DEMO_PASSWORD (default `correct-horse`). The JSON
API (`/login`, `/todos`) is what the HTTP demo drives; the same app as pages (`/app/login`,
`/app/todos`: forms, a button, a slow link) is what the browser demo drives. Each todo records
whether it came `via` the API or a form.

Its writes honour `Idempotency-Key`: a request repeated with the same key (a command re-sent
after a crash) gets the first answer again and changes nothing. `POST /effects` and
`GET /slow` need no login: they are what the worker and chaos tests count and wait on, and
`GET /effects` lists every delivery and every effect applied. `GET /flaky/{name}?failures=N`
answers 503 to its first N requests for `name`, then 200: a target that fails and recovers,
for retries. `GET /trace-echo` answers with the `traceparent` header it was sent (null if
none): what a traced target would continue the caller's trace from. `POST /totp-login` with
`{"code": "123456"}` answers 200 only for the current one-time code (the one before or after
too, for clock drift) of the TOTP seed $DEMO_TOTP_SEED (default `DEMO_TOTP_SEED` below), else
401; like a careless app it echoes the code it accepted, which Stepline must not record.
`/app/totp` is the same as a page: a code field and a Verify button.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

import pyotp
import uvicorn
from fastapi import Cookie, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel

from api.http.server import serving_in_background

LOGIN_PAGE = """<!doctype html>
<title>Sign in</title>
<h1>Sign in</h1>
<form method="post" action="/login">
  <input name="user"> <input name="password" type="password"> <button>Sign in</button>
</form>
"""


APP_LOGIN_PAGE = """<!doctype html>
<html lang="en"><title>Sign in · Todos</title>
<main>
<h1>Sign in</h1>
{problem}
<form method="post" action="/app/login">
  <label>User <input name="user" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button>Sign in</button>
</form>
</main></html>
"""

APP_TODOS_PAGE = """<!doctype html>
<html lang="en"><title>Todos</title>
<main>
<h1>Todos</h1>
<p>Signed in as {user}. <a href="/app/todos?delay_ms=1500">Refresh slowly</a></p>
<ul>{items}</ul>
<p>{left} left to do.</p>
<form method="post" action="/app/todos">
  <label>New todo <input name="title" required></label>
  <button>Add</button>
</form>
<form method="post" action="/app/todos/done">
  <button>Mark all done</button>
</form>
</main></html>
"""


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each)."""
    fields = parse_qs((await request.body()).decode("utf-8"))
    return {name: values[0] for name, values in fields.items()}


class Credentials(BaseModel):
    user: str
    password: str


class NewTodo(BaseModel):
    title: str


class Effect(BaseModel):
    name: str


class TotpCode(BaseModel):
    code: str


DEMO_TOTP_SEED = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
"""The demo's TOTP seed (base32; a demo value, not a secret)."""

APP_TOTP_PAGE = """<!doctype html>
<html lang="en"><title>One-time code</title>
<main>
<h1>Enter your one-time code</h1>
{result}
<form method="post" action="/app/totp">
  <label>Code <input name="code" autocomplete="one-time-code" inputmode="numeric"></label>
  <button>Verify</button>
</form>
</main></html>
"""

T = TypeVar("T")
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


class Deliveries:
    """Every write delivered, and the first answer per idempotency key."""

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []
        self.answers: dict[str, Any] = {}
        self.lock = threading.Lock()

    def once(self, key: str | None, what: dict[str, Any], apply: Callable[[], T]) -> T:
        with self.lock:
            self.delivered.append({**what, "key": key})
            if key is not None and key in self.answers:
                answer: T = self.answers[key]
                return answer
            answer = apply()
            if key is not None:
                self.answers[key] = answer
            return answer


def create_app(password: str | None = None) -> FastAPI:
    app = FastAPI(title="Stepline example target")
    expected = password or os.environ.get("DEMO_PASSWORD", "correct-horse")
    sessions: dict[str, str] = {}
    todos: dict[str, list[dict[str, Any]]] = {}
    deliveries = Deliveries()
    effects: list[dict[str, Any]] = []

    def user_of(session: str | None) -> str:
        if session is None or session not in sessions:
            raise HTTPException(status_code=401, detail="sign in first")
        return sessions[session]

    @app.get("/login", response_class=HTMLResponse)
    def login_page() -> str:
        return LOGIN_PAGE

    @app.post("/login")
    def login(credentials: Credentials, response: Response) -> dict[str, str]:
        if credentials.user != "demo" or credentials.password != expected:
            raise HTTPException(status_code=401, detail="wrong user or password")
        token = secrets.token_hex(16)
        sessions[token] = credentials.user
        response.set_cookie("session", token, httponly=True)
        return {"user": credentials.user}

    @app.get("/todos")
    def list_todos(session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        items = todos.get(user_of(session), [])
        return {"items": items, "count": len(items)}

    @app.post("/todos", status_code=201)
    def add_todo(
        todo: NewTodo,
        session: Annotated[str | None, Cookie()] = None,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        items = todos.setdefault(user_of(session), [])

        def add() -> dict[str, Any]:
            item = {"id": len(items) + 1, "title": todo.title, "done": False, "via": "api"}
            items.append(item)
            return item

        return deliveries.once(idempotency_key, {"todo": todo.title}, add)

    add_pages(app, expected, sessions, todos)

    @app.post("/effects", status_code=201)
    def add_effect(effect: Effect, idempotency_key: IdempotencyKey = None) -> dict[str, Any]:
        def apply() -> dict[str, Any]:
            effects.append({"name": effect.name, "key": idempotency_key})
            return {"applied": effect.name, "number": len(effects)}

        return deliveries.once(idempotency_key, {"effect": effect.name}, apply)

    @app.get("/effects")
    def list_effects() -> dict[str, Any]:
        with deliveries.lock:
            return {"applied": list(effects), "delivered": list(deliveries.delivered)}

    @app.get("/slow")
    async def slow(ms: int = 100) -> dict[str, int]:
        await asyncio.sleep(min(ms, 10_000) / 1000)
        return {"slept_ms": ms}

    asked: dict[str, int] = {}
    asked_lock = threading.Lock()

    @app.get("/flaky/{name}")
    def flaky(name: str, failures: int = 2) -> JSONResponse:
        with asked_lock:
            asked[name] = count = asked.get(name, 0) + 1
        status = 503 if count <= failures else 200
        return JSONResponse({"name": name, "request": count}, status_code=status)

    @app.get("/trace-echo")
    def trace_echo(traceparent: Annotated[str | None, Header()] = None) -> dict[str, str | None]:
        return {"traceparent": traceparent}

    totp = pyotp.TOTP(os.environ.get("DEMO_TOTP_SEED", DEMO_TOTP_SEED))

    @app.post("/totp-login")
    def totp_login(body: TotpCode) -> dict[str, Any]:
        if not totp.verify(body.code, valid_window=1):
            raise HTTPException(status_code=401, detail="wrong or expired one-time code")
        return {"verified": True, "accepted": body.code}

    @app.get("/app/totp", response_class=HTMLResponse)
    def app_totp_page() -> str:
        return APP_TOTP_PAGE.format(result="")

    @app.post("/app/totp", response_class=HTMLResponse)
    async def app_totp(request: Request) -> HTMLResponse:
        code = (await form_fields(request)).get("code", "")
        if not totp.verify(code, valid_window=1):
            result = '<p role="alert">Wrong or expired code.</p>'
            return HTMLResponse(APP_TOTP_PAGE.format(result=result), status_code=401)
        return HTMLResponse(APP_TOTP_PAGE.format(result=f"<p>Verified with {escape(code)}.</p>"))

    @app.get("/todos/{todo_id}")
    def get_todo(todo_id: int, session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        for item in todos.get(user_of(session), []):
            if item["id"] == todo_id:
                return item
        raise HTTPException(status_code=404, detail="no such todo")

    return app


def add_pages(
    app: FastAPI, expected: str, sessions: dict[str, str], todos: dict[str, list[dict[str, Any]]]
) -> None:
    """The same app as HTML pages, for the browser: sign in, list, add, mark all done."""

    def signed_in(session: str | None) -> str | None:
        return sessions.get(session) if session is not None else None

    @app.get("/app/login", response_class=HTMLResponse)
    def app_login_page() -> str:
        return APP_LOGIN_PAGE.format(problem="")

    @app.post("/app/login", response_model=None)
    async def app_login(request: Request) -> Response:
        fields = await form_fields(request)
        if fields.get("user") != "demo" or fields.get("password") != expected:
            problem = '<p role="alert">Wrong user or password.</p>'
            return HTMLResponse(APP_LOGIN_PAGE.format(problem=problem), status_code=401)
        token = secrets.token_hex(16)
        sessions[token] = "demo"
        response = RedirectResponse("/app/todos", status_code=303)
        response.set_cookie("session", token, httponly=True)
        return response

    @app.get("/app/todos", response_model=None)
    async def app_todos(
        session: Annotated[str | None, Cookie()] = None, delay_ms: int = 0
    ) -> Response:
        user = signed_in(session)
        if user is None:
            return RedirectResponse("/app/login", status_code=303)
        await asyncio.sleep(min(delay_ms, 10_000) / 1000)
        items = todos.get(user, [])
        rows = "".join(
            f'<li><label><input type="checkbox" disabled{" checked" if item["done"] else ""}> '
            f"{escape(item['title'])}</label></li>"
            for item in items
        )
        left = sum(not item["done"] for item in items)
        return HTMLResponse(APP_TODOS_PAGE.format(user=escape(user), items=rows, left=left))

    @app.post("/app/todos", response_model=None)
    async def app_add_todo(
        request: Request, session: Annotated[str | None, Cookie()] = None
    ) -> Response:
        user = signed_in(session)
        title = (await form_fields(request)).get("title", "").strip()
        if user is not None and title:
            items = todos.setdefault(user, [])
            items.append({"id": len(items) + 1, "title": title, "done": False, "via": "form"})
        return RedirectResponse("/app/todos", status_code=303)

    @app.post("/app/todos/done", response_model=None)
    def app_all_done(session: Annotated[str | None, Cookie()] = None) -> Response:
        user = signed_in(session)
        for item in todos.get(user or "", []):
            item["done"] = True
        return RedirectResponse("/app/todos", status_code=303)


@contextmanager
def serving(port: int = 0, password: str | None = None) -> Iterator[str]:
    """Serve the app on 127.0.0.1 in a background thread; yield its base URL."""
    with serving_in_background(create_app(password), port=port) as base_url:
        yield base_url


if __name__ == "__main__":
    uvicorn.run(
        create_app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    )
