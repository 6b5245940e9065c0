"""One MCP client session on an event loop thread of its own.

The `mcp` SDK is asyncio; executors are called from the session threads of a worker. So each
connected server gets a thread running its own event loop, which opens the transport (starting
the server's process, or reaching its URL), holds the `ClientSession` for as long as the
connection lives, and closes both from the same task that opened them (anyio's cancel scopes
require it). The session thread sends calls to it with `run_coroutine_threadsafe` and waits.
`close()` tells the loop to leave the transport's context, which ends the server's process
(stdin closed, then its process group terminated) before the thread ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession
from mcp.shared.message import SessionMessage
from mcp.types import CallToolResult, PaginatedRequestParams, Tool

Streams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]
Transport = Callable[[], AbstractAsyncContextManager[Streams]]
"""Opens the connection to the server; closing it ends the server (a stdio server's process)."""

MAX_TOOL_PAGES = 20
GRACE_S = 5.0
"""Beyond a call's own timeout, how long the session thread waits for the loop's answer."""


class McpUnavailable(Exception):
    """The server could not be started or reached, or its connection broke."""


class McpConnection:
    """A started, initialised MCP server, until `close()`."""

    def __init__(self, transport: Transport, name: str, timeout_s: float) -> None:
        self._transport = transport
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._session: ClientSession | None = None
        self._ready: concurrent.futures.Future[list[Tool]] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, name=f"mcp-{name}", daemon=True)

    def start(self) -> list[Tool]:
        """Start the server and list its tools; McpUnavailable saying why it could not."""
        self._thread.start()
        try:
            return self._ready.result(timeout=self._timeout_s + GRACE_S)
        except concurrent.futures.TimeoutError:
            self.close()
            raise McpUnavailable(
                f"the MCP server did not answer within {self._timeout_s:g} s"
            ) from None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._session is not None

    def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """Call one tool and wait for its result; McpUnavailable if the connection broke."""
        session, loop = self._session, self._loop
        if session is None or loop is None or not self._thread.is_alive():
            raise McpUnavailable("the MCP server is no longer running")
        timeout = timedelta(seconds=self._timeout_s)
        future = asyncio.run_coroutine_threadsafe(
            session.call_tool(name, arguments, read_timeout_seconds=timeout), loop
        )
        try:
            return future.result(timeout=self._timeout_s + GRACE_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpUnavailable(f"{name} did not answer within {self._timeout_s:g} s") from None
        except Exception as error:  # the SDK's or the transport's, whatever broke the call
            raise McpUnavailable(f"{name} could not be called: {_said(error)}") from None

    def close(self) -> None:
        """Stop the server and the thread; waits until both are gone."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended: the server died
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.ident is not None:
            self._thread.join()

    # ---- on the loop's thread ------------------------------------------------------------

    def _serve(self) -> None:
        try:
            asyncio.run(self._connected())
        except BaseException as error:  # told to the caller, not lost in a thread
            if not self._ready.done():
                self._ready.set_exception(McpUnavailable(_said(error)))
        finally:
            self._session = None
            if not self._ready.done():
                self._ready.set_exception(McpUnavailable("the MCP server ended before it started"))

    async def _connected(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        timeout = timedelta(seconds=self._timeout_s)
        async with (
            self._transport() as (read, write),
            ClientSession(read, write, read_timeout_seconds=timeout) as session,
        ):
            with anyio.fail_after(self._timeout_s):
                await session.initialize()
                tools = await _all_tools(session)
            self._session = session
            self._ready.set_result(tools)
            await self._stopping.wait()


async def _all_tools(session: ClientSession) -> list[Tool]:
    listed = await session.list_tools()
    tools = list(listed.tools)
    for _ in range(MAX_TOOL_PAGES):
        if not listed.nextCursor:
            break
        listed = await session.list_tools(params=PaginatedRequestParams(cursor=listed.nextCursor))
        tools += listed.tools
    return tools


def _said(error: BaseException) -> str:
    """What went wrong, from the innermost error of anyio's exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if isinstance(error, TimeoutError):
        return "it did not answer in time"
    return str(error) or type(error).__name__
