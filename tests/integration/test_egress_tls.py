"""The checked transport connects by address yet speaks to the host by name: TLS's server
name and the Host header stay the URL's, so certificates and virtual hosts work."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.tenancy.egress import EgressPolicy, checked_transport


class TlsServer(ThreadingHTTPServer):
    def __init__(self, context: ssl.SSLContext) -> None:
        self.names: list[str | None] = []
        self.hosts: list[str | None] = []
        context.sni_callback = self._server_name
        self.context = context
        super().__init__(("127.0.0.1", 0), HostHandler)

    def _server_name(self, sock: Any, name: str | None, context: Any) -> None:
        self.names.append(name)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), address


class HostHandler(BaseHTTPRequestHandler):
    server: TlsServer

    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `localhost`, made by the system's openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[TlsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = TlsServer(context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_checked_https_request_keeps_the_name_for_sni_and_host(
    tls_server: TlsServer, certificate: tuple[Path, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    port = tls_server.server_address[1]
    transport = checked_transport(EgressPolicy.of(["localhost"]), trusting)
    with httpx.Client(transport=transport) as client:
        response = client.get(f"https://localhost:{port}/")
    assert (response.status_code, response.text) == (200, "ok")
    assert tls_server.names == ["localhost"]
    assert tls_server.hosts == [f"localhost:{port}"]
