"""A loopback HTTP server for download tests: static files with Range support, plus misbehaving
routes (404, 500-then-OK, 429-then-OK, never answers, slow), and what a polite client must respect:
it counts requests in flight per Host header and records when each request came."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class ServerState:
    files: dict[str, Path]
    #: route -> how many 500s to send before serving it
    flaky: dict[str, int] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    #: route -> how many 429s (with ``retry_after`` seconds) to send before serving it
    limited: dict[str, int] = field(default_factory=dict)
    retry_after: float = 1.0
    #: Seconds a file body takes to send (so requests overlap and concurrency shows).
    body_seconds: float = 0.0
    #: Host -> routes being answered now, and the most at once: concurrent downloads per host
    #: (yt-dlp may open two requests for one video: a probe, then the download).
    active: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    peak: Counter[str] = field(default_factory=Counter)
    #: route -> (monotonic time, status) of every request
    log: dict[str, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            host = self.headers.get("Host", "").split(":")[0]
            route = self.path.split("?", 1)[0]
            with state.lock:
                state.active[host][route] += 1
                state.peak[host] = max(state.peak[host], len(+state.active[host]))
                state.headers.append(dict(self.headers))
            try:
                self._answer(head)
            finally:
                with state.lock:
                    state.active[host][route] -= 1

        def _answer(self, head: bool) -> None:
            route = self.path.split("?", 1)[0]
            state.hits[route] += 1
            if state.limited.get(route, 0) > 0:
                state.limited[route] -= 1
                state.log[route].append((time.monotonic(), 429))
                self.send_response(429)
                self.send_header("Retry-After", f"{state.retry_after:g}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state.log[route].append((time.monotonic(), 200))
            if route.startswith("/hang/"):
                state.stop.wait(60)
                return
            if state.flaky.get(route, 0) > 0:
                state.flaky[route] -= 1
                self._error(500)
                return
            path = state.files.get(route)
            if path is None:
                self._error(404)
                return
            data = path.read_bytes()
            start, end = 0, len(data) - 1
            status = 200
            if m := re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "")):
                start = int(m.group(1)) if m.group(1) else 0
                end = min(int(m.group(2)), end) if m.group(2) else end
                status = 206
                if start >= len(data):  # as real servers do: e.g. resuming a .part that is already whole
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            self.send_response(status)
            kinds = {".mp4": "video/mp4", ".html": "text/html; charset=utf-8", ".mkv": "video/x-matroska"}
            self.send_header("Content-Type", kinds.get(Path(route).suffix, "application/octet-stream"))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.end_headers()
            if not head:
                body = data[start:end + 1]
                if state.body_seconds > 0:
                    step = max(1, len(body) // 10)
                    for k in range(0, len(body), step):
                        self.wfile.write(body[k:k + step])
                        time.sleep(state.body_seconds / 10)
                else:
                    self.wfile.write(body)

        def _error(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@contextmanager
def serve(files: dict[str, Path], flaky: dict[str, int] | None = None, **options: Any
          ) -> Iterator[tuple[str, ServerState]]:
    state = ServerState(files=files, flaky=dict(flaky or {}), **options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    # Clients (yt-dlp probing a direct link, a killed CLI) hang up mid-body; that is not news.
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        state.stop.set()
        server.shutdown()
        server.server_close()
