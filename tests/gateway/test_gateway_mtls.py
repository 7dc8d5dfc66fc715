"""The gateway's HTTP front over mutual TLS: `aarmor gateway` (a real subprocess) with `gateway.tls`, real
handshakes with client certificates from a throwaway CA, mcp-server-time as the upstream. The certificate's
service is the MCP session's (in receipts), conflicting services from a token or identity header are
refused, a session answers only to its certificate, and clients without a valid certificate cannot connect."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.mcp_support import free_port, time_server_argv, wait_for_port
from tests.tls_support import Issued, Pki

from .conftest import AARMOR, GatewaySetup, upstream

POLICY = """
policy: {id: mtls-gateway, version: "1", default: DENY}
rules:
  - id: time-only
    match: {tool: get_current_time}
    action: ALLOW
"""
ALICE = "alice-secret-token"
PAYROLL = "payroll-secret-token"
ACCEPT = {"Accept": "application/json, text/event-stream"}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}}}


def _sha(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def _init(**meta: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "t", "version": "1"}}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_gateway(gw: GatewaySetup, pki: Pki) -> Iterator[Callable[..., str]]:
    """Write the config (time upstream, tokens, identity headers, `gateway.tls`) and start the gateway."""
    procs: list[subprocess.Popen[Any]] = []

    def start(**tls: Any) -> str:
        port = free_port()
        url = f"https://127.0.0.1:{port}/mcp"
        gw.write(policy=POLICY, gateway={
            "upstreams": {"time": upstream(time_server_argv())},
            "listen": url,
            "tokens": [{"sha256": _sha(ALICE), "identity": {"human": "alice@company.com", "agent": "bot"}},
                       {"sha256": _sha(PAYROLL), "identity": {"human": "alice@company.com",
                                                              "service": "payroll-svc"}}],
            "identity_headers": {"human": "X-Human", "service": "X-Service"},
            "tls": {"cert": str(pki.server.cert), "key": str(pki.server.key), "client_ca": str(pki.ca_file),
                    **tls}})
        with (gw.tmp / "gateway.log").open("a") as log:
            p = subprocess.Popen([AARMOR, "gateway", "--config", str(gw.config)], env=gw.env,
                                 stdout=subprocess.DEVNULL, stderr=log)
        procs.append(p)
        wait_for_port(port, p)  # type: ignore[arg-type]
        return url

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def client(pki: Pki, cert: Issued | None) -> httpx.Client:
    return httpx.Client(verify=pki.client_context(cert), timeout=30)


def _open(c: httpx.Client, url: str, headers: dict[str, str], **meta: Any) -> httpx.Response:
    return c.post(url, json=_init(**meta), headers={**ACCEPT, **headers})


def _session(c: httpx.Client, url: str, headers: dict[str, str], **meta: Any) -> dict[str, str]:
    r = _open(c, url, headers, **meta)
    assert r.status_code == 200, r.text
    h = {**ACCEPT, **headers, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    assert c.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h).status_code == 202
    return h


def _requester(gw: GatewaySetup) -> list[dict[str, Any]]:
    return [r.body["action"]["requester_context"] for r in gw.receipts()]


def test_the_certificate_is_the_service_of_the_mcp_session(gw: GatewaySetup, tls_gateway: Any, pki: Pki) -> None:
    url = tls_gateway()
    billing = pki.issue("billing", cn="billing-svc")
    bearer = {"Authorization": f"Bearer {ALICE}"}
    with client(pki, billing) as c:
        # a delegation chain at initialize keeps how the identity was vouched for
        h = _session(c, url, bearer, **{"aarmor/delegation": [{"delegator": "alice@company.com", "delegatee": "bot"}]})
        r = c.post(url, json=CALL, headers=h)
        assert r.status_code == 200 and "error" not in r.json() and not r.json()["result"].get("isError"), r.text
    [rc] = _requester(gw)
    assert (rc["service"], rc["verified_by"], rc["human"], rc["agent"]) == (
        "billing-svc", "mtls", "alice@company.com", "bot")
    assert rc["delegation_chain"][0]["delegatee"] == "bot"

    # the official SDK client, its httpx client presenting the certificate
    async def sdk_call() -> Any:
        from mcp.client.session import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        async with httpx.AsyncClient(verify=pki.client_context(billing), headers=bearer, timeout=30) as http, \
                streamable_http_client(url, http_client=http) as (rd, wr), ClientSession(rd, wr) as s:
            await s.initialize()
            return await s.call_tool("get_current_time", {"timezone": "UTC"})

    result = asyncio.run(sdk_call())
    assert not result.is_error, result
    assert [(x["service"], x["verified_by"]) for x in _requester(gw)] == [("billing-svc", "mtls")] * 2


def test_a_token_or_header_naming_another_service_is_refused(gw: GatewaySetup, tls_gateway: Any, pki: Pki) -> None:
    url = tls_gateway()
    with client(pki, pki.issue("billing", cn="billing-svc")) as c:
        token = _open(c, url, {"Authorization": f"Bearer {PAYROLL}"})
        assert token.status_code == 403
        assert token.json()["error"]["message"] == (
            "Forbidden: the identity claims service `payroll-svc` but the client certificate "
            "`CN=billing-svc,O=aarmor tests` vouches for service `billing-svc`")
        header = _open(c, url, {"X-Human": "bob@company.com", "X-Service": "payroll-svc"})
        assert header.status_code == 403 and "claims service `payroll-svc`" in header.text
        # the header naming the certificate's own service is no conflict
        h = _session(c, url, {"X-Human": "bob@company.com", "X-Service": "billing-svc"})
        assert c.post(url, json=CALL, headers=h).status_code == 200
    [rc] = _requester(gw)
    assert (rc["human"], rc["service"], rc["verified_by"]) == ("bob@company.com", "billing-svc", "mtls")


def test_a_session_answers_only_to_the_certificate_that_opened_it(tls_gateway: Any, pki: Pki) -> None:
    url = tls_gateway()
    bearer = {"Authorization": f"Bearer {ALICE}"}
    with client(pki, pki.issue("billing", cn="billing-svc")) as c:
        h = _session(c, url, bearer)
    with client(pki, pki.issue("other", cn="billing-svc")) as c:  # same token, same service, another cert
        r = c.post(url, json=CALL, headers=h)
        assert r.status_code == 404 and "Session not found" in r.text


def test_clients_without_a_valid_certificate_cannot_connect(gw: GatewaySetup, tls_gateway: Any, pki: Pki) -> None:
    now = datetime.now(UTC)
    revoked = pki.issue("revoked", cn="billing-svc")
    url = tls_gateway(crl=str(pki.crl(revoked)))
    for cert in (None, pki.issue("foreign", cn="billing-svc", other_ca=True),
                 pki.issue("expired", cn="billing-svc", not_before=now - timedelta(days=3),
                           not_after=now - timedelta(days=1)), revoked):
        with client(pki, cert) as c, pytest.raises(httpx.TransportError):
            _open(c, url, {"Authorization": f"Bearer {ALICE}"})
    with client(pki, pki.issue("good", cn="billing-svc")) as c:
        h = _session(c, url, {"Authorization": f"Bearer {ALICE}"})
        assert c.post(url, json=CALL, headers=h).status_code == 200
    assert [rc["service"] for rc in _requester(gw)] == ["billing-svc"]


def test_service_from_dns_san_and_a_certificate_without_one(tls_gateway: Any, pki: Pki) -> None:
    url = tls_gateway(service_from="san_dns")
    with client(pki, pki.issue("cn-only", cn="billing-svc")) as c:
        r = _open(c, url, {"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 403 and "has no DNS subject alternative name" in r.text


def test_https_listen_needs_tls_and_an_unusable_certificate_stops_the_gateway(gw: GatewaySetup, pki: Pki,
                                                                               tmp_path: Path) -> None:
    gw.write(policy=POLICY, gateway={"upstreams": {"time": upstream(time_server_argv())}})
    port = free_port()
    no_tls = gw.cli("gateway", "--listen", f"https://127.0.0.1:{port}/mcp")
    assert no_tls.returncode != 0 and "an https:// address needs `gateway.tls`" in no_tls.stderr
    gw.write(policy=POLICY, gateway={"upstreams": {"time": upstream(time_server_argv())},
                                     "tls": {"cert": str(tmp_path / "missing.pem")}})
    bad = gw.cli("gateway", "--listen", f"https://127.0.0.1:{port}/mcp")
    assert bad.returncode != 0 and "gateway.tls.cert/key: cannot use" in bad.stderr
