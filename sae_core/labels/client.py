"""LLM labels for selected features and the monosemanticity rate, against any OpenAI-compatible endpoint.

This module makes ONE attempt per call and classifies every failure (`TransientLabelError`: retry;
`RejectedLabelError`: do not). Retries, backoff, concurrency and caching belong to the caller
(`tasks/label.py`). The API key arrives as a string inside an `openai.OpenAI` client built by the
caller; it is never logged, and every message that leaves this module is scrubbed of it.

The inputs it labels and the files and rate it produces live in `sae_core.labels.files`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sae_core.errors import LabelingError
from sae_core.labels.http import deadline, first_bytes, http_client, safe_endpoint
from sae_core.labels.prompt import (
    LABEL_SCHEMA,
    POLYSEMANTIC,
    PROMPT_VERSION,
    LabelExample,
    MalformedAnswer,
    ParsedLabel,
    RepairTurn,
    build_messages,
    parse_label,
)

__all__ = [
    "POLYSEMANTIC",
    "PROMPT_VERSION",
    "LabelAttemptError",
    "LabelExample",
    "LabelResult",
    "ParsedLabel",
    "RejectedLabelError",
    "Repair",
    "RepairTurn",
    "SchemaSupport",
    "TransientLabelError",
    "build_messages",
    "endpoint_url",
    "label_feature",
    "make_client",
    "parse_label",
    "scrub",
]

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 600.0
"""A Retry-After longer than this is capped (a broken server must not park a worker for hours)."""


# ---------------------------------------------------------------------------------------------
# Errors of one attempt


class LabelAttemptError(LabelingError):
    """One request failed. `kind` names the failure; `attempts` is filled in by the retry layer."""

    retryable = False

    def __init__(self, message: str, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message, kind, retry_after)
        self.kind = kind
        self.retry_after = retry_after
        self.attempts = 1
        self.repair: Repair | None = None
        """After a malformed answer: what the next attempt should send (set by `label_feature`)."""

    def __str__(self) -> str:
        return str(self.args[0])


class TransientLabelError(LabelAttemptError):
    """Worth retrying: 429 (with its Retry-After), 5xx, timeout, connection error, malformed answer."""

    retryable = True


class RejectedLabelError(LabelAttemptError):
    """Not worth retrying: 400, 401, 403, 404 and other 4xx — the request or the credentials are wrong."""

    retryable = False


def scrub(text: str, secret: str | None) -> str:
    """Remove the key (and any prefix of it ≥ 8 chars an endpoint might echo) from a message."""
    if not secret:
        return text
    out = text.replace(secret, "***")
    if len(secret) >= 16:  # endpoints echo a masked prefix/suffix, e.g. "sk-abcd…wxyz"
        out = out.replace(secret[:12], "***").replace(secret[-8:], "***")
    return out


def classify(
    exc: BaseException, secret: str | None = None, endpoint: str = "the endpoint", timeout: float = 0.0
) -> LabelAttemptError:
    """Map an `openai` exception to a transient or rejected attempt error with a key-free message that
    names the endpoint and says what to do."""
    import openai

    def msg(text: str) -> str:
        return scrub(" ".join(text.split())[:300], secret)

    if isinstance(exc, openai.APITimeoutError):
        return TransientLabelError(
            f"no complete answer from {endpoint} within {timeout:g} s (labeling.timeout_s)", "timeout"
        )
    if isinstance(exc, openai.APIConnectionError):
        return TransientLabelError(msg(f"cannot connect to {endpoint}: {exc}"), "connection")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = msg(str(exc.message))
        if status == 429:
            after = _retry_after(exc.response.headers)
            return TransientLabelError(f"HTTP 429 rate limited by {endpoint}: {body}", "rate_limited", after)
        if status >= 500 or status in (408, 409):
            return TransientLabelError(
                f"HTTP {status} from {endpoint}: {body} (the server failed; retried up to "
                "labeling.max_retries: check the server, or lower labeling.concurrency, and re-run: "
                "features already labelled are cached)",
                "server_error",
            )
        if 300 <= status < 400:
            where = safe_endpoint(exc.response.headers.get("location", "")) or "nowhere"
            return RejectedLabelError(
                f"HTTP {status} from {endpoint}: it redirects to {where}, which is not followed (the "
                "key would go with it); set labeling.base_url to the address that answers",
                "redirect",
            )
        kind = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found"}.get(
            status, "rejected"
        )
        return RejectedLabelError(f"HTTP {status} from {endpoint}: {body}", kind)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError):
        return TransientLabelError(msg(f"unreadable response: {exc}"), "malformed")
    return TransientLabelError(msg(f"{type(exc).__name__}: {exc}"), "unexpected")


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("retry-after-ms")
    if raw is not None:
        try:
            return min(float(raw) / 1000, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return min(max(float(raw), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        from datetime import UTC, datetime

        return min(max((when - datetime.now(UTC)).total_seconds(), 0.0), MAX_RETRY_AFTER_S)


# ---------------------------------------------------------------------------------------------
# The client and one attempt


def make_client(api_key: str, base_url: str | None, timeout: float) -> Any:
    """An `openai.OpenAI` client with the library's own retries off (the task layer retries), over an
    HTTP client that follows no redirect and bounds each request by a deadline (`labels.http`)."""
    import openai

    return openai.OpenAI(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0, http_client=http_client(timeout)
    )


OPENAI_URL = "https://api.openai.com/v1"


def endpoint_url(base_url: str | None) -> str:
    """Where a client built with this `base_url` sends its requests (the openai client's own rule:
    `OPENAI_BASE_URL`, else OpenAI)."""
    import os

    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL


@dataclass(frozen=True)
class Repair:
    """The conversation so far after unusable answers: the format it is in and one turn per answer."""

    structured: bool
    turns: tuple[RepairTurn, ...]


@dataclass(frozen=True)
class LabelResult:
    label: str
    reasoning: str
    polysemantic: bool
    structured: bool
    """Whether the answer came through the JSON schema (False: text format, or the fallback)."""
    explanation: str | None = None
    """What scoring tests: the label, or a polysemantic answer's closest explanation."""


