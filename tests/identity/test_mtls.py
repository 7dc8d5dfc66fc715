"""Service identity from a client certificate (aarmor.identity.mtls): reading the certificate's name, the
binding rule, and `verified_by` through the identity verifiers (`mtls`, `jwt+mtls`). The TLS handshakes
themselves are tested through the real listeners (tests/server/test_mtls.py, tests/gateway/test_gateway_mtls.py).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.config import TlsConfig, load_config
from aarmor.errors import ConfigError
from aarmor.identity.mtls import (
    CertificateError,
    PeerCertificate,
    ServiceMismatch,
    bind_service,
    client_certificate,
    with_mtls,
)
from tests.identity.conftest import Signer
from tests.tls_support import Issued, Pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def scope_with(cert: Issued | None) -> dict[str, Any]:
    """The scope the TLS listener hands the app for a connection presenting `cert`."""
    chain = [cert.cert.read_text()] if cert else []
    return {"type": "http", "extensions": {"tls": {"client_cert_chain": chain, "client_cert_error": None}}}


@pytest.mark.parametrize(("service_from", "expected"), [
    ("subject_cn", "billing-svc"),
    ("san_uri", "spiffe://corp.test/ns/prod/sa/billing"),
    ("san_dns", "billing.corp.test"),
])
def test_the_configured_name_of_the_certificate_is_the_service(pki: Pki, service_from: Any, expected: str) -> None:
    cert = pki.issue("c", cn="billing-svc", uris=("spiffe://corp.test/ns/prod/sa/billing",),
                     dns=("billing.corp.test",))
    peer = client_certificate(scope_with(cert), pki.tls(service_from=service_from))
    assert peer is not None and peer.service == expected
    assert "CN=billing-svc" in peer.subject and len(peer.fingerprint) == 64


@pytest.mark.parametrize(("kwargs", "service_from", "message"), [
    ({"uris": ("spiffe://corp.test/a",)}, "subject_cn", "has no subject common name (CN)"),
    ({"cn": "a", "extra_cn": "b"}, "subject_cn", "has 2 values for its subject common name (CN)"),
    ({"cn": "a"}, "san_uri", "has no URI subject alternative name"),
    ({"cn": "a", "uris": ("spiffe://x/1", "spiffe://x/2")}, "san_uri", "2 values for its URI subject alternative"),
    ({"cn": "a", "uris": ("spiffe://x/1",)}, "san_dns", "has no DNS subject alternative name"),
])
def test_a_certificate_without_exactly_one_such_name_is_refused_saying_what_is_missing(
        pki: Pki, kwargs: dict[str, Any], service_from: Any, message: str) -> None:
    cert = pki.issue("c", **kwargs)
    with pytest.raises(CertificateError, match=re.escape(message)) as exc:
        client_certificate(scope_with(cert), pki.tls(service_from=service_from))
    assert f"service_from: {service_from}` needs exactly one" in str(exc.value)


def test_without_tls_details_a_mutual_listener_fails_closed(pki: Pki) -> None:
    with pytest.raises(CertificateError, match=re.escape("reported no TLS details")):
        client_certificate({"type": "http"}, pki.tls())
    with pytest.raises(CertificateError, match=re.escape("no client certificate on this connection")):
        client_certificate(scope_with(None), pki.tls(require=True))
    # optional client certificates: none sent is no service from the transport
    assert client_certificate(scope_with(None), pki.tls(require=False)) is None
    # no client CA: the listener asks for no certificate at all, whatever the scope says
    tls = TlsConfig(cert=str(pki.server.cert), key=str(pki.server.key))
    assert client_certificate(scope_with(pki.issue("c", cn="x")), tls) is None
    assert client_certificate({"type": "http"}, None) is None


def test_binding_replaces_the_default_and_refuses_a_different_claim() -> None:
    peer = PeerCertificate("billing-svc", "ab" * 32, "CN=billing-svc")
    bound = bind_service(Identity(human="alice", service="token-name"), peer, claimed=None)
    assert (bound.service, bound.verified_by, bound.human) == ("billing-svc", "mtls", "alice")
    assert bind_service(Identity(), peer, claimed="billing-svc").service == "billing-svc"
    with pytest.raises(ServiceMismatch, match=re.escape("claims service `payroll-svc` but the client certificate "
                                                        "`CN=billing-svc` vouches for service `billing-svc`")):
        bind_service(Identity(service="payroll-svc"), peer, claimed="payroll-svc")
    assert [with_mtls(v) for v in ("none", "jwt", "mtls", "jwt+mtls")] == ["mtls", "jwt+mtls", "mtls", "jwt+mtls"]


class Tool:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, arguments: dict[str, Any]) -> str:
        self.calls += 1
        return "ok"


def test_claimed_mode_records_mtls_and_token_mode_records_jwt_plus_mtls(
        make_guard: Any, open_guard: Any, jwks_file: Path, signers: dict[str, Signer]) -> None:
    peer = PeerCertificate("billing-svc", "ab" * 32, "CN=billing-svc")
    claimed = make_guard()
    with claimed.session(identity=bind_service(Identity(agent="a"), peer, claimed=None)) as s:
        s.invoke("calendar.read", {"day": "monday"}, Tool())
    [r] = [x.body for x in claimed.store.read_receipts(s.session_id)]
    assert r["action"]["requester_context"]["verified_by"] == "mtls"
    assert r["action"]["requester_context"]["service"] == "billing-svc"

    guard = open_guard(jwks_file=str(jwks_file))
    identity = bind_service(Identity(agent="a", token=signers["ES256"].token()), peer, claimed=None)
    with guard.session(identity=identity) as s:
        s.invoke("calendar.read", {"day": "monday"}, Tool())
    [r] = [x.body for x in guard.store.read_receipts(s.session_id)]
    rc = r["action"]["requester_context"]
    assert (rc["verified_by"], rc["service"], rc["human"]) == ("jwt+mtls", "billing-svc", "alice@company.com")
    # the token still decides: an expired one is DENY, mTLS does not stand in for it
    expired = bind_service(Identity(agent="a", token=signers["ES256"].token(exp=1)), peer, claimed=None)
    tool = Tool()
    with guard.session(identity=expired) as s, pytest.raises(ActionDenied, match=re.escape("expired")):
        s.invoke("calendar.read", {"day": "monday"}, tool)
    assert tool.calls == 0


def test_tls_configuration_is_checked(tmp_path: Path) -> None:
    def load(doc: str) -> Any:
        path = tmp_path / "aarmor.yaml"
        path.write_text(doc)
        return load_config(path)

    cfg = load("server: {tls: {cert: s.pem, key: s.key, client_ca: ca.pem, service_from: san_uri}}")
    assert cfg.server.tls == TlsConfig(cert=str(tmp_path / "s.pem"), key=str(tmp_path / "s.key"),
                                       client_ca=str(tmp_path / "ca.pem"), service_from="san_uri")
    assert cfg.server.base_url == "https://127.0.0.1:8731" and cfg.gateway.tls is None
    with pytest.raises(ConfigError,
                       match=re.escape("`server.tls.require_client_cert` needs `server.tls.client_ca`")):
        load("server: {tls: {cert: s.pem, require_client_cert: false}}")
    with pytest.raises(ConfigError, match=re.escape("`gateway.tls.crl` needs `gateway.tls.client_ca`")):
        load("gateway: {listen: 'https://127.0.0.1:9000/mcp', tls: {cert: s.pem, crl: c.pem}}")
    with pytest.raises(ConfigError, match=re.escape("an `https://` `gateway.listen` needs `gateway.tls`")):
        load("gateway: {listen: 'https://127.0.0.1:9000/mcp'}")
    with pytest.raises(ConfigError, match=re.escape("server.tls.service_from")):
        load("server: {tls: {cert: s.pem, client_ca: ca.pem, service_from: subject}}")


def test_unusable_files_stop_the_listener_naming_the_key(pki: Pki, tmp_path: Path) -> None:
    from aarmor.tls import server_context

    good = pki.tls()
    ctx = server_context(good, section="server")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert server_context(pki.tls(require=False), section="server").verify_mode == ssl.CERT_OPTIONAL
    with pytest.raises(ConfigError, match=r"server\.tls\.cert/key: cannot use `.*missing\.pem`"):
        server_context(TlsConfig(cert=str(tmp_path / "missing.pem")), section="server")
    with pytest.raises(ConfigError, match=re.escape("gateway.tls.client_ca: cannot use")):
        server_context(TlsConfig(cert=good.cert, key=good.key, client_ca=str(tmp_path / "nope.pem")),
                       section="gateway")
    wrong_key = pki.issue("other", cn="other")
    with pytest.raises(ConfigError, match=re.escape("server.tls.cert/key")):
        server_context(TlsConfig(cert=good.cert, key=str(wrong_key.key)), section="server")
