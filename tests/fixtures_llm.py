"""Fixtures of the labelling tests: a scriptable OpenAI-compatible server, fabricated analysis outputs,
and one Prefect test harness per session (shared with `prefect_harness` when tests/fixtures_prefect.py
provides it).

The server is real HTTP on 127.0.0.1 (a free port, stdlib `http.server` in a thread) implementing
`POST /v1/chat/completions`, so the real `openai` client is what the code under test talks to. Replies
are scripted per feature: a request whose feature message (the last user message with a `**…**` mark,
so that a repair turn after it still belongs to the feature) contains a marker (e.g. `tokA`) takes the
next reply scripted for that marker, then falls back to the default answer. A marker can instead have a
responder, a function of the request body and the marker's request count, which answers like a model
at temperature 0 does: the same conversation always gets the same answer. Every request is recorded.
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sae_core.analysis.examples import EXAMPLE_SCHEMA

# ---------------------------------------------------------------------------------------------
# Replies


@dataclass
class Reply:
    status: int = 200
    content: str | None = None
    """Message content of a 200 answer (None: `content: null`)."""
    body: bytes | None = None
    """Raw body, sent as-is instead of a chat completion (e.g. invalid JSON)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a hang past the client's timeout)."""


def answer(content: str | None) -> Reply:
    return Reply(content=content)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "error", "code": status}}).encode()
    return Reply(status=status, body=body, headers=headers or {})


def hang(seconds: float) -> Reply:
    return Reply(content="Label: too late", delay=seconds)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    marker: str | None
    started: float
    finished: float = 0.0


class FakeLLM:
    """State of the fake server; tests script it and read `requests`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.scripts: dict[str, deque[Reply]] = {}
        self.responders: dict[str, Callable[[dict[str, Any], int], Reply | None]] = {}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = threading.Event()  # set at teardown so that hung handlers end
        self.url = ""

    def script(self, marker: str, *replies: Reply) -> None:
        with self.lock:
            self.scripts[marker] = deque(replies)

    def respond(self, marker: str, responder: Callable[[dict[str, Any], int], Reply | None]) -> None:
        """`responder(body, n)` answers the marker's n-th request (0-based); None: the default answer."""
        with self.lock:
            self.responders[marker] = responder

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.scripts.clear()
            self.responders.clear()
            self.max_in_flight = 0

    def requests_for(self, marker: str) -> list[Recorded]:
        return [r for r in self.requests if r.marker == marker]

    # -- what the handler calls

    def next_reply(self, body: dict[str, Any] | None) -> tuple[str | None, Reply]:
        feature = _feature_user(body)
        with self.lock:
            for marker, responder in self.responders.items():
                if marker in feature:
                    n = sum(r.marker == marker for r in self.requests)
                    return marker, responder(body or {}, n) or default_reply(body)
            for marker, queue in self.scripts.items():
                if marker in feature:
                    return marker, (queue.popleft() if queue else default_reply(body))
        marker_match = re.search(r"\*\*([^*]+)\*\*", feature)
        return (marker_match.group(1).strip() if marker_match else None), default_reply(body)


def _users(body: dict[str, Any] | None) -> list[str]:
    messages = (body or {}).get("messages") or []
    return [m.get("content") or "" for m in messages if m.get("role") == "user"]


def _feature_user(body: dict[str, Any] | None) -> str:
    """The last user message that shows marked contexts or a scoring request's excerpts (repair turns
    after it show neither)."""
    users = _users(body)
    marked = [u for u in users if "**" in u or u.startswith("Explanation:")]
    return marked[-1] if marked else (users[-1] if users else "")


