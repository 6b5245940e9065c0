"""The floor under `bench.stream`: what commit -> client p99 is left when the server does
nothing but write.

    python -m bench.stream_floor [--subscribers 1000] [--sessions 10] [--events 162]
                                 [--rate 56] [--clients 2]

A bare uvloop server, no database, no worker, no feed, writes `bench.stream`'s traffic: each of
`--sessions` sessions an event every 1/`--rate` s (an SSE frame of the size Stepline sends,
stamped just before it is written), `--events` events each, to every subscriber of that session,
in HTTP/1.1 chunks. The subscribers are `bench.stream`'s own clients, in `--clients` processes
on the same machine. Whatever p99 this prints, Stepline's stream cannot go below it on this
machine with these clients: it is what writing and reading that many frames costs here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
from datetime import UTC, datetime
from typing import cast

import uvloop

from bench.api import percentiles
from bench.stream import subscriber_process

HEADER = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


class Subscribers:
    def __init__(self) -> None:
        self.by_session: dict[str, list[asyncio.Transport]] = {}

    def count(self) -> int:
        return sum(len(transports) for transports in self.by_session.values())


class StreamProtocol(asyncio.Protocol):
    """Answers `GET /v1/sessions/{id}/stream` with the headers, then joins its session."""

    def __init__(self, subscribers: Subscribers) -> None:
        self.subscribers = subscribers
        self.request = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.request += data
        if b"\r\n\r\n" in self.request:
            session_id = self.request.split(b" ")[1].split(b"/")[3].decode()
            self.transport.write(HEADER)
            self.subscribers.by_session.setdefault(session_id, []).append(self.transport)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _session(
    subscribers: list[asyncio.Transport], arguments: argparse.Namespace, offset_s: float
) -> None:
    await asyncio.sleep(offset_s)
    for version in range(1, arguments.events + 1):
        kind = "Completed" if version == arguments.events else "CommandFinished"
        stamp = datetime.now(UTC).isoformat()
        data = json.dumps({"type": kind, "version": version, "timestamp": stamp, "x": "y" * 300})
        frame = _chunk(f"id: {version}\nevent: {kind}\ndata: {data}\n\n".encode())
        for transport in subscribers:
            if not transport.is_closing():
                transport.write(frame)
        await asyncio.sleep(1 / arguments.rate)


async def run(arguments: argparse.Namespace) -> list[float]:
    loop = asyncio.get_running_loop()
    subscribers = Subscribers()
    server = await loop.create_server(lambda: StreamProtocol(subscribers), "127.0.0.1", 0)
    base_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    sessions = [f"s{i}" for i in range(arguments.sessions)]
    streams = [sessions[n % len(sessions)] for n in range(arguments.subscribers)]
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    clients = [
        multiprocessing.Process(
            target=subscriber_process, args=(base_url, streams[k :: arguments.clients], results)
        )
        for k in range(arguments.clients)
    ]
    for client in clients:
        client.start()
    while subscribers.count() < arguments.subscribers:
        await asyncio.sleep(0.05)
    gap_s = 1 / arguments.rate / len(sessions)  # spread over one event's time, as bench.stream
    await asyncio.gather(
        *(
            _session(subscribers.by_session[session], arguments, n * gap_s)
            for n, session in enumerate(sessions)
        )
    )
    samples = []
    for _ in clients:
        samples += await loop.run_in_executor(None, results.get)
    server.close()
    return [(received - committed) * 1000 for committed, received in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--events", type=int, default=162, help="per session")
    parser.add_argument("--rate", type=float, default=56.0, help="events/s per session")
    parser.add_argument("--clients", type=int, default=2, help="subscriber processes")
    arguments = parser.parse_args()
    if arguments.subscribers < arguments.sessions:
        parser.error("--subscribers must be at least --sessions: each session has one")
    latencies = uvloop.run(run(arguments))
    p50, p99 = percentiles(latencies)
    print(
        f"floor, a bare server: {arguments.sessions} sessions x {arguments.rate:g} events/s, "
        f"{arguments.subscribers} subscribers, on {os.cpu_count()} cores"
    )
    print(
        f"SSE write -> client: {len(latencies)} frames, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )


if __name__ == "__main__":
    main()
