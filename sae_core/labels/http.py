"""The HTTP client under the labelling `openai.OpenAI` client: a wall-clock deadline per request and no
redirects.

A timeout in httpx bounds each socket operation, not the request: an endpoint sending one byte a
second never trips a 3 s read timeout and held a request ~124 s. So every socket operation of a
connection opened here is bounded by what is left of the current request's deadline (set per thread
by `deadline()` around each request), which covers connect, TLS, the headers and the body alike.

Redirects are not followed: httpx would strip `Authorization` only when the origin changes, and an
endpoint that redirects is misconfigured anyway (the message says where it points).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

_local = threading.local()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's requests inside the block ends `seconds` from now."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    end: float | None = getattr(_local, "deadline", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _arm(transport: Any) -> None:
    # httpx2 builds its connection pool without a way to pass a network backend; the pool (and a
    # proxy pool) keeps it in `_network_backend`, read whenever a connection is opened.
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None:
        raise RuntimeError("httpx2's transport has no network backend to bound: update sae_core.labels.http")
    if not isinstance(backend, _DeadlineBackend):
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]


def http_client(timeout: float) -> httpx2.Client:
    """An httpx2 client for one endpoint: per-operation timeouts, a per-request deadline (under
    `deadline()`), no redirects; proxies from the environment get the same bound."""
    client = httpx2.Client(timeout=timeout, follow_redirects=False)
    _arm(client._transport)
    for mounted in client._mounts.values():
        if mounted is not None:
            _arm(mounted)
    return client


def safe_endpoint(url: str) -> str:
    """A URL as shown in messages: scheme, host, port and path; never user info or a query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def first_bytes(data: bytes, n: int = 80) -> str:
    """The start of a body as printable ASCII (escapes for everything else)."""
    shown = repr(data[:n])[2:-1]
    return shown + ("..." if len(data) > n else "")
