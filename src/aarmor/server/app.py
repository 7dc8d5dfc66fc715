"""The Starlette application: routes, error handling, security headers, the cookie session and lifespan.

Rules:
- Errors under `/v1` (and anywhere a client asks for JSON) are `{"error": {"code", "message"}}`; the page
  gets an HTML error page. An unexpected exception is logged and answered 500 without details.
- Every response carries a strict Content-Security-Policy (scripts and styles from `/static` only, no
  inline script), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`.
- The page's session cookie is signed with `<home>/server-secret` (created 0600 on first use; a file that
  group or others may read is refused), HttpOnly, SameSite=Strict, Secure when served over https (the
  public URL is https, or `server.tls` is set).
- On shutdown, actions waiting for an outcome are released (recorded as "outcome unknown").
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aarmor.errors import AarmorError, ConfigError
from aarmor.guard import Guard
from aarmor.server import api, pages
from aarmor.server.actions import ActionRunner
from aarmor.server.http import ApiError, error_body, json_response, status_for
from aarmor.server.openapi import openapi_document
from aarmor.server.registry import SessionRegistry

__all__ = ["ServerState", "build_app", "load_secret"]

log = logging.getLogger("aarmor.server")

_HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SESSION_MAX_AGE = 8 * 3600


@dataclass(eq=False)
class ServerState:
    guard: Guard
    sessions: SessionRegistry
    actions: ActionRunner
    pages: pages.Pages


def load_secret(home: Path) -> str:
    """The cookie signing secret in `<home>/server-secret`, created 0600 on first use.

    Raises:
        ConfigError: the file cannot be read or created, or group/others may access it.
    """
    path = home / "server-secret"
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"server secret `{path}` has unsafe permissions {stat.S_IMODE(mode):04o}; "
                                  "expected 0600 (chmod 600 it)") from None
            text = path.read_text(encoding="ascii").strip()
            if len(text) < 32:
                raise ConfigError(f"server secret `{path}` is too short; delete it to generate a new one") from None
            return text
        with os.fdopen(fd, "w", encoding="ascii") as f:
            value = secrets.token_hex(32)
            f.write(value + "\n")
        return value
    except OSError as exc:
        raise ConfigError(f"cannot use server secret `{path}`: {exc.strerror or exc}") from exc


class SecurityHeaders:
    """Adds the security headers above to every HTTP response (plain ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for k, v in ((b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                             (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")):
                    if k not in present:
                        headers.append((k, v))
                if b"cache-control" not in present and not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


def _wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/v1") or path in ("/openapi.json", "/healthz", "/readyz") or \
        "application/json" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    if _wants_json(request):
        return json_response(error_body(code, str(exc.detail)), exc.status_code, exc.headers)
    state: ServerState = request.app.state.aarmor
    return state.pages.error_page(request, exc.status_code, str(exc.detail), headers=exc.headers)


async def _aarmor_error(request: Request, exc: Exception) -> Response:
    status, code = status_for(exc)
    message = getattr(exc, "message", None) or str(exc)
    headers = getattr(exc, "headers", None)
    if _wants_json(request):
        return json_response(error_body(code, message), status, headers)
    state: ServerState = request.app.state.aarmor
    return state.pages.error_page(request, status, message, headers=headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return json_response(error_body("internal", "internal error (logged on the server)"), 500)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: ServerState = request.app.state.aarmor
    checks = {"store": "ok", "policy": "ok"}
    try:
        await run_in_threadpool(state.guard.store.log_head, "readyz-probe")
    except Exception:
        checks["store"] = "unavailable"
    try:
        if not state.guard.policy.hash:
            checks["policy"] = "not loaded"
    except Exception:
        checks["policy"] = "not loaded"
    ok = all(v == "ok" for v in checks.values())
    return json_response({"status": "ready" if ok else "not_ready", "checks": checks}, 200 if ok else 503)


async def openapi(request: Request) -> Response:
    state: ServerState = request.app.state.aarmor
    public = state.guard.config.server.public_url
    return json_response(openapi_document(public.rstrip("/") if public else str(request.base_url).rstrip("/")))


def build_app(guard: Guard, *, outcome_timeout: float | None = None, secret: str | None = None,
              https_only: bool | None = None, max_in_flight: int = 1000) -> Starlette:
    """See `aarmor.server.create_app`."""
    secret = secret or load_secret(guard.config.home)
    if https_only is None:  # the configured public URL, else this listener (`server.tls`)
        https_only = guard.config.server.base_url.startswith("https://")
    if outcome_timeout is None:
        outcome_timeout = guard.config.server.outcome_timeout
    state = ServerState(guard, SessionRegistry(guard), ActionRunner(guard, outcome_timeout=outcome_timeout,
                                                                    max_in_flight=max_in_flight),
                        pages.Pages(guard))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(state.actions.shutdown)

    routes: list[Any] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *api.routes(),
        *pages.routes(),
        Mount("/static", app=StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionMiddleware, secret_key=secret, session_cookie="aarmor_session",
                       max_age=SESSION_MAX_AGE, same_site="strict", https_only=https_only),
        ],
        # ApiError and AarmorError are answered inside the middleware stack (security headers apply);
        # anything else is a bug: logged, answered 500 without details
        exception_handlers={HTTPException: _http_error, ApiError: _aarmor_error, AarmorError: _aarmor_error,
                            Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.aarmor = state
    return app
