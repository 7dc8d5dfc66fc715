"""The `webhook` sink: one HTTP POST per batch to a receiver that answers 2xx once it has the batch.

Body (`body` option):
- `json_array` (default), `Content-Type: application/json`: `[event, event, ...]`, each element the formatted
  event parsed as JSON. That is what generic JSON collectors take as "one document per element" (Elastic's
  HTTP Endpoint input, Logstash's http input, most SOAR webhooks). A format whose text is not a JSON object
  (cef) becomes `{"event_id": ..., "message": "<the line>"}`.
- `ndjson`, `Content-Type: application/x-ndjson`: one formatted event per line, as it is (any format); a
  text that spans lines is sent as a JSON string so that it stays one line.

Headers: `Idempotency-Key: batch_<sha256 of the batch's event ids, in order>`, the same for a resent batch
(the exporter resends a failed batch as it was); the events also carry their own `event_id` for receivers
that deduplicate per event. `Authorization: <token_scheme> <token>` when `token_env` is set (Bearer by
default; `ApiKey` for an Elasticsearch API key). `headers` adds fixed non-secret headers.

Transport rules (https verification, tokens, errors): `aarmor.telemetry.sinks.http`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from aarmor.telemetry import TelemetryEvent
from aarmor.telemetry.sinks.common import SinkOptions, formatted, parse_options
from aarmor.telemetry.sinks.http import HttpTarget, target

__all__ = ["WebhookOptions", "WebhookSink", "batch_key", "build"]

#: headers the sink sets itself; `headers` cannot replace them (and cannot carry a credential)
_RESERVED = {"authorization", "idempotency-key", "content-type", "content-length", "host", "user-agent",
             "transfer-encoding", "connection", "cookie", "proxy-authorization"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110 5.6.2): header names, schemes


class WebhookOptions(SinkOptions):
    url: str
    body: Literal["json_array", "ndjson"] = "json_array"
    #: the environment variable holding the token (never the token itself)
    token_env: str | None = None
    token_scheme: str = "Bearer"
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0, le=300)
    ca_file: str | None = None

    @field_validator("token_scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not _TOKEN.fullmatch(v):
            raise ValueError(f"`{v}` is not an HTTP authentication scheme (one word, like `Bearer` or `ApiKey`)")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"`{name}` is not an HTTP header name")
            if name.lower() in _RESERVED:
                raise ValueError(f"`{name}` is set by the sink (a token goes in the variable named by `token_env`)")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"the value of `{name}` has a line break")
        return v


def build(name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> WebhookSink:
    """A webhook sink named `name`.

    Raises:
        ConfigError: an unknown option, a bad value or URL, or the token variable unset.
    """
    opts = parse_options(WebhookOptions, "webhook", name, options)
    where = target(f"telemetry sink `{name}` (webhook)", opts.url, timeout=opts.timeout, ca_file=opts.ca_file,
                   token_env=opts.token_env)
    return WebhookSink(name, formatter, opts, where)


class WebhookSink:
    def __init__(self, name: str, formatter: Callable[[TelemetryEvent], str], options: WebhookOptions,
                 where: HttpTarget) -> None:
        self.name = name
        self._formatter = formatter
        self._opts = options
        self._target = where

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        """POST the batch; returns once the receiver answered 2xx, else raises `SinkError`."""
        if not events:
            return
        texts = [formatted(self._formatter, e, self._target.sink) for e in events]
        if self._opts.body == "ndjson":
            body = "".join(_line(t) + "\n" for t in texts).encode()
            content_type = "application/x-ndjson"
        else:
            items = [_element(e, t) for e, t in zip(events, texts, strict=True)]
            body = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
            content_type = "application/json"
        headers = {**self._opts.headers, "Content-Type": content_type, "Idempotency-Key": batch_key(events)}
        self._target.post(body, headers, ("Authorization", self._opts.token_scheme))

    def close(self) -> None:
        """Nothing to release: each batch has its own connection."""


def batch_key(events: Sequence[TelemetryEvent]) -> str:
    """The batch's idempotency key: the same events in the same order always give the same key."""
    return "batch_" + hashlib.sha256("\n".join(e.event_id for e in events).encode()).hexdigest()


def _element(event: TelemetryEvent, text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"event_id": event.event_id, "message": text}


def _line(text: str) -> str:
    return text if "\n" not in text and "\r" not in text else json.dumps(text, ensure_ascii=False)
