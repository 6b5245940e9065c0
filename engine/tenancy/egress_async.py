"""The egress filter for asyncio clients (an MCP server reached over streamable HTTP): the same
decision as `checked_transport`, made before an `httpx.AsyncClient` connects."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable

import anyio.to_thread
import httpcore
import httpx
from httpcore import SOCKET_OPTION

from engine.tenancy.egress import EgressPolicy


class AsyncCheckedBackend(httpcore.AnyIOBackend):
    """httpcore's anyio backend, connecting only to the addresses `policy` decided on."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:  # the lookup blocks: off the event loop
            addresses = await anyio.to_thread.run_sync(self.policy.addresses, host, port)
        except socket.gaierror as error:
            raise httpcore.ConnectError(f"{host} does not resolve: {error}") from None
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        raise failure


def checked_async_transport(
    policy: EgressPolicy, ssl_context: ssl.SSLContext
) -> httpx.AsyncHTTPTransport:
    """An httpx async transport whose every connection passes `policy`; never a proxy from
    the environment."""
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
    transport._pool = httpcore.AsyncConnectionPool(  # as `checked_transport` does, async
        ssl_context=ssl_context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=AsyncCheckedBackend(policy),
    )
    return transport
