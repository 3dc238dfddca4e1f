"""`sae-sweep serve`: data_root over http so the UI's links open; read-only, loopback by default."""

from __future__ import annotations

import http.client
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sae_core.serve import DEFAULT_HOST, make_server


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "data"
    (root / "runs" / "demo" / "report").mkdir(parents=True)
    (root / "runs" / "demo" / "report" / "report.html").write_text("<h1>report</h1>")
    (root / ".prefect").mkdir()
    (root / ".prefect" / "result.json").write_text("cache record")
    (tmp_path / "secret.txt").write_text("outside the root")
    os.symlink(tmp_path / "secret.txt", root / "runs" / "link.txt")
    server = make_server(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_serves_files_and_lists_directories_without_hidden_entries(served):
    _, port = served
    assert _request(port, "GET", "/runs/demo/report/report.html") == (200, b"<h1>report</h1>")
    status, listing = _request(port, "GET", "/")
    assert status == 200 and b"runs/" in listing and b".prefect" not in listing


def test_refuses_writes_traversal_symlinks_out_and_hidden_files(served):
    root, port = served
    for method in ("PUT", "POST", "DELETE"):
        status, _ = _request(port, method, "/runs/demo/new.txt", body=b"x")
        assert status == 405
    assert not (root / "runs" / "demo" / "new.txt").exists()
    assert _request(port, "GET", "/../secret.txt")[0] == 404
    assert _request(port, "GET", "/runs/%2e%2e/%2e%2e/secret.txt")[0] == 404
    assert _request(port, "GET", "/runs/link.txt")[0] == 404
    assert _request(port, "GET", "/.prefect/result.json")[0] == 404


def _raw_get(port: int, target: bytes) -> bytes:
    """The whole response to a GET whose request target is sent byte for byte (http.client refuses
    control characters and non-ASCII in a URL)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (b"/runs/demo/report/report.html%00.txt", b"control character"),
        (b"/%00", b"control character"),
        (b"/runs/%0a", b"control character"),
        (b"/runs/%zz/report.html", b"invalid percent-encoding"),
        (b"/runs/%", b"invalid percent-encoding"),
        (b"/runs/%ff%fe", b"not UTF-8"),
        (b"/runs/\xff", b"not UTF-8"),
    ],
)
def test_a_malformed_path_is_a_400_with_one_line_and_no_traceback(served, capfd, target, problem):
    _, port = served
    response = _raw_get(port, target)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 "), response
    assert body == b"400 Bad Request: malformed path: " + body.split(b": ", 2)[2]
    assert problem in body and body.count(b"\n") == 1 and body.endswith(b"\n"), body
    assert "Traceback" not in capfd.readouterr().err
    # The server still answers, and a valid non-ASCII name (UTF-8, percent-encoded) is not malformed.
    assert _request(port, "GET", "/runs/demo/report/report.html")[0] == 200
    assert _request(port, "GET", "/runs/%C3%A9t%C3%A9")[0] == 404


def test_binds_to_loopback_by_default(tmp_path):
    server = make_server(tmp_path, port=0)
    try:
        assert DEFAULT_HOST == "127.0.0.1"
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.server_close()


def test_cli_help_names_the_command():
    from flows.cli import main

    assert main(["serve", "--help"]) == 0
