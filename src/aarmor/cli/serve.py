"""`aarmor serve`: the HTTP API and the approver page on uvicorn (needs the `server` extra).

Rules: binds to the configured host and port (127.0.0.1:8731 by default), over HTTPS with `server.tls`
(client certificates give the service identity when `server.tls.client_ca` is set); never creates a credential by
itself: without an active admin token it prints how to create one. On exit, actions still waiting for an
outcome are recorded as "outcome unknown" and the guard is closed (waiters end as DENY).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, fail, open_guard

__all__ = ["serve"]


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to bind (default: config, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: config, 8731).", min=0,
                                             max=65535)] = None,
) -> None:
    """Serve the HTTP API (/v1) and the approver page."""
    try:
        import uvicorn

        from aarmor.server import create_app
        from aarmor.server.app import build_app  # noqa: F401  (imports starlette and jinja2 now, not mid-run)
    except ImportError as exc:
        from aarmor.server import MISSING_EXTRA

        raise fail(f"{MISSING_EXTRA} (missing: {exc.name or exc})") from exc
    from aarmor.errors import AarmorError
    from aarmor.tls import uvicorn_config

    guard = open_guard(config)
    try:
        bind_host = host or guard.config.server.host
        bind_port = guard.config.server.port if port is None else port
        try:
            app = create_app(guard)  # outcome deadline: server.outcome_timeout
        except AarmorError as exc:
            raise fail(str(exc)) from exc
        if not any(t.role == "admin" and t.revoked_at is None for t in guard.store.token_list()):
            print("aarmor: no admin token exists yet. Create one (its secret is printed once) with:\n"
                  "    aarmor tokens create NAME --role admin\n"
                  "and approver/agent tokens with --role approver / --role agent.", file=sys.stderr)
        tls = guard.config.server.tls
        try:
            server = uvicorn.Server(uvicorn_config(app, host=bind_host, port=bind_port, tls=tls, section="server",
                                                   log_level="info", lifespan="on", proxy_headers=False))
        except AarmorError as exc:
            raise fail(str(exc)) from exc
        mutual = " with client certificates (mutual TLS)" if tls is not None and tls.mutual else ""
        print(f"aarmor: serving the API and the approver page on {'https' if tls else 'http'}://{bind_host}:"
              f"{bind_port}/{mutual} (policy {guard.policy.policy_id} {guard.policy.version})", file=sys.stderr)
        server.run()
    finally:
        guard.close()