def chat_completion(
    client: Any,
    model: str,
    messages: list[dict[str, str]],
    *,
    temperature: float,
    timeout: float,
    schema: dict[str, Any] | None,
) -> str | None:
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
    if schema is not None:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": schema}
    try:
        response = _create(client, timeout, kwargs)
    except RejectedLabelError as err:
        # Reasoning models (o-series, gpt-5) accept only their default temperature: ask again without.
        if not (err.kind == "bad_request" and "temperature" in str(err).lower()):
            raise
        log.info("endpoint refused temperature=%s for %s; using the model's default", temperature, model)
        del kwargs["temperature"]
        response = _create(client, timeout, kwargs)
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise TransientLabelError(
            f"the answer of {_endpoint(client)} has no choices (JSON without a chat completion)", "malformed"
        )
    return choices[0].message.content


def _endpoint(client: Any) -> str:
    return safe_endpoint(str(getattr(client, "base_url", "") or "")) or "the endpoint"


def _create(client: Any, timeout: float, kwargs: dict[str, Any]) -> Any:
    """One HTTP request, ended at `timeout` seconds however the endpoint sends; any failure becomes a
    classified, key-free error (the cause is dropped, since tracebacks end up in Prefect's logs)."""
    secret = getattr(client, "api_key", None)
    secret = secret if isinstance(secret, str) else None
    endpoint = _endpoint(client)
    try:
        with deadline(timeout):
            raw = client.chat.completions.with_raw_response.create(timeout=timeout, **kwargs)
            content_type = raw.headers.get("content-type", "")
            if "json" not in content_type.lower():
                raise RejectedLabelError(
                    scrub(
                        f"{endpoint} answered HTTP {raw.status_code} with non-JSON "
                        f"(content-type {content_type or 'none'!r}, "
                        f"first bytes '{first_bytes(raw.content)}'); "
                        "labeling.base_url must be an OpenAI-compatible API root (usually ending in /v1)",
                        secret,
                    ),
                    "not_json",
                )
            return raw.parse()
    except LabelAttemptError:
        raise
    except Exception as exc:
        raise classify(exc, secret, endpoint, timeout) from None


