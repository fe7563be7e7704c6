"""The HTTPS front of the simulated tenant: a threaded `http.server` on loopback with a
throwaway PKI, which turns each HTTP request into a `Request` for the tenant's pure core
and writes the `Response` back. Nothing here knows what the endpoints mean.
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from exporter.sim.ca import TestPki, write_test_pki
from exporter.sim.messages import Request, Response


class TenantServer:
    """Serves `handle` over HTTPS in a background thread, from `start()` until `stop()`."""

    def __init__(self, workdir: Path, handle: Callable[[Request], Response]) -> None:
        self._workdir = workdir
        self._handle = handle
        self._pki: TestPki | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def start(self, host: str, port: int) -> None:
        """Write a throwaway PKI into the workdir and serve HTTPS on host:port (0 = free)."""
        if self._server is not None:
            raise RuntimeError("the simulated tenant is already running")
        self._pki = write_test_pki(self._workdir, hostnames=(host, "127.0.0.1", "localhost"))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._pki.cert_file, self._pki.key_file)
        server_class = _Server6 if ":" in host else _Server
        server = server_class((host, port), _make_handler(self._handle))
        # Handshake lazily in the connection's own thread, so one stuck client cannot
        # block accept() for everyone else.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        bound_port = server.server_address[1]
        netloc = f"[{host}]" if ":" in host else host
        self._base_url = f"https://{netloc}:{bound_port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="simulated-tenant", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    @property
    def base_url(self) -> str:
        """`https://HOST:PORT` of the running server."""
        if self._base_url is None:
            raise RuntimeError("the simulated tenant has not been started")
        return self._base_url

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients must trust."""
        if self._pki is None:
            raise RuntimeError("the simulated tenant has not been started")
        return self._pki.ca_file


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Drop clients that hang up or fail the TLS handshake without a traceback."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


def _make_handler(handle: Callable[[Request], Response]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "siem-exporter-sim"
        sys_version = ""
        timeout = 30

        def _dispatch(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            response = handle(Request(self.command, self.path, headers, body))
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request logging: the stats endpoint is the record."""

    return Handler
