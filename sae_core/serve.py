"""A read-only static file server over `data_root`, so the links in the Prefect UI's artifacts open.

A browser refuses `file://` links from an http page (the Prefect UI), so the report artifact links the
report and the feature browsers as `http://127.0.0.1:<port>/runs/<sweep>/…`, served by `sae-sweep serve`.

Read-only on purpose: GET and HEAD only (anything else is 405), no path outside the root (`..`, or a
symbolic link leading out, is 404), no hidden entries (`.prefect` holds the task results and cache
records: 404). A malformed path (`%00` or another control character, a `%` not followed by two hex
digits, bytes that are not UTF-8) is a 400 with a one-line plain-text body, before any file system call
(a NUL reaching `os.stat` was a traceback in the server thread and no response at all). Bound to the
loopback interface unless `--host` says otherwise.
"""

from __future__ import annotations

import functools
import html
import logging
import os
import re
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
SERVE_URL_ENV = "SAE_SWEEP_SERVE_URL"
"""Base URL the artifacts link to (default `http://127.0.0.1:8765/`): set it where the server runs on
another port or host."""


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_problem(raw_path: str) -> str | None:
    """Why the request target's path cannot name a file (None: it can). `raw_path` is the target as
    `http.server` hands it over: the request line decoded as latin-1, so raw bytes come back as such."""
    path = urlsplit(raw_path).path
    if _BAD_ESCAPE.search(path):
        return "invalid percent-encoding"
    try:
        decoded = unquote_to_bytes(path.encode("latin-1")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return "not UTF-8"
    if _CONTROL.search(decoded):
        return "control character (such as %00)"
    return None


def serve_base_url() -> str:
    """The base URL artifacts link to, ending with `/`."""
    base = os.environ.get(SERVE_URL_ENV) or f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/"
    return base if base.endswith("/") else base + "/"


class ReadOnlyHandler(SimpleHTTPRequestHandler):
    """`SimpleHTTPRequestHandler` restricted to reading files under its directory."""

    def do_GET(self) -> None:
        if self._allowed():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._allowed(head=True):
            super().do_HEAD()

    def _refuse_write(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only server")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write

    def _allowed(self, head: bool = False) -> bool:
        """False (after sending 400) for a malformed path, or (after sending 404) for a hidden entry or a
        path that resolves outside the root."""
        problem = path_problem(self.path)
        if problem is not None:
            self._bad_request(f"malformed path: {problem}", head)
            return False
        parts = [p for p in unquote(urlsplit(self.path).path).split("/") if p]
        if any(p.startswith(".") for p in parts):
            self.send_error(HTTPStatus.NOT_FOUND)
            return False
        root = Path(self.directory).resolve()
        target = Path(self.translate_path(self.path)).resolve()
        if target != root and root not in target.parents:
            self.send_error(HTTPStatus.NOT_FOUND)
            return False
        return True

    def _bad_request(self, message: str, head: bool) -> None:
        # Plain text, one line: the stock `send_error` page is HTML that echoes the request.
        body = f"400 Bad Request: {message}\n".encode()
        self.send_response(HTTPStatus.BAD_REQUEST)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def list_directory(self, path: str | os.PathLike[str]) -> BytesIO | None:
        """A plain listing of the visible entries (the stock one would list hidden ones too)."""
        try:
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        title = html.escape(unquote(urlsplit(self.path).path))
        items = "".join(
            f"<li><a href='{quote(n)}{'/' if os.path.isdir(os.path.join(path, n)) else ''}'>"
            f"{html.escape(n)}</a></li>"
            for n in names
        )
        body = f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1><ul>{items}</ul>"
        data = body.encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return BytesIO(data)

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s %s", self.address_string(), format % args)


def make_server(root: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """A server for `root` (not yet serving: call `serve_forever`); port 0 picks a free one."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        from sae_core.errors import SaeSweepError

        raise SaeSweepError(f"data_root: no such directory {str(root)!r} (run a sweep first)")
    handler = functools.partial(ReadOnlyHandler, directory=str(root))
    return ThreadingHTTPServer((host, port), handler)
