"""`aarmor serve` over mutual TLS: real handshakes (httpx with client certificates from a throwaway CA), the
certificate's service on API sessions and in their receipts, refusals for conflicting claims, and clients
that cannot connect (no certificate, another CA, expired, revoked)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from aarmor.config import ApprovalsConfig, DeferralsConfig, ServerConfig, TlsConfig
from tests.server.conftest import GROUPS, POLICY, Running, free_port
from tests.tls_support import Issued, Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def serve_tls(make_guard: Callable[..., Any]) -> Iterator[Callable[..., Running]]:
    """`aarmor serve`'s app on the TLS listener `aarmor serve` uses (aarmor.tls.uvicorn_config), in a thread."""
    import uvicorn

    from aarmor.server import create_app
    from aarmor.tls import uvicorn_config

    started: list[tuple[Any, threading.Thread]] = []

    def start(tls: TlsConfig) -> Running:
        port = free_port()
        guard = make_guard(POLICY, approvals=ApprovalsConfig(groups=GROUPS, poll_interval=0.02),
                           deferrals=DeferralsConfig(poll_interval=0.02),
                           server=ServerConfig(port=port, tls=tls))
        config = uvicorn_config(create_app(guard, outcome_timeout=30.0), host="127.0.0.1", port=port, tls=tls,
                                section="server", log_level="warning", lifespan="on", ws="none", http="h11")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn-tls-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        started.append((server, thread))
        return Running(f"https://localhost:{port}", guard)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(15)


def client(srv: Running, pki: Pki, cert: Issued | None, secret: str) -> httpx.Client:
    return httpx.Client(base_url=srv.url, verify=pki.client_context(cert), timeout=30,
                        headers={"Authorization": f"Bearer {secret}"})


def open_session(c: httpx.Client, **identity: Any) -> httpx.Response:
    return c.post("/v1/sessions", json={"identity": {"agent": "billing-agent", **identity},
                                        "original_request": "pay the invoice"})


def run_action(c: httpx.Client, sid: str) -> dict[str, Any]:
    r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "shell", "arguments": {"cmd": "ls"}})
    assert r.status_code == 200, r.text
    return dict(r.json())


def requester(srv: Running, receipt_id: str) -> dict[str, Any]:
    return dict(srv.guard.store.get_receipt(receipt_id).body["action"]["requester_context"])


def test_the_certificate_is_the_service_of_the_session_and_its_receipts(serve_tls: Any, pki: Pki) -> None:
    srv = serve_tls(pki.tls())
    secret = srv.token("agent-token", "agent")
    billing = pki.issue("billing", cn="billing-svc")
    with client(srv, pki, billing, secret) as c:
        r = open_session(c, human="alice@company.com")
        assert r.status_code == 201, r.text
        sid = r.json()["session_id"]
        act = run_action(c, sid)  # DENY by policy: a receipt at once, nothing to run
        assert act["status"] == "denied"
        same = open_session(c, service="billing-svc")  # claiming the certificate's own service is fine
        assert same.status_code == 201, same.text
    rc = requester(srv, act["receipt_id"])
    # not the token's name (the default without TLS): the certificate vouched for the service
    assert (rc["service"], rc["verified_by"], rc["human"]) == ("billing-svc", "mtls", "alice@company.com")


def test_a_claimed_service_other_than_the_certificates_is_refused(serve_tls: Any, pki: Pki) -> None:
    srv = serve_tls(pki.tls())
    secret = srv.token("agent-token", "agent")
    with client(srv, pki, pki.issue("billing", cn="billing-svc"), secret) as c:
        r = open_session(c, service="payroll-svc")
    assert r.status_code == 403
    assert r.json()["error"] == {"code": "service_mismatch", "message": (
        "the identity claims service `payroll-svc` but the client certificate `CN=billing-svc,O=aarmor tests` "
        "vouches for service `billing-svc`")}
    assert list(srv.guard.store.log_sessions()) == []  # no session was opened


def test_a_session_answers_only_to_its_certificates_service(serve_tls: Any, pki: Pki) -> None:
    srv = serve_tls(pki.tls(require=False))
    secret = srv.token("agent-token", "agent")
    with client(srv, pki, pki.issue("billing", cn="billing-svc"), secret) as c:
        sid = open_session(c).json()["session_id"]
    # the same token over a connection with another service's certificate, or none
    with client(srv, pki, pki.issue("payroll", cn="payroll-svc"), secret) as c:
        r = c.post(f"/v1/sessions/{sid}/actions", json={"tool": "shell", "arguments": {}})
        assert r.status_code == 403 and r.json()["error"]["code"] == "service_mismatch"
        assert "vouches for `payroll-svc`" in r.json()["error"]["message"]
    with client(srv, pki, None, secret) as c:
        r = c.post(f"/v1/sessions/{sid}/evaluate", json={"tool": "shell", "arguments": {}})
        assert r.status_code == 403 and "presents no client certificate" in r.json()["error"]["message"]
        # optional certificates: without one, the service is the token's name, as without TLS
        plain = open_session(c)
        assert plain.status_code == 201
        act = run_action(c, plain.json()["session_id"])
    rc = requester(srv, act["receipt_id"])
    assert (rc["service"], rc["verified_by"]) == ("agent-token", "none")
    with client(srv, pki, pki.issue("billing2", cn="billing-svc"), secret) as c:  # another cert, same service
        assert c.post(f"/v1/sessions/{sid}/evaluate", json={"tool": "shell", "arguments": {}}).status_code == 200


