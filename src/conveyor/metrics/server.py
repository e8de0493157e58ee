"""The HTTP server of ``/metrics``, ``/healthz`` and ``/readyz``.

It runs in daemon threads of its own, not on the worker's event loop: a scrape or a probe is
answered even while the loop is stuck (and ``/healthz`` then says so), and serving it never
delays a job. The standard library's threading server, bounded: at most :data:`MAX_CLIENTS`
requests are served at once (a flood gets its connections closed, not a thread each), and a
client that sends nothing is dropped after :data:`CLIENT_TIMEOUT` seconds.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from conveyor.metrics.families import Families
from conveyor.metrics.health import HealthMonitor, Report

log = logging.getLogger("conveyor.metrics")

MAX_CLIENTS: Final = 16
CLIENT_TIMEOUT: Final = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = MAX_CLIENTS

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        families: Families,
        health: HealthMonitor,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.registry = registry
        self.families = families
        self.health = health
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: the client retries
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    timeout = CLIENT_TIMEOUT
    protocol_version = "HTTP/1.1"

    @property
    def app(self) -> _Server:
        assert isinstance(self.server, _Server)
        return self.server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._metrics()
            elif path in ("/healthz", "/livez"):
                self._report(self.app.health.liveness())
            elif path == "/readyz":
                self._report(self.app.health.readiness())
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8", b"/metrics /healthz /readyz\n")
            else:
                self._send(
                    404, "text/plain; charset=utf-8", b"not found: /metrics /healthz /readyz\n"
                )
        except Exception as exc:  # a bug here must not kill the server thread silently
            log.exception("serving %s failed", path)
            self._send(500, "text/plain; charset=utf-8", f"{type(exc).__name__}\n".encode())

    def _metrics(self) -> None:
        health = self.app.health
        health.ping(wait=0.0)  # a fresh measurement for the next scrape, never a wait
        lag = max(health.lag or 0.0, health.pending_for())
        self.app.families.loop_lag.set(lag)
        self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.app.registry))

    def _report(self, report: Report) -> None:
        body = json.dumps(report.as_json(), indent=2).encode() + b"\n"
        self._send(200 if report.ok else 503, "application/json", body)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics server: " + format, *args)


class MetricsServer:
    """Serves one worker's registry and health; :attr:`port` is the bound port (useful when
    asked for port 0: any free one)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        registry: CollectorRegistry,
        families: Families,
        health: HealthMonitor,
    ) -> None:
        self._server = _Server((host, port), registry, families, health)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"conveyor-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
