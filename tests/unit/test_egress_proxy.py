"""The browser proxy's reading and rewriting of HTTP heads, with no connection."""

from __future__ import annotations

import pytest

from engine.executors.egress_proxy import BadRequest, ClosingResponse, RequestHead, authority


def test_a_response_head_is_rewritten_to_close_the_connection() -> None:
    response = ClosingResponse()
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n"
    )
    passed = response.feed(head[:20]) + response.feed(head[20:] + b"ok")
    assert passed == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    assert response.feed(b"HTTP/1.1 200 OK\r\n\r\n") == b"HTTP/1.1 200 OK\r\n\r\n"  # body bytes


def test_an_interim_response_passes_and_the_final_one_is_rewritten() -> None:
    passed = ClosingResponse().feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\n\r\n")
    assert passed == b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No\r\nConnection: close\r\n\r\n"


def test_a_protocol_switch_passes_untouched() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert ClosingResponse().feed(head + b"\x81\x00") == head + b"\x81\x00"


def test_a_request_head_is_read_with_its_headers() -> None:
    request = RequestHead.parse(
        b"GET ws://h/s HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    assert (request.method, request.target, request.version) == ("GET", "ws://h/s", "HTTP/1.1")
    assert request.header("host") == "h"
    assert request.wants_upgrade()


@pytest.mark.parametrize(
    ("target", "expected"),
    [("example.com:443", ("example.com", 443)), ("[::1]:8443", ("::1", 8443))],
)
def test_a_connect_target_is_a_host_and_a_port(target: str, expected: tuple[str, int]) -> None:
    assert authority(target) == expected


@pytest.mark.parametrize("target", ["example.com", "example.com:0", ":443", "h:99999"])
def test_a_connect_target_without_a_port_is_a_bad_request(target: str) -> None:
    with pytest.raises(BadRequest):
        authority(target)
