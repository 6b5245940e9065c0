"""The HTTP connections a worker keeps between sessions: one pool per tenant and egress policy.

Each session's HTTP executor has a client of its own (its cookies, its timeouts), but sends
on a lease of the pool kept for its tenant under its egress policy, so the sessions of one
tenant calling one service reuse a kept-alive connection instead of opening one each. A pool
is never shared by two tenants, nor by two policies: a kept connection passed the policy of
its pool when it was opened, so only a session under that same policy may send on it, and
every new connection passes it as before (CheckedBackend: the addresses it decided on).

A kept connection the server closes just as a session sends on it (its keep-alive ran out
at that moment) gets the request and answers nothing. Such a request is sent once more if its
method is idempotent (RFC 9110: GET, HEAD, OPTIONS, TRACE, PUT, DELETE), as HTTP clients
retry them: the server may also have acted on it before it closed, and only for those is a
second time the same as once. A POST or PATCH is never sent again, nor is a request that
failed on a connection opened for it.

Bounded: at most `most_pools` pools (the least recently leased one goes first), each keeping
at most `keepalive_per_pool` idle connections for `keepalive_expiry_s`; a pool no session
has used for that long is closed at the next lease; all are closed with the task loop. A
pool let go while sessions still use it is closed when the last of them is done with it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from engine.executors.http import tls_context
from engine.tenancy.egress import CheckedBackend, EgressPolicy, checked_transport

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
"""The methods whose request is sent again after a kept connection closed unanswered."""

PoolKey = tuple[str, tuple[str, ...]]
"""A tenant and its egress allow-list, of which its egress policy is made (EgressPolicy.of)."""


class OpeningsSeen(CheckedBackend):
    """A CheckedBackend that counts the connections each thread opens through it: a request
    that opened none went out on a kept connection."""

    def __init__(self, policy: EgressPolicy) -> None:
        super().__init__(policy)
        self._here = threading.local()

    def opened_here(self) -> int:
        return getattr(self._here, "opened", 0)

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self._here.opened = self.opened_here() + 1
        return super().connect_tcp(*args, **kwargs)


@dataclass
class KeptPool:
    policy: EgressPolicy
    backend: OpeningsSeen
    transport: httpx.HTTPTransport
    users: int = 0
    last_used: float = 0.0
    retired: bool = False
    """Let go by the worker: closed once its last user is done with it."""


class LeasedTransport(httpx.BaseTransport):
    """A session's use of a kept pool: its requests go to the pool's connections, and
    closing it (with the session's client) gives the pool back instead of closing it."""

    def __init__(self, pools: ConnectionPools, kept: KeptPool) -> None:
        self._pools = pools
        self._kept: KeptPool | None = kept
        self.policy = kept.policy
        """The egress policy every connection of the pool passed."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        kept = self._kept
        if kept is None:
            raise httpx.TransportError("this session's connections were given back")
        opened = kept.backend.opened_here()
        try:
            return kept.transport.handle_request(request)
        except (httpx.ReadError, httpx.RemoteProtocolError) as error:
            on_kept = kept.backend.opened_here() == opened
            if not (on_kept and request.method in IDEMPOTENT and _unanswered(error)):
                raise
        return kept.transport.handle_request(request)  # once more, whatever comes of it

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            self._pools.give_back(kept)


class ConnectionPools:
    """A task loop's kept pools, one per tenant and egress allow-list (see the module)."""

    def __init__(
        self,
        *,
        most_pools: int = 32,
        keepalive_per_pool: int = 8,
        keepalive_expiry_s: float = 1.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`keepalive_expiry_s`: under the 2 s after which the shortest-lived of common servers
        (gunicorn; uvicorn and Node wait 5 s) drop an idle connection, so that a session
        seldom sends on one being closed."""
        self.most_pools = most_pools
        self.keepalive_expiry_s = keepalive_expiry_s
        # No cap on connections in use: a session never waits for another's, as with a
        # pool of its own; only the idle ones kept are capped.
        self.limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=keepalive_per_pool,
            keepalive_expiry=keepalive_expiry_s,
        )
        self.clock = clock
        self._pools: OrderedDict[PoolKey, KeptPool] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def lease(self, tenant: str, egress_allow: tuple[str, ...]) -> LeasedTransport:
        """A transport on the pool of `tenant` under the egress policy of `egress_allow`
        (InvalidEgressEntry if it has a bad entry); close it when done."""
        key = (tenant, egress_allow)
        with self._lock:
            kept = self._pools.pop(key, None)
            if kept is None:
                policy = EgressPolicy.of(egress_allow)
                backend = OpeningsSeen(policy)
                transport = checked_transport(policy, tls_context(), self.limits, backend=backend)
                kept = KeptPool(policy, backend, transport)
            kept.users += 1
            if self._closed:  # the task loop has closed: a pool for this session alone
                kept.retired = True
                return LeasedTransport(self, kept)
            self._pools[key] = kept  # the most recently leased last
            unused = self._let_go(self.clock())
        for pool in unused:
            pool.transport.close()
        return LeasedTransport(self, kept)

    def give_back(self, kept: KeptPool) -> None:
        with self._lock:
            kept.users -= 1
            kept.last_used = self.clock()
            unused = kept.retired and kept.users == 0
        if unused:
            kept.transport.close()

    def close(self) -> None:
        """Close every pool (one still in use once its sessions are done with it)."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._pools.clear()
            for kept in pools:
                kept.retired = True
            unused = [kept for kept in pools if kept.users == 0]
        for kept in unused:
            kept.transport.close()

    def kept(self) -> int:
        """How many pools are kept."""
        return len(self._pools)

    def _let_go(self, now: float) -> list[KeptPool]:
        """Retire the pools beyond the bound (least recently leased first) and those idle for
        longer than a connection is kept; those no session uses are returned, to be closed."""
        unused: list[KeptPool] = []
        excess = len(self._pools) - self.most_pools
        for key, kept in list(self._pools.items()):
            idle = kept.users == 0 and now - kept.last_used > self.keepalive_expiry_s
            if excess > 0 or idle:
                excess -= 1
                del self._pools[key]
                kept.retired = True
                if kept.users == 0:
                    unused.append(kept)
        return unused


def _unanswered(error: httpx.HTTPError) -> bool:
    """The connection ended before any answer: reset, or closed before a response began."""
    return isinstance(error, httpx.ReadError) or "without sending a response" in str(error)