def default_reply(body: dict[str, Any] | None) -> Reply:
    """A plausible answer: labels name the first marked token; scoring picks the excerpts that hold
    the token the explanation names (detection) or highlight exactly it (fuzzing)."""
    text = _feature_user(body)
    structured = bool((body or {}).get("response_format"))
    if text.startswith("Explanation:"):
        picks = perfect_picks(body)
        if structured:
            return answer(json.dumps({"matches": picks}))
        return answer("Matches: " + (", ".join(map(str, picks)) or "none"))
    token = re.search(r"\*\*([^*]+)\*\*", text)
    label = f"the token {token.group(1).strip()}" if token else "POLYSEMANTIC"
    if structured:
        reasoning = "Every marked token is the same word."
        return answer(json.dumps({"reasoning": reasoning, "polysemantic": token is None, "label": label}))
    return answer(f"Every marked token is the same word.\nLabel: {label}")


def perfect_picks(body: dict[str, Any] | None) -> list[int]:
    """The right answer to a scoring request on `scoring_windows` data: detection, the excerpts that
    contain the named token; fuzzing, those whose highlighted tokens are all the named token."""
    text = _feature_user(body)
    named = text.split("\n", 1)[0].removeprefix("Explanation:").strip().removeprefix("the token ")
    fuzzing = "highlighting" in ((body or {}).get("messages") or [{}])[0].get("content", "")
    picks = []
    for number, excerpt in re.findall(r"^(\d+)\. (.*)$", text, flags=re.M):
        if fuzzing:
            marked = re.findall(r"\*\*(.+?)\*\*", excerpt)
            if marked and all(m.strip() == named for m in marked):
                picks.append(int(number))
        elif re.search(rf"(^|\s){re.escape(named)}(\s|$)", excerpt):
            picks.append(int(number))
    return picks


def scoring_requests(state: FakeLLM) -> list[Recorded]:
    return [r for r in state.requests if any(u.startswith("Explanation:") for u in _users(r.body))]


