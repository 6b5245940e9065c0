"""A small web app for workflows to run against: a login form and a todo list.

    python examples/target_app.py [PORT]     (default 8765, on 127.0.0.1)

The demo user is `demo`; the password is $DEMO_PASSWORD (default `correct-horse`).
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Cookie, FastAPI, HTTPException, Response
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


def create_app(password: str | None = None) -> FastAPI:
    app = FastAPI(title="Stepline example target")
    expected = password or os.environ.get("DEMO_PASSWORD", "correct-horse")
    sessions: dict[str, str] = {}
    todos: dict[str, list[dict[str, Any]]] = {}

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
    def add_todo(todo: NewTodo, session: Annotated[str | None, Cookie()] = None) -> dict[str, Any]:
        items = todos.setdefault(user_of(session), [])
        item = {"id": len(items) + 1, "title": todo.title, "done": False}
        items.append(item)
        return item

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
