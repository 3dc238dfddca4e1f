"""Credentials go only to their own service, and every request to the LLM ends in time (issue 20).

The probe's reproductions: a run's config naming another service's key (`labeling.api_key_env=HF_TOKEN`
with a `base_url` of its own), a redirect to a second server, an endpoint that drips one byte at a time,
a non-JSON 200 and an HTTP 500. Loopback servers only.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sae_core.config import ConfigError, load_config
from sae_core.labels.client import (
    LabelExample,
    RejectedLabelError,
    TransientLabelError,
    label_feature,
    make_client,
)
from tests.fixtures_llm import Reply, write_analysis

KEY = "sk-creds-test-5e1d9c3b7a2f4e6d8c0b"
HF = "hf_worker_token_0a1b2c3d4e5f6a7b8c9d"
EXAMPLES = [LabelExample(f"went to **Paris** on day {i}", 9.0 - i) for i in range(3)]


# ---------------------------------------------------------------------------------------------
# The allow-list


def _cfg(tmp_path: Any, url: str | None, **extra: object):
    return load_config(
        "demo",
        overrides={"data_root": str(tmp_path / "data"), "labeling.base_url": url, **extra},
    )


def test_a_config_cannot_send_another_services_key(fake_llm, tmp_path, monkeypatch) -> None:
    """The probe: `--set labeling.base_url=<its server> --set labeling.api_key_env=HF_TOKEN` sent the
    worker's Hub token 20 times. Now one line naming the field and the operator's variable, and no
    request at all."""
    from tasks.label import label_cell

    monkeypatch.setenv("HF_TOKEN", HF)
    run = write_analysis(tmp_path / "8x_0.0001_sampling", {1: ("top", "tokA")})
    cfg = _cfg(tmp_path, fake_llm.url, **{"labeling.api_key_env": "HF_TOKEN"})
    with pytest.raises(ConfigError) as info:
        label_cell(str(run), cfg)
    message = str(info.value)
    assert message.startswith("labeling.api_key_env: 'HF_TOKEN' is not allowed") and "\n" not in message
    assert "SAE_SWEEP_ALLOWED_KEY_ENVS" in message and HF not in message
    assert fake_llm.requests == []
    # A Secret block is refused the same way, before it is read (no Prefect server is needed to refuse).
    blocked = _cfg(tmp_path, fake_llm.url, **{"labeling.api_key_secret_block": "hf-token"})
    with pytest.raises(ConfigError, match=r"^labeling\.api_key_secret_block: 'hf-token' is not allowed"):
        label_cell(str(run), blocked)
    # The Hub token's own allow-list keeps an LLM key away from the Hub.
    from tasks.credentials import check_credentials

    upload = _cfg(tmp_path, None, **{"upload.repo_id": "me/x", "upload.token_env": "OPENAI_API_KEY"})
    with pytest.raises(ConfigError, match=r"^upload\.token_env: 'OPENAI_API_KEY' is not allowed"):
        check_credentials(upload)


def test_the_operator_widens_and_binds_the_allow_list(fake_llm, tmp_path, monkeypatch) -> None:
    from tasks.credentials import check_credentials

    monkeypatch.setenv("MY_VLLM_KEY", KEY)
    cfg = _cfg(tmp_path, fake_llm.url, **{"labeling.api_key_env": "MY_VLLM_KEY"})
    with pytest.raises(ConfigError):
        check_credentials(cfg)
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_KEY_ENVS", "OPENAI_API_KEY, MY_VLLM_KEY@127.0.0.1")
    check_credentials(cfg)  # allowed, and bound to this endpoint's host
    monkeypatch.setenv("SAE_SWEEP_ALLOWED_KEY_ENVS", "MY_VLLM_KEY@vllm.internal|other.internal")
    bound = r"may only be sent to vllm\.internal, other\.internal on this worker, not to .127"
    with pytest.raises(ConfigError, match=bound):
        check_credentials(cfg)
    # Setting the variable replaces the defaults: OPENAI_API_KEY is now refused.
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        check_credentials(_cfg(tmp_path, fake_llm.url))


def test_the_cli_refuses_before_any_server_starts(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "HF_TOKEN": HF}
    run = write_analysis(tmp_path / "8x_0.0001_sampling", {1: ("top", "tokA")})
    started = time.monotonic()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "flows.cli", "label", "--run", str(run), "--preset", "demo"),
            *("--set", "labeling.base_url=http://127.0.0.1:9/v1", "--set", "labeling.api_key_env=HF_TOKEN"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode != 0 and time.monotonic() - started < 30
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: labeling.api_key_env: 'HF_TOKEN' is not allowed")


# ---------------------------------------------------------------------------------------------
# Loopback servers: one that redirects, one that sees who follows, one that drips


class _Seen(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]]
    location = ""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.location:
            self.send_response(307)
            self.send_header("location", self.location)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = b'{"choices": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _serve(location: str = "") -> Iterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    handler = type("H", (_Seen,), {"seen": seen, "location": location})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def second() -> Iterator[tuple[str, list[dict[str, str]]]]:
    yield from _serve()


def test_a_redirect_never_carries_the_key(second) -> None:
    """The endpoint redirects to another port: the second server sees no request (so no key), and the
    attempt fails once with a line saying where it pointed and what to set."""
    target, seen_second = second
    for location in (f"{target}/v1/chat/completions", "/elsewhere/v1/chat/completions"):
        gen = _serve(location)
        url, seen_first = next(gen)
        try:
            with pytest.raises(RejectedLabelError) as info:
                label_feature(make_client(KEY, f"{url}/v1", 5.0), "m", EXAMPLES, use_json_schema=False)
        finally:
            gen.close()
        assert info.value.kind == "redirect" and "labeling.base_url" in str(info.value)
        assert KEY not in str(info.value)
        assert [h.get("authorization") for h in seen_first] == [f"Bearer {KEY}"]
    assert seen_second == []


@pytest.fixture
def drip() -> Iterator[str]:
    """A server that answers every connection one byte each 0.1 s, for at most 8 s (so old code ends)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(1.0)
            try:
                conn.recv(65536)
                reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 200
                for byte in reply[:80]:
                    if stop.wait(0.1):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        listener.close()