def test_service_from_a_spiffe_uri_and_a_certificate_without_one(serve_tls: Any, pki: Pki) -> None:
    srv = serve_tls(pki.tls(service_from="san_uri"))
    secret = srv.token("agent-token", "agent")
    spiffe = "spiffe://corp.test/ns/prod/sa/billing"
    with client(srv, pki, pki.issue("billing", cn="ignored", uris=(spiffe,)), secret) as c:
        act = run_action(c, open_session(c).json()["session_id"])
    assert requester(srv, act["receipt_id"])["service"] == spiffe
    with client(srv, pki, pki.issue("cn-only", cn="billing-svc"), secret) as c:
        r = open_session(c)
    assert r.status_code == 403 and r.json()["error"] == {"code": "client_certificate", "message": (
        "the client certificate `CN=billing-svc,O=aarmor tests` has no URI subject alternative name; "
        "`tls.service_from: san_uri` needs exactly one")}


def _refused(srv: Running, pki: Pki, cert: Issued | None) -> None:
    with client(srv, pki, cert, "unused") as c, pytest.raises(httpx.TransportError):
        c.get("/healthz")


def test_clients_without_a_valid_certificate_cannot_connect(serve_tls: Any, pki: Pki) -> None:
    now = datetime.now(UTC)
    revoked = pki.issue("revoked", cn="revoked-svc")
    srv = serve_tls(pki.tls(crl=pki.crl(revoked)))
    _refused(srv, pki, None)  # no certificate
    _refused(srv, pki, pki.issue("foreign", cn="billing-svc", other_ca=True))  # signed by another CA
    _refused(srv, pki, pki.issue("expired", cn="billing-svc", not_before=now - timedelta(days=3),
                                 not_after=now - timedelta(days=1)))
    _refused(srv, pki, pki.issue("early", cn="billing-svc", not_before=now + timedelta(days=1)))
    _refused(srv, pki, revoked)  # on the CRL
    _refused(srv, pki, pki.issue("server-only", cn="billing-svc", server=True))  # not for client auth
    with client(srv, pki, pki.issue("good", cn="billing-svc"), "unused") as c:  # the same CA, valid: connects
        assert c.get("/healthz").json() == {"status": "ok"}
    assert list(srv.guard.store.log_sessions()) == []


def test_tls_without_client_certificates_keeps_the_tokens_service(serve_tls: Any, pki: Pki) -> None:
    srv = serve_tls(TlsConfig(cert=str(pki.server.cert), key=str(pki.server.key)))
    secret = srv.token("agent-token", "agent")
    with client(srv, pki, pki.issue("billing", cn="billing-svc"), secret) as c:  # not asked for: not used
        act = run_action(c, open_session(c).json()["session_id"])
    rc = requester(srv, act["receipt_id"])
    assert (rc["service"], rc["verified_by"]) == ("agent-token", "none")
    with httpx.Client(base_url=srv.url, timeout=10) as c, pytest.raises(httpx.ConnectError):
        c.get("/healthz")  # the server's certificate is from the test CA, which the default trust store lacks


def test_aarmor_serve_command_serves_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "aarmor.yaml"
    config.write_text(yaml.safe_dump({
        "store": f"sqlite:///{tmp_path / 'serve.db'}", "keys": "keys",
        "server": {"port": port, "tls": {"cert": str(pki.server.cert), "key": str(pki.server.key),
                                         "client_ca": str(pki.ca_file)}}}))
    exe = str(Path(sys.executable).parent / "aarmor")
    made = subprocess.run([exe, "tokens", "create", "agent-token", "--role", "agent", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    secret = next(w for w in made.stdout.split() if w.startswith("aat_"))
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([exe, "serve", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        srv = Running(f"https://localhost:{port}", None)
        with client(srv, pki, pki.issue("billing", cn="billing-svc"), secret) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    r = open_session(c, service="payroll-svc")
                    break
                except httpx.ConnectError:
                    assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                    time.sleep(0.1)
            assert r.status_code == 403 and r.json()["error"]["code"] == "service_mismatch"
            assert open_session(c).status_code == 201
        _refused(srv, pki, None)
    finally:
        proc.terminate()
        proc.wait(15)
    assert f"https://127.0.0.1:{port}/ with client certificates (mutual TLS)" in log.read_text()
    # a certificate file that cannot be used stops the start, naming the key
    bad = yaml.safe_load(config.read_text())
    bad["server"]["tls"]["client_ca"] = str(tmp_path / "missing-ca.pem")
    config.write_text(yaml.safe_dump(bad))
    failed = subprocess.run([exe, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "server.tls.client_ca: cannot use" in failed.stderr