class SchemaSupport:
    """Whether an endpoint accepts `response_format`, learned once and shared by every request of a
    run (threads included). While unknown, one request probes with the schema and the others wait for
    its verdict, so a refusing endpoint costs ONE refused request per run, not one per feature.

    `use(wanted)` returns whether this request sends the schema; a caller that got True must call
    `accepted()`, `refused()` or `undecided()` (an error that says nothing about the schema) after."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._known: bool | None = None
        self._probing = False

    @property
    def known(self) -> bool | None:
        return self._known

    def use(self, wanted: bool) -> bool:
        if not wanted:
            return False
        with self._cond:
            while self._known is None and self._probing:
                self._cond.wait()
            if self._known is None:
                self._probing = True
                return True
            return self._known

    def _settle(self, verdict: bool | None) -> None:
        with self._cond:
            if verdict is not None:
                self._known = verdict
            self._probing = False
            self._cond.notify_all()

    def accepted(self) -> None:
        self._settle(True if self._known is None else self._known)

    def refused(self) -> None:
        self._settle(False)

    def undecided(self) -> None:
        self._settle(self._known)


def schema_request(
    support: SchemaSupport | None, wanted: bool, call: Any, fallback: Any
) -> tuple[str | None, bool]:
    """Run `call(structured)` (one request) with the schema when wanted and not known refused; on a 400
    naming `response_format`, remember the refusal and run `fallback()` in text. Returns the answer and
    whether it came under the schema."""
    support = support or SchemaSupport()
    structured = support.use(wanted)
    try:
        text = call(structured)
    except RejectedLabelError as err:
        if not (structured and refuses_schema(err)):
            if structured:
                support.undecided()
            raise
        support.refused()
        log.info("endpoint refused response_format (%s); using the text format for the rest of the run", err)
        return fallback(), False
    except BaseException:
        if structured:
            support.undecided()
        raise
    if structured:
        support.accepted()
    return text, structured


def refuses_schema(err: RejectedLabelError) -> bool:
    return err.kind == "bad_request" and bool(
        re.search(r"response_format|json_schema|schema", str(err), re.I)
    )


def label_feature(
    client: Any,
    model: str,
    examples: Sequence[LabelExample],
    *,
    temperature: float = 0.0,
    timeout: float = 60.0,
    use_json_schema: bool = True,
    repair: Repair | None = None,
    schema_support: SchemaSupport | None = None,
) -> LabelResult:
    """ONE attempt to label a feature from its examples (plus, at most, one plain-text fallback request
    when the endpoint rejects `response_format` with a 400). Raises `TransientLabelError` or
    `RejectedLabelError`; an unusable answer is a transient `malformed` error whose `repair` is what
    the next attempt passes back as `repair`: the conversation with the model's answer and a user turn
    saying what was wrong (in the format that answer was in), not the same prompt again.
    `schema_support` shares what the endpoint said of `response_format` across the run's requests."""
    if not examples:
        raise RejectedLabelError("no examples to label", "no_examples")
    wanted = repair.structured if repair is not None else use_json_schema
    turns = repair.turns if repair is not None else ()

    def ask(structured: bool, repairs: tuple[RepairTurn, ...]) -> str | None:
        return chat_completion(
            client,
            model,
            build_messages(examples, use_json_schema=structured, repairs=repairs),
            temperature=temperature,
            timeout=timeout,
            schema=LABEL_SCHEMA if structured else None,
        )

    # A conversation held in JSON restarts in text when the schema is refused (its turns were JSON).
    text, structured = schema_request(
        schema_support, wanted, lambda s: ask(s, turns if s == wanted else ()), lambda: ask(False, ())
    )
    if structured != wanted:
        turns = ()
    try:
        parsed = parse_label(text)
    except MalformedAnswer as exc:
        malformed = TransientLabelError(f"malformed answer: {exc}", "malformed")
        malformed.repair = Repair(structured, (*turns, RepairTurn(text, exc.problem)))
        raise malformed from None
    return LabelResult(parsed.label, parsed.reasoning, parsed.polysemantic, structured, parsed.explanation)
