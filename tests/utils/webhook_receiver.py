"""A local webhook receiver for tests: records every POST, answers the statuses it is told to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered
    at: float  # when it arrived (time.time())


class Receiver:
    """``with Receiver(answer) as r``: ``r.url``; ``answer(path, attempt)`` -> the status to send."""

    def __init__(self, answer: Callable[[str, int], int] = lambda path, attempt: 200) -> None:
        self.answer = answer
        self.received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._changed:
                    attempt = sum(1 for r in receiver.received if r.path == self.path) + 1
                    status = receiver.answer(self.path, attempt)
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, status, time.time()))
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        """Block until ``condition(received)`` holds; AssertionError after ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: condition(self.received), timeout):
                raise AssertionError(f"the receiver did not get there in {timeout:.0f} s: {self.received}")
            return list(self.received)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
