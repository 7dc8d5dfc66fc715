"""The OTLP/HTTP receiver of `aarmor ingest otlp`: POST /v1/traces and /v1/logs, GET /health.

Rules:
- Every POST needs `Authorization: Bearer <token>` of an API token with role `agent` (or `admin`): what it
  sends becomes signed receipts. No token, a bad one: 401, nothing read further.
- The body is decoded whole before anything is recorded: a body that does not decode is answered 400
  (415 for another media type or encoding, 413 over `max_body` bytes) with a `google.rpc.Status` naming
  what is wrong, and nothing is recorded.
- A decoded body is accepted record by record: tool records that cannot be read, or whose session has ended,
  are rejected and counted in the response's `partial_success` (with the reasons in `error_message`);
  the others are recorded. Records that are not tool events are accepted and ignored.
- A store failure while recording is 503 (retryable per OTLP): the exporter retries and what was already
  recorded is deduplicated (aarmor.ingest.recorder).
- Responses are encoded like the request (protobuf or JSON).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aarmor.errors import AarmorError, AuthError
from aarmor.ingest.otlp_codec import (
    JSON,
    PROTOBUF,
    PayloadError,
    decode_request,
    encode_response,
    encode_status,
    inflate,
    media_type,
)
from aarmor.ingest.recorder import Recorder
from aarmor.ingest.tool_events import parse_logs, parse_traces
from aarmor.tokens import authenticate

__all__ = ["DEFAULT_MAX_BODY", "build_ingest_app"]

log = logging.getLogger("aarmor.ingest")

#: bytes a request body may have, before and after decompression
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: rejection reasons quoted in `partial_success.error_message` (the count is always exact)
_MAX_REASONS = 20
_PARSERS = {"traces": parse_traces, "logs": parse_logs}
# gRPC status codes in google.rpc.Status bodies
_INVALID_ARGUMENT, _UNAUTHENTICATED, _UNAVAILABLE = 3, 16, 14


def build_ingest_app(guard: Any, *, max_body: int = DEFAULT_MAX_BODY) -> Starlette:
    """The receiver for `guard` (the guard stays the caller's to close)."""
    recorder = Recorder(guard)

    async def export(request: Request) -> Response:
        signal = request.url.path.rsplit("/", 1)[-1]
        # answer in the request's encoding whenever it names one we speak
        kind = PROTOBUF if (request.headers.get("content-type") or "").lower().startswith(PROTOBUF) else JSON
        try:
            await _authenticate(request, guard)
            media_type(request.headers.get("content-type"))
            body = await _read(request, max_body)
            message = decode_request(signal, inflate(body, request.headers.get("content-encoding"), max_body), kind)
        except PayloadError as exc:
            return _status(kind, exc.status, _INVALID_ARGUMENT, str(exc))
        except AuthError as exc:
            return _status(kind, 401, _UNAUTHENTICATED, str(exc), {"WWW-Authenticate": 'Bearer realm="aarmor"'})
        parsed = _PARSERS[signal](message)
        try:
            result = await run_in_threadpool(recorder.record, parsed)
        except AarmorError as exc:
            log.error("OTLP %s: could not record: %s", signal, exc)
            return _status(kind, 503, _UNAVAILABLE, f"aarmor could not record the observed actions: {exc}",
                           {"Retry-After": "1"})
        reasons = parsed.rejected + result.rejected
        text = "; ".join(reasons[:_MAX_REASONS]) + (f"; and {len(reasons) - _MAX_REASONS} more"
                                                    if len(reasons) > _MAX_REASONS else "")
        if reasons:
            log.warning("OTLP %s: %d tool record(s) rejected: %s", signal, len(reasons), text)
        return Response(encode_response(signal, kind, len(reasons), text), 200, media_type=kind)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "mode": "observe-only"})

    return Starlette(routes=[Route("/v1/traces", export, methods=["POST"]), Route("/v1/logs", export,
                                                                                 methods=["POST"]),
                             Route("/health", health, methods=["GET"])])


async def _authenticate(request: Request, guard: Any) -> None:
    header = request.headers.get("authorization") or ""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthError("this receiver needs `Authorization: Bearer <token>` (an API token with role agent)")
    await run_in_threadpool(authenticate, guard.store, secret.strip(), roles=("agent",))


async def _read(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise PayloadError(f"the body exceeds {limit} bytes", 413)
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadError(f"the body exceeds {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _status(kind: str, http: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_status(kind, code, message), http, headers=headers, media_type=kind)
