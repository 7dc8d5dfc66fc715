"""The `splunk_hec` sink: Splunk's HTTP Event Collector (and receivers that speak its protocol).

One POST per batch to `<url>/services/collector/event` with `Authorization: Splunk <token>` and a body of
concatenated JSON objects, one per event:

    {"time": 1795946400.0, "host": "...", "source": "aarmor", "sourcetype": "aarmor:event", "index": "...",
     "event": <the formatted event: a JSON object, or the text (cef) as a string>,
     "fields": {"event_id": "...", "event_type": "...", "severity": "...", "session_id": "..."}}

- `time` is the event's own time (epoch seconds, milliseconds kept), so Splunk indexes it when it happened;
  an event whose time cannot be read goes without (Splunk then uses the arrival time).
- `fields` are indexed fields: `event_id` is the idempotency key (HEC itself does not deduplicate; a resent
  batch is found with `| dedup event_id`, or `tstats ... by event_id`).
- `index` is left out unless configured (the token's default index applies).
- `channel` (a GUID) is sent as `X-Splunk-Request-Channel`: required by HEC when indexer acknowledgment is
  on. aarmor does not poll `/services/collector/ack`: with acknowledgment on, "Success" means HEC accepted the
  batch, not that it is searchable yet.
- Success is HTTP 2xx with HEC's answer `{"text": "Success", "code": 0}`; anything else (an error status,
  another code, a body that is not HEC's) is a `SinkError` quoting HEC's `text` and `code`.

Transport rules (https verification, the token from `token_env`, errors): `aarmor.telemetry.sinks.http`.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator

from aarmor.telemetry import SinkError, TelemetryEvent
from aarmor.telemetry.sinks.common import SinkOptions, formatted, parse_options
from aarmor.telemetry.sinks.http import HttpTarget, target

__all__ = ["EVENT_PATH", "SplunkHecOptions", "SplunkHecSink", "build", "hec_event"]

EVENT_PATH = "/services/collector/event"


class SplunkHecOptions(SinkOptions):
    #: the collector (`https://splunk.example:8088`: the path defaults to /services/collector/event)
    url: str
    #: the environment variable holding the HEC token (required: HEC refuses requests without one)
    token_env: str
    index: str | None = Field(default=None, min_length=1)
    source: str = Field(default="aarmor", min_length=1)
    sourcetype: str = Field(default="aarmor:event", min_length=1)
    #: the `host` of every event (default: this machine's name)
    host: str | None = Field(default=None, min_length=1)
    channel: str | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)
    ca_file: str | None = None

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                uuid.UUID(v)
            except ValueError:
                raise ValueError(f"`{v}` is not a GUID (HEC channels are GUIDs)") from None
        return v


def build(name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> SplunkHecSink:
    """A Splunk HEC sink named `name`.

    Raises:
        ConfigError: an unknown option, a bad value or URL, or the token variable unset.
    """
    opts = parse_options(SplunkHecOptions, "splunk_hec", name, options)
    where = target(f"telemetry sink `{name}` (splunk_hec)", opts.url, timeout=opts.timeout, ca_file=opts.ca_file,
                   token_env=opts.token_env, default_path=EVENT_PATH)
    return SplunkHecSink(name, formatter, opts, where)


class SplunkHecSink:
    def __init__(self, name: str, formatter: Callable[[TelemetryEvent], str], options: SplunkHecOptions,
                 where: HttpTarget) -> None:
        self.name = name
        self._formatter = formatter
        self._opts = options
        self._target = where
        self._host = options.host or socket.gethostname()

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        """POST the batch; returns once HEC answered `{"code": 0}`, else raises `SinkError`."""
        if not events:
            return
        o = self._opts
        objects = [hec_event(e, formatted(self._formatter, e, self._target.sink), host=self._host, source=o.source,
                             sourcetype=o.sourcetype, index=o.index) for e in events]
        body = "\n".join(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) for obj in objects).encode()
        headers = {"Content-Type": "application/json"}
        if o.channel is not None:
            headers["X-Splunk-Request-Channel"] = o.channel
        resp = self._target.post(body, headers, ("Authorization", "Splunk"))
        try:
            answer = json.loads(resp.body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("code") != 0:
            shown = answer if isinstance(answer, dict) else resp.body[:200].decode("utf-8", "replace")
            raise SinkError(f"{self._target.sink}: {self._target.origin} answered HTTP {resp.status} without HEC's "
                            f"success (`code` 0): {shown}")

    def close(self) -> None:
        """Nothing to release: each batch has its own connection."""


def hec_event(event: TelemetryEvent, text: str, *, host: str, source: str, sourcetype: str,
              index: str | None) -> dict[str, Any]:
    """One HEC event object for `event`, whose formatted text is `text`."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    if not isinstance(value, dict):
        value = text
    out: dict[str, Any] = {}
    seconds = _epoch(event.time)
    if seconds is not None:
        out["time"] = seconds
    out |= {"host": host, "source": source, "sourcetype": sourcetype}
    if index is not None:
        out["index"] = index
    fields = {"event_id": event.event_id, "event_type": event.type, "severity": event.severity}
    if event.session_id is not None:
        fields["session_id"] = event.session_id
    out |= {"event": value, "fields": fields}
    return out


def _epoch(value: str) -> float | None:
    try:
        t = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return round(t.timestamp(), 3) if t.tzinfo is not None else None
