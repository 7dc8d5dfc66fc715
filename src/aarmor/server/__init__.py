"""`aarmor serve`: the HTTP API (`/v1/...`) and the approver page, one more door onto the pipeline.

Rules this package enforces (DESIGN.md sections 1 and 4):
- It only translates: HTTP bodies are validated with pydantic at the edge and handed to the same
  `Guard`, `Session`, `ApprovalDesk` and `DeferralDesk` every other door uses. It never decides.
- Every route that changes anything needs a bearer token (API) or a signed session cookie plus a CSRF
  token (page); roles are `agent`, `approver`, `admin` (admin may do everything).
- Errors are JSON `{"error": {"code", "message"}}` with 400/401/403/404/409/413/422/429/503, never a 500
  for bad input. The action a client mediates never runs without the pipeline's ALLOW (fail closed).
- Starlette, uvicorn and Jinja2 are the `server` extra: importing `aarmor` never imports them; only
  `create_app` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

    from aarmor.guard import Guard

__all__ = ["MISSING_EXTRA", "create_app"]

MISSING_EXTRA = "the HTTP server needs the `server` extra: pip install 'aarmor[server]'"


def create_app(guard: Guard, **options: Any) -> Starlette:
    """The ASGI application serving the API and the approver page for `guard`.

    Options: `outcome_timeout` (seconds an allowed action waits for its outcome report; default: the
    configuration's `server.outcome_timeout`, 300),
    `secret` (cookie signing key; default `<home>/server-secret`, created 0600 on first use),
    `https_only` (Secure cookies; default: the configured public URL is https).

    Raises:
        ImportError: the `server` extra is not installed (the message says how to install it).
        ConfigError: the signing secret file is unreadable or has unsafe permissions.
    """
    try:
        from aarmor.server.app import build_app
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc
    return build_app(guard, **options)
