"""OTLP/HTTP request and response bodies: protobuf and JSON, as the OTLP specification defines them.

Rules (OTLP 1.x, "OTLP/HTTP"):
- `application/x-protobuf` bodies are the binary `Export{Trace,Logs}ServiceRequest`; `application/json`
  bodies are its JSON mapping, where `traceId`/`spanId` are hex strings (not base64, unlike the protobuf
  JSON mapping), enums are integers and unknown fields are ignored.
- A body may be gzip-compressed (`Content-Encoding: gzip`); the decompressed size is bounded too.
- The response is encoded like the request: an `Export*ServiceResponse`, with `partial_success` when some
  records were rejected, or a `google.rpc.Status` for an error.
- Anything that does not decode is a `PayloadError` naming what is wrong; nothing is half-decoded.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

__all__ = [
    "JSON",
    "PROTOBUF",
    "PayloadError",
    "decode_request",
    "encode_response",
    "encode_status",
    "media_type",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: signal -> (request message, response message, partial-success counter field)
SIGNALS: dict[str, tuple[type[Message], type[Message], str]] = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse,
               "rejected_spans"),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse,
             "rejected_log_records"),
}
#: OTLP JSON fields holding ids as hex strings, by the object that carries them
_HEX_IDS = ("traceId", "spanId", "parentSpanId")


class PayloadError(ValueError):
    """A request body that cannot be decoded; `status` is the HTTP status to answer (400, 413, 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def media_type(content_type: str | None) -> str:
    """`application/x-protobuf` or `application/json` from a Content-Type header (parameters ignored).

    Raises:
        PayloadError (415): any other media type.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise PayloadError(f"Content-Type `{content_type or ''}` is not supported: OTLP/HTTP takes "
                           f"`{PROTOBUF}` or `{JSON}`", 415)
    return kind


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its Content-Encoding (none or gzip), at most `limit` bytes.

    Raises:
        PayloadError: an unsupported encoding (415), a corrupt gzip stream (400), or too large (413).
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc != "gzip":
        raise PayloadError(f"Content-Encoding `{encoding}` is not supported (gzip or none)", 415)
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(body, limit + 1)
        if len(out) > limit or d.unconsumed_tail:
            raise PayloadError(f"the decompressed body exceeds {limit} bytes", 413)
        if not d.eof:
            raise PayloadError("the gzip body is truncated")
        return out
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise PayloadError(f"the body is not valid gzip: {exc}") from exc


def decode_request(signal: str, body: bytes, kind: str) -> Message:
    """The `Export*ServiceRequest` of `signal` ("traces" or "logs") in `body`, encoded as `kind`.

    Raises:
        PayloadError: the body is not that message in that encoding (the message says where).
    """
    request_type = SIGNALS[signal][0]
    msg = request_type()
    if kind == PROTOBUF:
        try:
            msg.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise PayloadError(f"the body is not a protobuf {request_type.__name__}: {exc}") from exc
        return msg
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"the body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError(f"the JSON body must be an object ({request_type.__name__}), found "
                           f"{type(doc).__name__}")
    try:
        _hex_ids_to_base64(doc, "$")
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, PayloadError, RecursionError) as exc:
        raise PayloadError(f"the JSON body is not an OTLP {request_type.__name__}: {exc}") from exc
    return msg


def _hex_ids_to_base64(node: Any, path: str) -> None:
    """OTLP JSON writes trace and span ids as hex; the protobuf JSON parser expects base64 for bytes."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _hex_ids_to_base64(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in _HEX_IDS and isinstance(value, str):
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii") if value else ""
            except ValueError:
                raise PayloadError(f"{path}.{key}: `{value[:64]}` is not a hex id") from None
        else:
            _hex_ids_to_base64(value, f"{path}.{key}")


def encode_response(signal: str, kind: str, rejected: int, message: str) -> bytes:
    """The `Export*ServiceResponse` body, with `partial_success` when records were rejected."""
    _, response_type, field = SIGNALS[signal]
    resp = response_type()
    if rejected or message:
        setattr(resp.partial_success, field, rejected)
        resp.partial_success.error_message = message
    return _encode(resp, kind)


def encode_status(kind: str, code: int, message: str) -> bytes:
    """A `google.rpc.Status` body (OTLP/HTTP error responses); `code` is a gRPC code (3: invalid argument)."""
    return _encode(status_pb2.Status(code=code, message=message), kind)


def _encode(msg: Message, kind: str) -> bytes:
    if kind == PROTOBUF:
        return bytes(msg.SerializeToString())
    return json.dumps(json_format.MessageToDict(msg), separators=(",", ":")).encode()


def hex_id(raw: bytes) -> str:
    """A trace or span id as lower-case hex ("" when absent)."""
    return binascii.hexlify(raw).decode("ascii")
