"""Edge helpers of the JSON API: error bodies, bounded JSON parsing into pydantic models, bearer auth.

Rules:
- Every error is `{"error": {"code", "message"}}`; `ApiError` carries the HTTP status and a stable code.
- Bodies are read up to a named size (413 beyond it), parsed with `canonical.loads_strict` (duplicate keys,
  NaN and Infinity are 400) and validated by a pydantic model (422 naming the field).
- Authentication (401) is checked before anything else, the role (403) next; a revoked token is 401.
- aarmor errors map to statuses in one table (`status_for`), so no route invents its own mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aarmor.canonical import canonical_bytes, loads_strict, to_json
from aarmor.errors import (
    AarmorError,
    AuthError,
    ChainError,
    InputError,
    LimitExceeded,
    NotFound,
    Refused,
    StoreError,
)
from aarmor.store import ApiToken
from aarmor.tokens import authenticate

__all__ = ["ApiError", "error_body", "json_response", "read_model", "require", "status_for"]

M = TypeVar("M", bound=BaseModel)

#: Refused.code -> HTTP status (anything else, e.g. not_pending, expired, bad_field, is 409: the request is
#: well-formed but the item's current state refuses it)
_REFUSED = {"not_an_approver": 403, "self_approval": 403, "not_owner": 403}


class ApiError(Exception):
    """An HTTP error with a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        super().__init__(message)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code for an exception raised below the door."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    if isinstance(exc, Refused):
        return _REFUSED.get(exc.code, 409), exc.code
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, LimitExceeded):
        return 422, "limit_exceeded"
    if isinstance(exc, InputError):
        return 422, "invalid"
    if isinstance(exc, AuthError):
        return 401, "unauthorized"
    if isinstance(exc, ChainError):
        return 409, "chain_error"
    if isinstance(exc, StoreError):
        return 503, "store_unavailable"
    if isinstance(exc, AarmorError):
        return 400, "bad_request"
    return 500, "internal"


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=dict(headers) if headers else None)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (413) before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, "too_large", f"request body exceeds {limit} bytes")
        except ValueError as exc:
            raise ApiError(400, "bad_request", "invalid Content-Length header") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M], *, limit: int) -> M:
    """Parse the JSON body into `model`.

    Raises:
        ApiError: 413 too large, 400 not JSON (or duplicate keys, NaN), 422 not valid for the model.
    """
    raw = await read_body(request, limit)
    if not raw.strip():
        raise ApiError(400, "bad_json", "the request needs a JSON body")
    try:
        data = loads_strict(raw)
    except (InputError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {exc}") from exc
    try:
        # what the pipeline cannot sign or hash exactly is refused here, not half-way through an action:
        # integers beyond +-(2**53 - 1), non-finite numbers, lone surrogates
        canonical_bytes(to_json(data))
    except (InputError, RecursionError) as exc:
        raise ApiError(422, "invalid", f"request body: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid", _validation_message(exc)) from exc


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"`{loc}`: {msg}")
    return "; ".join(parts)


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "expected `Authorization: Bearer <token>`",
                       {"WWW-Authenticate": 'Bearer realm="aarmor"'})
    return value.strip()


async def require(request: Request, *roles: str) -> ApiToken:
    """The authenticated token, which must have one of `roles` (admin always may).

    Raises:
        ApiError: 401 no, malformed, unknown or revoked token; 403 a role not allowed here.
    """
    secret = bearer(request)
    if secret is None:
        raise ApiError(401, "unauthorized", "this route needs `Authorization: Bearer <token>`",
                       {"WWW-Authenticate": 'Bearer realm="aarmor"'})
    store = request.app.state.aarmor.guard.store
    try:
        tok: ApiToken = await run_in_threadpool(authenticate, store, secret)
    except AuthError as exc:
        raise ApiError(401, "unauthorized", str(exc), {"WWW-Authenticate": 'Bearer realm="aarmor"'}) from exc
    if tok.role != "admin" and tok.role not in roles:
        raise ApiError(403, "forbidden", f"token `{tok.token_id}` has role `{tok.role}`; this route needs "
                       + " or ".join(roles))
    return tok


def dumps_line(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
