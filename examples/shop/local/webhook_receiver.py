"""A webhook receiver, as a customer of the shop would run one: it verifies each delivery's
HMAC-SHA256 signature with the secret it was given at registration. Its endpoints behave as
their names say: ``/hooks/ok`` accepts, ``/hooks/flaky`` answers 503 to the first request of
each delivery and accepts the next (a transient outage), ``/hooks/gone`` answers 410 Gone."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from examples.shop.worker.signing import SIGNATURE_HEADER, verify


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    endpoint: str  # ok, flaky or gone
    delivery_id: str
    verified: bool
    status: int


class WebhookReceiver:
    """``with WebhookReceiver() as receiver:`` serves HTTP on 127.0.0.1 in a thread."""

    BEHAVIOURS = ("ok", "flaky", "gone")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: dict[str, str] = {}  # endpoint name -> its secret
        self._requests: list[ReceivedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{endpoint}"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self.lock:
            return list(self._requests)

    def _answer(self, endpoint: str, delivery_id: str, body: bytes, signature: str) -> int:
        with self.lock:
            secret = self.secrets.get(endpoint)
            verified = secret is not None and verify(secret, body, signature)
            seen = any(r.delivery_id == delivery_id for r in self._requests)
            if not verified:
                status = 401
            elif endpoint == "gone":
                status = 410
            elif endpoint == "flaky" and not seen:
                status = 503
            elif endpoint in self.BEHAVIOURS:
                status = 200
            else:
                status = 404
            self._requests.append(ReceivedRequest(endpoint, delivery_id, verified, status))
            return status

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                endpoint = self.path.removeprefix("/hooks/")
                status = receiver._answer(
                    endpoint,
                    self.headers.get("Shop-Delivery", ""),
                    body,
                    self.headers.get(SIGNATURE_HEADER, ""),
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the example prints its own summary

        return Handler
