"""Politeness per host, for bulk downloading from one site: at most ``download.max_per_host``
downloads at once from a host, ``download.sleep_s`` between the end of one and the start of the
next, and a pause as long as the server asks (``Retry-After``) or, for a 429 or a bot check without
one, an exponential pause, before anything else goes to that host. Other hosts are not held up
beyond the download workers this host occupies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

#: Longest pause one rate-limit answer imposes (a server asking for hours is obeyed up to this).
MAX_PAUSE_S = 600.0


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@dataclass
class _Host:
    slots: threading.BoundedSemaphore
    #: Monotonic time before which nothing goes to this host.
    not_before: float = 0.0
    #: Rate-limit answers in a row (resets on a success): the pause doubles with each.
    strikes: int = 0


@dataclass
class HostGate:
    max_per_host: int
    sleep_s: float
    #: First pause after a rate-limit answer without Retry-After.
    backoff_s: float = 5.0
    _hosts: dict[str, _Host] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: Set to stop waiting (the run is stopping).
    stop: threading.Event = field(default_factory=threading.Event)

    def _host(self, host: str) -> _Host:
        with self._lock:
            if host not in self._hosts:
                self._hosts[host] = _Host(threading.BoundedSemaphore(self.max_per_host))
            return self._hosts[host]

    @contextmanager
    def slot(self, url: str) -> Iterator[None]:
        """Hold one of the host's slots for a download, waiting for the host's pause first."""
        state = self._host(host_of(url))
        state.slots.acquire()
        try:
            while (wait := state.not_before - time.monotonic()) > 0 and not self.stop.is_set():
                self.stop.wait(wait)
            yield
        finally:
            with self._lock:
                state.not_before = max(state.not_before, time.monotonic() + self.sleep_s)
            state.slots.release()

    def succeeded(self, url: str) -> None:
        self._host(host_of(url)).strikes = 0

    def rate_limited(self, url: str, retry_after: float | None) -> float:
        """The host answered 429 or asked for a pause: nothing goes to it for a while. Returns the pause."""
        state = self._host(host_of(url))
        with self._lock:
            state.strikes += 1
            pause = retry_after if retry_after is not None else self.backoff_s * 2 ** (state.strikes - 1)
            pause = min(MAX_PAUSE_S, max(0.0, pause))
            state.not_before = max(state.not_before, time.monotonic() + pause)
        return pause
