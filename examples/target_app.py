"""A small web app for workflows to run against: a login form and a todo list.

    python examples/target_app.py [PORT]     (default 8765, on 127.0.0.1)

The demo user is `demo`; the password is $DEMO_PASSWORD (default `correct-horse`).

Its writes honour `Idempotency-Key`: a request repeated with the same key (a command re-sent
after a crash) gets the first answer again and changes nothing. `POST /effects` and
`GET /slow` need no login: they are what the worker and chaos tests count and wait on, and
`GET /effects` lists every delivery and every effect applied.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import uvicorn
from fastapi import Cookie, FastAPI, Header, HTTPException, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from api.server import serving_in_background

LOGIN_PAGE = """<!doctype html>
<title>Sign in</title>
<h1>Sign in</h1>
<form method="post" action="/login">
  <input name="user"> <input name="password" type="password"> <button>Sign in</button>
</form>
"""


class Credentials(BaseModel):
    user: str
    password: str


class NewTodo(BaseModel):
    title: str


class Effect(BaseModel):
    name: str


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
            item = {"id": len(items) + 1, "title": todo.title, "done": False}
            items.append(item)
            return item

        return deliveries.once(idempotency_key, {"todo": todo.title}, add)

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

    @app.get("/todos/{todo_id}")
    def get_todo(todo_id: int, session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        for item in todos.get(user_of(session), []):
            if item["id"] == todo_id:
                return item
        raise HTTPException(status_code=404, detail="no such todo")

    return app


@contextmanager
def serving(port: int = 0, password: str | None = None) -> Iterator[str]:
    """Serve the app on 127.0.0.1 in a background thread; yield its base URL."""
    with serving_in_background(create_app(password), port=port) as base_url:
        yield base_url


if __name__ == "__main__":
    uvicorn.run(
        create_app(), host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    )
