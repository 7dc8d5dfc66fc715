"""The `syslog` sink: RFC 5424 messages over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS (RFC 5425).

One event is one message:

    <PRI>1 TIMESTAMP HOSTNAME aarmor PROCID MSGID [aarmor@32473 event_id="..." session="..."] MSG

- PRI = facility * 8 + severity; the severity comes from the event's (`critical` 2, `high` 3, `medium` 4,
  `low` 5, `info` 6). Facility `local0` by default: the conventional one for an application's own stream,
  easy to route on (`local0.* @@siem:514`), and it keeps JSON events out of `auth.log`, whose parsers expect
  sshd/PAM lines (`authpriv` is one option away).
- TIMESTAMP is the event's time (when it happened, not when it was sent); MSGID is the event type.
- The structured data carries the idempotency key (`event_id`), the session and the receipt, escaped as
  RFC 5424 6.3.3 requires (`"`, `\\`, `]`), so a receiver can drop the duplicates a resend makes.
- MSG is the formatted event; with a BOM before it when it is not pure ASCII (RFC 5424 6.4).

Size: a message longer than `max_message_bytes` is never dropped. Its MSG is cut (at a UTF-8 boundary) and
ends with `[truncated]`, its structured data says `truncated="<original bytes>"`, the sink counts it
(`truncated`) and logs the event id. Refusing it instead would stop the sink for good: the exporter would
resend the same batch forever.

Delivery: TCP and TLS keep one connection, checked before every batch (a receiver never writes to us, so a
readable socket means it closed) and opened again when it is gone; any error closes it and raises
`SinkError`, and the exporter resends the batch later. TCP syslog has no acknowledgement (RFC 6587): bytes a
receiver accepted into its socket but did not process before dying are lost, the price of the protocol (the
webhook and HEC sinks are acknowledged). UDP is fire-and-forget: `send` fails only when the kernel reports an
error (an ICMP port-unreachable from an earlier datagram, no route, ...).
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator

from aarmor.errors import ConfigError
from aarmor.telemetry import SinkError, TelemetryEvent
from aarmor.telemetry.sinks.common import SinkOptions, formatted, parse_options

__all__ = ["FACILITIES", "SEVERITY", "SyslogOptions", "SyslogSink", "build", "escape_param", "render"]

log = logging.getLogger("aarmor.telemetry.syslog")

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
    "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "solaris-cron": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}
#: event severity -> syslog severity (RFC 5424 table 2)
SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
APP_NAME = "aarmor"
BOM = b"\xef\xbb\xbf"
TRUNCATION_MARKER = b"[truncated]"
MIN_MESSAGE_BYTES = 2048  # RFC 5424 6.1: receivers SHOULD accept 2048 octets; header + SD always fit
MAX_UDP_BYTES = 65507  # the largest IPv4 UDP payload
MAX_STREAM_BYTES = 1 << 20
PARAM_VALUE_BYTES = 128  # an SD-PARAM value longer than this (a hostile session id) is cut before escaping
_SD_NAME = re.compile(r"[!#-~]{1,32}")  # PRINTUSASCII except `=`, SP, `]`, `"` (checked below)
_DEFAULT_PORTS = {"udp": 514, "tcp": 514, "tls": 6514}


class SyslogOptions(SinkOptions):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = "tcp"
    facility: str = "local0"
    #: HOSTNAME in the header (default: this machine's name)
    hostname: str | None = None
    #: the structured data element's id: `name@<private enterprise number>`
    sd_id: str = "aarmor@32473"
    max_message_bytes: int = Field(default=8192, ge=MIN_MESSAGE_BYTES, le=MAX_STREAM_BYTES)
    #: seconds for connecting and for each send
    timeout: float = Field(default=5.0, gt=0, le=300)
    # TLS only: CA bundle to verify the receiver with (default: the system's), the name to verify
    # (default: `host`), and a client certificate for receivers that require one
    ca_file: str | None = None
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("facility")
    @classmethod
    def _facility(cls, v: str) -> str:
        if v not in FACILITIES:
            raise ValueError(f"`{v}` is not a syslog facility ({', '.join(FACILITIES)})")
        return v

    @field_validator("sd_id")
    @classmethod
    def _sd_id(cls, v: str) -> str:
        name, at, number = v.partition("@")
        if not (at and _valid_sd_name(name) and number.isdigit() and number.isascii()):
            raise ValueError(f"`{v}` is not an SD-ID of the form `name@<enterprise number>` (RFC 5424 7.2.2)")
        return v

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[!-~]{1,255}", v):
            raise ValueError(f"`{v}` is not a syslog HOSTNAME (1-255 printable ASCII characters, no spaces)")
        return v


def build(name: str, formatter: Callable[[TelemetryEvent], str], options: Mapping[str, Any]) -> SyslogSink:
    """A syslog sink named `name` (nothing is connected until the first `send`).

    Raises:
        ConfigError: an unknown option, a bad value, a UDP size above 65507, TLS options without TLS,
            or a TLS file that cannot be used.
    """
    opts = parse_options(SyslogOptions, "syslog", name, options)
    tls_keys = [k for k in ("ca_file", "server_name", "cert_file", "key_file") if getattr(opts, k) is not None]
    if opts.transport != "tls" and tls_keys:
        raise ConfigError(f"telemetry sink `{name}` (syslog): option `{tls_keys[0]}` needs `transport: tls`")
    if opts.transport == "udp" and opts.max_message_bytes > MAX_UDP_BYTES:
        raise ConfigError(f"telemetry sink `{name}` (syslog): option `max_message_bytes`: {opts.max_message_bytes} "
                          f"is more than a UDP datagram carries ({MAX_UDP_BYTES})")
    if (opts.cert_file is None) != (opts.key_file is None):
        raise ConfigError(f"telemetry sink `{name}` (syslog): options `cert_file` and `key_file` go together")
    context = _tls_context(name, opts) if opts.transport == "tls" else None
    return SyslogSink(name, formatter, opts, context)


class SyslogSink:
    """Sends each batch as RFC 5424 messages, in order; see the module docstring for delivery."""

    def __init__(self, name: str, formatter: Callable[[TelemetryEvent], str], options: SyslogOptions,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self._label = f"telemetry sink `{name}` (syslog)"  # how errors name this sink
        self._formatter = formatter
        self._opts = options
        self._port = options.port or _DEFAULT_PORTS[options.transport]
        self._hostname = options.hostname or _sanitise(socket.gethostname(), 255)
        self._facility = FACILITIES[options.facility]
        self._tls = tls_context
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        #: messages whose MSG was cut to `max_message_bytes` (each also logged with its event id)
        self.truncated = 0

    def send(self, events: Sequence[TelemetryEvent]) -> None:
        """Deliver `events` in order, or raise `SinkError` (the connection, if any, is then closed)."""
        messages = [self._message(e) for e in events]
        if not messages:
            return
        with self._lock:
            if self._opts.transport == "udp":
                self._send_udp(messages)
            else:
                self._send_stream(messages)

    def close(self) -> None:
        with self._lock:
            self._drop(orderly=True)

    # --- messages --------------------------------------------------------------------------------------

    def _message(self, event: TelemetryEvent) -> bytes:
        text = formatted(self._formatter, event, self._label)
        message, original = render(event, text, facility=self._facility, hostname=self._hostname,
                                   procid=str(os.getpid()), sd_id=self._opts.sd_id,
                                   max_bytes=self._opts.max_message_bytes)
        if original is not None:
            self.truncated += 1
            log.warning("%s: event `%s` is %d bytes, more than max_message_bytes %d: its message was truncated",
                        self._label, event.event_id, original, self._opts.max_message_bytes)
        return message

    # --- transports ------------------------------------------------------------------------------------

    def _send_udp(self, messages: list[bytes]) -> None:
        try:
            if self._sock is None:
                self._sock = self._connect(socket.SOCK_DGRAM)
            for m in messages:
                self._sock.send(m)
        except OSError as exc:
            self._drop()
            raise SinkError(f"{self._label}: UDP send to {self._where()} failed: {_why(exc)}") from exc

    def _send_stream(self, messages: list[bytes]) -> None:
        if self._sock is not None and self._peer_closed(self._sock):
            self._drop()  # the receiver closed it since the last batch (restart, idle timeout): open a new one
        try:
            if self._sock is None:
                self._sock = self._connect(socket.SOCK_STREAM)
            # RFC 6587 3.4.1 octet counting: "<length> <message>", no delimiter; one write for the batch
            self._sock.sendall(b"".join(b"%d %s" % (len(m), m) for m in messages))
        except OSError as exc:  # ssl.SSLError and socket.timeout included
            self._drop()
            raise SinkError(f"{self._label}: {self._opts.transport.upper()} send to {self._where()} failed: "
                            f"{_why(exc)}") from exc

    def _connect(self, kind: int) -> socket.socket:
        last: OSError | None = None
        for family, _, proto, _, addr in socket.getaddrinfo(self._opts.host, self._port, type=kind):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._opts.timeout)
                sock.connect(addr)
                if self._tls is not None:
                    sock = self._tls.wrap_socket(sock, server_hostname=self._opts.server_name or self._opts.host)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"`{self._opts.host}` has no address")

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether the receiver closed or reset the connection. It never writes to us, so a readable socket
        is its end of file or an error; TLS 1.3 session tickets make a TLS socket readable with no data."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.settimeout(0)
            try:
                return sock.recv(4096) == b""
            finally:
                sock.settimeout(self._opts.timeout)
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except (OSError, ValueError):
            return True

    def _drop(self, orderly: bool = False) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            if orderly and isinstance(sock, ssl.SSLSocket):
                sock.settimeout(min(self._opts.timeout, 1.0))
                sock.unwrap()  # close_notify, so the receiver sees an orderly end rather than a truncation
        except (OSError, ValueError):
            pass  # the connection is already broken: nothing to say goodbye on
        finally:
            sock.close()

    def _where(self) -> str:
        return f"{self._opts.host}:{self._port}"


def render(event: TelemetryEvent, text: str, *, facility: int, hostname: str, procid: str, sd_id: str,
           max_bytes: int) -> tuple[bytes, int | None]:
    """The RFC 5424 message for `event` with MSG `text`, and its original size when it had to be cut."""
    pri = facility * 8 + SEVERITY.get(event.severity, 6)
    head = (f"<{pri}>1 {_timestamp(event.time)} {hostname or '-'} {APP_NAME} {_sanitise(procid, 128)} "
            f"{_sanitise(event.type, 32)} ").encode()
    params = [("event_id", event.event_id), ("session", event.session_id), ("receipt", event.receipt_id)]
    body = text.encode("utf-8", "replace")
    msg = (BOM + body) if not body.isascii() else body
    whole = head + _structured(sd_id, params) + b" " + msg
    if len(whole) <= max_bytes:
        return whole, None
    prefix = head + _structured(sd_id, [*params, ("truncated", str(len(whole)))]) + b" "
    room = max_bytes - len(prefix) - len(TRUNCATION_MARKER)
    cut = msg[:max(room, 0)].decode("utf-8", "ignore").encode()  # no half character at the end
    return prefix + cut + TRUNCATION_MARKER, len(whole)


def escape_param(value: str) -> str:
    """An SD-PARAM value with `"`, `\\` and `]` escaped (RFC 5424 6.3.3), cut to 128 bytes first."""
    raw = value.encode("utf-8", "replace")
    if len(raw) > PARAM_VALUE_BYTES:
        value = raw[:PARAM_VALUE_BYTES].decode("utf-8", "ignore")
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _structured(sd_id: str, params: list[tuple[str, str | None]]) -> bytes:
    inner = "".join(f' {k}="{escape_param(v)}"' for k, v in params if v is not None)
    return f"[{sd_id}{inner}]".encode("utf-8", "replace")


def _timestamp(value: str) -> str:
    """The event's time as an RFC 5424 TIMESTAMP in UTC (NILVALUE `-` if it is not a time with a zone)."""
    try:
        t = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return "-"
    if t.tzinfo is None:
        return "-"
    t = t.astimezone(UTC)
    frac = f"{t.microsecond:06d}" if t.microsecond % 1000 else f"{t.microsecond // 1000:03d}"
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


def _sanitise(value: str, limit: int) -> str:
    """A header field: PRINTUSASCII only (anything else becomes `_`), at most `limit` characters."""
    clean = "".join(c if "!" <= c <= "~" else "_" for c in value)[:limit]
    return clean or "-"


def _valid_sd_name(name: str) -> bool:
    return bool(_SD_NAME.fullmatch(name)) and not any(c in name for c in '=]"@')


def _tls_context(name: str, opts: SyslogOptions) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=opts.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if opts.cert_file is not None:
            ctx.load_cert_chain(opts.cert_file, opts.key_file)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f"`{f}`" for f in (opts.ca_file, opts.cert_file, opts.key_file) if f)
        raise ConfigError(f"telemetry sink `{name}` (syslog): cannot use the TLS files {files}: {_why(exc)}") from exc
    return ctx


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
