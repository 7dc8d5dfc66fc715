"""`aarmor gateway`: put aarmor between an MCP client and its MCP servers.

Two forms: `aarmor gateway --config gateway.yaml` (upstreams, identity and listen address from the
`gateway:` section) and the one-line wrapper for a client's configuration,
`aarmor gateway -- npx -y @modelcontextprotocol/server-filesystem /data`, which fronts that one stdio
server. On stdio the protocol owns stdout: every message of ours goes to stderr.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import urllib.parse
from typing import TYPE_CHECKING, Annotated

import typer

from aarmor.cli._common import ConfigOption, fail, open_guard

if TYPE_CHECKING:  # pragma: no cover
    from aarmor.adapters.mcp.gateway import Gateway

__all__ = ["gateway"]


def gateway(
    command: Annotated[list[str] | None, typer.Argument(
        help="After `--`: a stdio MCP server to front (command and arguments), instead of the configured "
             "upstreams.", show_default=False)] = None,
    config: ConfigOption = None,
    listen: Annotated[str | None, typer.Option(
        "--listen", help="`stdio`, or http://HOST:PORT/PATH for Streamable HTTP (default: config, stdio).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each upstream event to stderr.")] = False,
) -> None:
    """Serve MCP: every tools/call is decided by policy, enforced and receipted."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if verbose else logging.WARNING,
                        format="aarmor gateway: %(levelname)s %(message)s")
    try:
        import mcp  # noqa: F401
    except ImportError as exc:
        from aarmor.adapters.mcp import MISSING_EXTRA

        raise fail(f"{MISSING_EXTRA} (missing: {exc.name or exc})") from exc
    from aarmor.adapters.mcp.gateway import Gateway
    from aarmor.config import UpstreamConfig
    from aarmor.errors import AarmorError

    guard = open_guard(config)
    try:
        cfg = guard.config.gateway
        if command:
            cfg = dataclasses.replace(cfg, upstreams=(UpstreamConfig(
                name="upstream", command=command[0], args=tuple(command[1:])),))
        if listen is not None:
            cfg = dataclasses.replace(cfg, listen=listen)
        try:
            gw = Gateway(guard, cfg)
        except AarmorError as exc:
            raise fail(str(exc)) from exc
        if cfg.listen == "stdio":
            _run_stdio(gw)
        else:
            _run_http(gw, cfg.listen)
    finally:
        guard.close()


def _run_stdio(gw: Gateway) -> None:
    import asyncio

    print(f"aarmor gateway: serving MCP on stdio for {len(gw.config.upstreams)} upstream(s) "
          f"(policy {gw.guard.policy.policy_id})", file=sys.stderr)
    try:
        asyncio.run(gw.serve_stdio())
    except (KeyboardInterrupt, asyncio.CancelledError):  # SIGINT, or SIGTERM/SIGHUP (see serve_stdio)
        pass


def _run_http(gw: Gateway, listen: str) -> None:
    from aarmor.errors import AarmorError

    url = urllib.parse.urlsplit(listen)
    tls = gw.config.tls
    if url.scheme not in ("http", "https") or not url.hostname:
        raise fail(f"--listen `{listen}`: expected stdio, http://HOST:PORT/PATH, or https://HOST:PORT/PATH "
                   "with `gateway.tls`")
    if (url.scheme == "https") != (tls is not None):
        raise fail(f"--listen `{listen}`: an https:// address needs `gateway.tls` (certificate and key), and "
                   "`gateway.tls` needs an https:// address")
    host, port, path = url.hostname, url.port or (443 if tls else 80), url.path or "/mcp"
    loopback = host in ("127.0.0.1", "localhost", "::1")
    mutual = " with client certificates (mutual TLS)" if tls is not None and tls.mutual else ""
    print(f"aarmor gateway: serving MCP on {url.scheme}://{host}:{port}{path}{mutual}", file=sys.stderr)
    try:
        gw.serve_http(host, port, path, loopback=loopback)
    except AarmorError as exc:
        raise fail(str(exc)) from exc
