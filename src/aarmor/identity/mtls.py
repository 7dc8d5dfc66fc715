"""Service identity from a verified client certificate (AARM R6, mutual TLS; docs/identity.md).

A listener configured with `tls.client_ca` (`server.tls`, `gateway.tls`) asks every client for a certificate
signed by that CA. OpenSSL checks the chain, the validity period and (with `tls.crl`) revocation during the
handshake: a missing (when required), foreign, expired or revoked certificate never reaches the application.
What reaches it is the verified leaf certificate, in the ASGI TLS extension
(`scope["extensions"]["tls"]["client_cert_chain"][0]`, PEM; `aarmor.tls` fills it under uvicorn).

Rules:
- The certificate's `service_from` name (its one subject CN, URI SAN or DNS SAN) is the session's
  `Identity.service`. No such name, or more than one, is a refusal naming what is missing.
- A service claimed by the client or configured for its credential (request body, identity header, gateway
  token) that differs from the certificate's is a refusal (`ServiceMismatch`), never silently replaced.
- `verified_by` records that the transport vouched: `mtls` alone, `<verifier>+mtls` when a verifier vouched
  for other levels too (`jwt+mtls`). `TransportBoundVerifier` keeps the `+mtls` through any verifier, and
  refuses a verifier that would change a service the certificate vouched for.
- A listener with `client_ca` whose connection reports no TLS details fails closed: the request is refused,
  it is never served as if no certificate had been asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aarmor.config import ServiceFrom, TlsConfig
from aarmor.identity import IdentityError, IdentityVerifier
from aarmor.model import Identity

__all__ = [
    "MTLS",
    "CertificateError",
    "PeerCertificate",
    "ServiceMismatch",
    "TransportBoundVerifier",
    "bind_service",
    "client_certificate",
    "with_mtls",
]

MTLS = "mtls"
#: the longest service name taken from a certificate (the HTTP API's bound for a claimed one)
MAX_SERVICE_CHARS = 256


class CertificateError(IdentityError):
    """The connection's client certificate cannot give a service identity (or is missing)."""


class ServiceMismatch(IdentityError):
    """A claimed or configured service differs from the one the client certificate vouches for."""


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What a verified client certificate vouches for: the service, and which certificate said so."""

    service: str
    #: SHA-256 of the certificate (DER), hex: binds an HTTP session to the certificate that opened it
    fingerprint: str
    #: the subject DN (RFC 4514), for messages
    subject: str


def client_certificate(scope: Mapping[str, Any], tls: TlsConfig | None) -> PeerCertificate | None:
    """The verified client certificate of the connection `scope` arrived on, for a listener with `tls`.

    None: the listener asks for no client certificate, or (`require_client_cert: false`) the client sent none.

    Raises:
        CertificateError: the listener asks for certificates but the connection reported no TLS details;
            no certificate although one is required; the certificate has no usable `service_from` name.
    """
    if tls is None or not tls.mutual:
        return None
    extensions = scope.get("extensions") or {}
    ext = extensions.get("tls") if isinstance(extensions, Mapping) else None
    if not isinstance(ext, Mapping):
        raise CertificateError("this listener is configured for client certificates (`tls.client_ca`) but the "
                               "connection reported no TLS details; refusing rather than serving it unverified")
    chain = ext.get("client_cert_chain") or ()
    if not chain:
        if tls.require_client_cert:
            raise CertificateError("no client certificate on this connection (`tls.require_client_cert`)")
        return None
    return _read(str(chain[0]), tls.service_from)


@functools.lru_cache(maxsize=256)
def _read(pem: str, service_from: ServiceFrom) -> PeerCertificate:
    """The certificate's service name; cached, as one client sends the same certificate on every request."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise CertificateError(f"the client certificate cannot be read: {exc}") from None
    subject = cert.subject.rfc4514_string()
    fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    if service_from == "subject_cn":
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        what = "subject common name (CN)"
    else:
        kind = x509.UniformResourceIdentifier if service_from == "san_uri" else x509.DNSName
        what = "URI subject alternative name" if service_from == "san_uri" else "DNS subject alternative name"
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(v) for v in san.get_values_for_type(kind)]
        except x509.ExtensionNotFound:
            names = []
    if len(names) != 1:
        count = "no" if not names else f"{len(names)} values for its"
        raise CertificateError(f"the client certificate `{subject}` has {count} {what}; `tls.service_from: "
                               f"{service_from}` needs exactly one")
    service = names[0]
    if not service.strip() or len(service) > MAX_SERVICE_CHARS or not service.isprintable():
        raise CertificateError(f"the client certificate `{subject}`: its {what} `{service[:64]}` is not a usable "
                               f"service name (1 to {MAX_SERVICE_CHARS} printable characters)")
    return PeerCertificate(service, fingerprint, subject)


def with_mtls(verified_by: str) -> str:
    """`verified_by` with the transport's vouching added: `none` -> `mtls`, `jwt` -> `jwt+mtls`."""
    parts = verified_by.split("+")
    if MTLS in parts:
        return verified_by
    return MTLS if verified_by in ("", "none") else f"{verified_by}+{MTLS}"


def bind_service(identity: Identity, peer: PeerCertificate, *, claimed: str | None) -> Identity:
    """`identity` with the certificate's service, vouched for by mTLS.

    `claimed` is the service the client or its credential's configuration names (None: none named).

    Raises:
        ServiceMismatch: `claimed` is not the certificate's service.
    """
    if claimed is not None and claimed != peer.service:
        raise ServiceMismatch(f"the identity claims service `{claimed}` but the client certificate "
                              f"`{peer.subject}` vouches for service `{peer.service}`")
    return dataclasses.replace(identity, service=peer.service, verified_by=with_mtls(identity.verified_by))


class TransportBoundVerifier:
    """Wraps the identity verifier of `identity.mode` so that a service vouched for by mTLS stays vouched.

    A token verifier replaces `verified_by` with its own name (`jwt`); the certificate still vouched for the
    service, so the result is `jwt+mtls`. An identity without `mtls` passes through untouched.
    """

    def __init__(self, inner: IdentityVerifier) -> None:
        self.inner = inner
        # a verifier passed as `Guard(verifier=...)` may be any object with `verify`
        self.name: str = getattr(inner, "name", None) or type(inner).__name__

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Raises:
        IdentityError: what the wrapped verifier raises; or it changed the service the certificate vouched for.
        """
        out, flag = self.inner.verify(identity, now=now)
        if not isinstance(identity, Identity) or MTLS not in identity.verified_by.split("+"):
            return out, flag
        if out.service != identity.service:
            raise ServiceMismatch(f"identity verifier `{self.name}` changed the service `{identity.service}` that "
                                  "the client certificate vouched for")
        if MTLS not in out.verified_by.split("+"):
            out = dataclasses.replace(out, verified_by=with_mtls(out.verified_by))
        return out, flag