def _completion(content: str | None, model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()


def _handler(state: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _wait_unless_client_leaves(self, seconds: float) -> bool:
            """Sleep up to `seconds`; False as soon as the client closes the connection (a client-side
            timeout), so that in-flight counts what the client has outstanding, not our sleepers."""
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0 and not state.release.is_set():
                readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return False
            return True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                body = None
            marker, reply = state.next_reply(body)
            rec = Recorded(
                self.path, {k.lower(): v for k, v in self.headers.items()}, body, marker, time.monotonic()
            )
            with state.lock:
                state.requests.append(rec)
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = error(404, f"no route {self.path}")
                if reply.delay and not self._wait_unless_client_leaves(reply.delay):
                    return  # the client timed out: its request is no longer in flight
                if reply.status == 401:  # like some servers, echo the key it was given
                    given = self.headers.get("authorization", "").removeprefix("Bearer ")
                    reply = error(401, f"Incorrect API key provided: {given}")
                data = (
                    reply.body
                    if reply.body is not None
                    else _completion(reply.content, (body or {}).get("model", "?"))
                )
                self.send_response(reply.status)
                if not any(k.lower() == "content-type" for k in reply.headers):
                    self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass
            finally:
                with state.lock:
                    state.in_flight -= 1
                    rec.finished = time.monotonic()

    return Handler


@pytest.fixture(scope="session")
def _fake_llm_server() -> Iterator[FakeLLM]:
    state = FakeLLM()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_llm(_fake_llm_server: FakeLLM) -> Iterator[FakeLLM]:
    """The session's fake OpenAI-compatible server, with scripts and records cleared for this test (and
    what this process learned of its `response_format` support forgotten)."""
    from tasks.label_requests import forget_schema_support

    _fake_llm_server.reset()
    forget_schema_support()
    yield _fake_llm_server
    _fake_llm_server.reset()
    forget_schema_support()


# ---------------------------------------------------------------------------------------------
# Fabricated analysis outputs (features/selected.json + features/examples.parquet, per the contract)

WORDS = "the of a model in feature on that token with for is as by layer".split()  # noqa: SIM905


def write_analysis(
    run_dir: Path, features: dict[int, tuple[str, str]], n_top: int = 6, n_quantile: int = 2
) -> Path:
    """`features` maps feature id → (group, marker token). Each feature's examples mark its token inside
    plausible contexts, so the default fake answer labels it `the token <marker>`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for fid, (group, token) in features.items():
        for kind, count in (("top", n_top), ("quantile", n_quantile)):
            for rank in range(count):
                left = [WORDS[(fid + rank + i) % len(WORDS)] for i in range(4)]
                right = [WORDS[(fid * 3 + rank + i) % len(WORDS)] for i in range(3)]
                tokens = [*left, token, *right]
                act = (10.0 - rank) if kind == "top" else (2.0 - 0.5 * rank)
                rows.append(
                    {
                        "feature_id": fid,
                        "group": group,
                        "kind": kind,
                        "rank": rank,
                        "activation": float(act),
                        "doc_id": fid * 100 + rank + (50 if kind == "quantile" else 0),
                        "pos": 4,
                        "token_id": 1000 + fid,
                        "token": token,
                        "context_token_ids": [10 + i for i in range(len(tokens))],
                        "context_tokens": tokens,
                        "marked_index": 4,
                        "context_text": " ".join([*left, f"**{token}**", *right]),
                    }
                )
    schema = EXAMPLE_SCHEMA  # the analysis stage's own schema: the contract the labeller reads
    out = run_dir / "features"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), out / "examples.parquet")
    selected = {
        "top": [f for f, (g, _) in features.items() if g == "top"],
        "bottom": [f for f, (g, _) in features.items() if g == "bottom"],
        "min_activations": 10,
        "threshold": 0.07,
    }
    (out / "selected.json").write_text(json.dumps(selected))
    return run_dir


def write_scoring_windows(
    run_dir: Path, features: dict[int, str], n_active: int = 10, n_quiet: int = 10, size: int = 8
) -> Path:
    """features/scoring_examples.parquet as the analysis writes it: feature id → marker token. An
    activating window holds the marker once (firing there); a non-activating one never does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sae_core.analysis.scoring_windows import SCORING_SCHEMA

    rows = []
    for fid, token in features.items():
        for kind, count in (("activating", n_active), ("non_activating", n_quiet)):
            for rank in range(count):
                words = [WORDS[(fid * 7 + rank * 3 + i) % len(WORDS)] for i in range(size)]
                at = (rank * 5) % size
                if kind == "activating":
                    words[at] = token
                tokens = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
                firing = [kind == "activating" and i == at for i in range(size)]
                rows.append(
                    {
                        "feature_id": fid,
                        "kind": kind,
                        "quantile": rank % 10 if kind == "activating" else -1,
                        "rank": rank,
                        "activation": 1.0 + rank if kind == "activating" else 0.0,
                        "doc_id": 5000 + fid * 100 + rank,
                        "pos": at,
                        "start": 0,
                        "token_ids": list(range(size)),
                        "tokens": tokens,
                        "activations": [2.0 if f else 0.0 for f in firing],
                        "firing": firing,
                    }
                )
    out = run_dir / "features"
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, SCORING_SCHEMA), out / "scoring_examples.parquet")
    return run_dir


# ---------------------------------------------------------------------------------------------
# Prefect: one harness per session


@dataclass
class PrefectEnv:
    home: Path
    api_url: str
    db_path: Path | None


@pytest.fixture(scope="session")
def label_prefect(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectEnv]:
    """The orchestration tests' `prefect_harness` when it exists, else our own harness with a temporary
    PREFECT_HOME (started once per session either way)."""
    import prefect.settings as ps

    try:
        request.getfixturevalue("prefect_harness")
    except pytest.FixtureLookupError:
        pass
    else:
        yield _prefect_env()
        return
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with ps.temporary_settings(updates={ps.PREFECT_HOME: str(home)}), prefect_test_harness():
        yield _prefect_env()


def _prefect_env() -> PrefectEnv:
    import prefect.settings as ps

    url = str(ps.PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    db = Path(url.split("///", 1)[1]) if url.startswith("sqlite") and "///" in url else None
    return PrefectEnv(Path(ps.PREFECT_HOME.value()), str(ps.PREFECT_API_URL.value()), db)