def test_a_drip_feeding_endpoint_fails_within_the_timeout(drip) -> None:
    """The probe: one byte a second held each request ~124 s at `labeling.timeout_s=3`. Each read here
    succeeds well within the read timeout; only a deadline on the whole request ends it in time."""
    started = time.monotonic()
    with pytest.raises(TransientLabelError) as info:
        label_feature(make_client(KEY, drip, 1.0), "m", EXAMPLES, timeout=1.0, use_json_schema=False)
    elapsed = time.monotonic() - started
    assert info.value.kind == "timeout" and elapsed < 1.0 + 0.5, elapsed
    assert "labeling.timeout_s" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Messages


def test_a_non_json_answer_says_so(fake_llm) -> None:
    """The probe: an HTML 200 was reported as "the response has no choices"."""
    page = b"<html><body><script>x</script>\x00\xff" + b"z" * 200 + b"</body></html>"
    fake_llm.script("Paris", Reply(body=page, headers={"content-type": "text/html; charset=utf-8"}))
    with pytest.raises(RejectedLabelError) as info:
        label_feature(make_client(KEY, fake_llm.url, 5.0), "m", EXAMPLES, use_json_schema=False)
    message = str(info.value)
    assert info.value.kind == "not_json" and "\n" not in message
    assert f"{fake_llm.url} answered HTTP 200 with non-JSON" in message
    assert "text/html" in message and "<html><body><script>x</script>\\x00\\xff" in message
    assert message.isascii() and "labeling.base_url" in message and len(message) < 400


def test_a_deployments_overrides_cannot_widen_it(tmp_path, monkeypatch, capsys) -> None:
    """The Prefect UI's `overrides` (and `sae-sweep run --set`) choose among the allowed names only; the
    sweep and each pool cell refuse before extraction or training starts."""
    from flows.cli import main
    from flows.sweep import sae_sweep
    from flows.train_cell import train_cell_flow

    monkeypatch.setenv("HF_TOKEN", HF)
    overrides = {"data_root": str(tmp_path / "data"), "labeling.api_key_env": "HF_TOKEN"}
    with pytest.raises(ConfigError, match=r"^labeling\.api_key_env: 'HF_TOKEN' is not allowed"):
        sae_sweep.fn(preset="demo", overrides=overrides)
    cfg = load_config("demo", overrides={**overrides, "grid.placement": "pool"})
    with pytest.raises(ConfigError, match=r"^labeling\.api_key_env"):
        train_cell_flow.fn(cfg.model_dump(mode="json"), "4x-0.001-sampling", None)
    assert not (tmp_path / "data").exists()  # nothing extracted, trained or written
    assert main(["run", "--preset", "demo", *(f"--set={k}={v}" for k, v in overrides.items())]) == 2
    assert capsys.readouterr().err.startswith("error: labeling.api_key_env: 'HF_TOKEN' is not allowed")
