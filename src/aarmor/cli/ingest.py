"""`aarmor ingest otlp`: receive agent telemetry over OTLP/HTTP and record tool calls as observed actions.

Observe-only (AARM 4.3): the actions already happened; aarmor judges them with the policy, records signed
receipts marked observed and raises alerts, and never blocks anything (docs/ingest-otlp.md).
Needs the `ingest` extra. Binds to 127.0.0.1:4318 by default (the OTLP/HTTP port).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from aarmor.cli._common import ConfigOption, fail, open_guard

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


@app.command("otlp")
def otlp(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (4318: the OTLP/HTTP default).", min=0,
                                      max=65535)] = 4318,
) -> None:
    """Receive OTLP/HTTP traces and logs (POST /v1/traces, /v1/logs); record agent tool calls as observed."""
    try:
        import uvicorn

        from aarmor.ingest.receiver import build_ingest_app
    except ImportError as exc:
        from aarmor.ingest import MISSING_EXTRA

        raise fail(f"{MISSING_EXTRA} (missing: {exc.name or exc})") from exc

    guard = open_guard(config)
    try:
        if not any(t.role in ("agent", "admin") and t.revoked_at is None for t in guard.store.token_list()):
            print("aarmor: no agent token exists yet; exporters must send one. Create it (its secret is printed "
                  "once) with:\n    aarmor tokens create NAME --role agent", file=sys.stderr)
        server = uvicorn.Server(uvicorn.Config(build_ingest_app(guard), host=host, port=port, log_level="info",
                                               lifespan="off"))
        print(f"aarmor: receiving OTLP/HTTP on http://{host}:{port}/v1/traces and /v1/logs, observe-only: tool "
              f"calls are judged by policy {guard.policy.policy_id} {guard.policy.version} and recorded, never "
              "blocked", file=sys.stderr)
        server.run()
    finally:
        guard.close()
