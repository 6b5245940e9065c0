"""A small MCP tool server for the examples and tests: arithmetic and a to-do list.

It speaks MCP over stdio (the official SDK's FastMCP) and keeps its to-do list in memory, so
each process has its own: Stepline starts one per session run (see the README's "MCP tool
servers"). Run it jailed by a workflow with `config.mcp.command: [python, mcp_server.py]`, or
serve it over streamable HTTP on loopback with `python mcp_server.py --http 8766` (then
`config.mcp.url: http://127.0.0.1:8766/mcp`, for a tenant whose egress allows loopback).
"""

from __future__ import annotations

import os
import resource
import sys
import time
import uuid

from mcp.server.fastmcp import FastMCP

server = FastMCP("stepline-example")
todos: list[str] = []
STARTED = uuid.uuid4().hex
"""Which process this is: a server started again answers with another."""


@server.tool()
def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


@server.tool()
def todo_add(title: str) -> str:
    """Add a to-do item; returns how many there are."""
    todos.append(title)
    return f"added {title!r}; {len(todos)} to do"


@server.tool()
def todo_list() -> list[str]:
    """The to-do items, oldest first."""
    return list(todos)


@server.tool()
def greeting_from_env() -> str:
    """What the server was given in its environment: GREETING, and which variables it has."""
    return f"{os.environ.get('GREETING', '')} | {' '.join(sorted(os.environ))}"


@server.tool()
def pause(ms: int) -> str:
    """Wait `ms` milliseconds, then say which server process answered."""
    time.sleep(ms / 1000)
    return f"paused {ms} ms in server {STARTED}"


@server.tool()
def server_id() -> str:
    """Which server process this is."""
    return STARTED


@server.tool()
def own_process() -> dict[str, object]:
    """For tests: the program this process was started as, and its CPU and file-size limits."""
    with open("/proc/self/cmdline", "rb") as cmdline:
        program = cmdline.read().split(b"\0")[0].decode()
    cpu, fsize = resource.RLIMIT_CPU, resource.RLIMIT_FSIZE
    return {
        "program": program,
        "cpu": resource.getrlimit(cpu)[1],
        "fsize": resource.getrlimit(fsize)[1],
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.settings.port = int(sys.argv[2])
        server.run("streamable-http")
    else:
        server.run("stdio")
