"""TLS for aarmor's HTTP listeners (`aarmor serve`, the gateway's HTTP front) under uvicorn.

Two parts:
- `server_context`: the `ssl.SSLContext` of a `TlsConfig`, built and checked before the listener starts
  (an unreadable certificate, key, CA or CRL stops the start with a message naming the file). TLS 1.2 at
  least; with `client_ca` the handshake verifies client certificates (chain, validity period, purpose
  clientAuth, and revocation when `crl` is set): CERT_REQUIRED, or CERT_OPTIONAL with
  `require_client_cert: false`.
- `uvicorn_config`: a `uvicorn.Config` serving that context, whose HTTP protocol reports each connection's
  verified client certificate to the application as the ASGI TLS extension
  (`scope["extensions"]["tls"]`, https://asgi.readthedocs.io/en/latest/specs/tls.html).

Why a protocol subclass: uvicorn (up to at least 0.54) does not fill the TLS extension, and the
certificate is a property of the connection, known only to the protocol that owns the transport
(`transport.get_extra_info("ssl_object").getpeercert(binary_form=True)`). Reading it there, once per
connection after OpenSSL verified it, and handing it to the app through the standard extension keeps the
application side server-neutral: a server that fills the extension itself is used as it is (what it set is
never overwritten). Headers are never a source (a client could write them). If the protocol cannot wrap
the application (a uvicorn whose protocol has no `app`), the connection is closed: fail closed.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aarmor.config import TlsConfig
from aarmor.errors import ConfigError

__all__ = ["server_context", "tls_extension", "uvicorn_config"]

log = logging.getLogger("aarmor.tls")

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(tls: TlsConfig, *, section: str) -> ssl.SSLContext:
    """The server-side context for `tls` (`section` is `server` or `gateway`, for messages).

    Raises:
        ConfigError: a file that cannot be read or used (names the key and the file).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        files = f"`{tls.cert}`" + (f" and `{tls.key}`" if tls.key else "")
        raise ConfigError(f"{section}.tls.cert/key: cannot use {files}: {_why(exc)}") from exc
    if tls.client_ca is not None:
        _load(ctx, tls.client_ca, f"{section}.tls.client_ca")
        if tls.crl is not None:
            _load(ctx, tls.crl, f"{section}.tls.crl")
            # the client's certificate is checked against the CRL; its issuer must have one loaded
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load(ctx: ssl.SSLContext, path: str, key: str) -> None:
    try:
        ctx.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}: cannot use `{path}`: {_why(exc)}") from exc


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for a connection (None: not TLS). `client_cert_chain` holds the verified leaf
    (PEM) when the client sent one; the chain above it is not reachable through `ssl` before Python 3.13."""
    obj = transport.get_extra_info("ssl_object")
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    chain, name = [], None
    if der:
        from cryptography import x509

        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {"server_cert": None, "client_cert_chain": chain, "client_cert_name": name,
            "client_cert_error": None, "tls_version": _TLS_VERSIONS.get(obj.version() or ""),
            "cipher_suite": None}


def _reporting_protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """`base` (a uvicorn HTTP protocol) whose application sees the connection's TLS extension."""

    def connection_made(self: Any, transport: asyncio.BaseTransport) -> None:
        base.connection_made(self, transport)
        ext = tls_extension(transport)
        if ext is None:
            return
        app = getattr(self, "app", None)
        if app is None:
            log.error("aarmor.tls: uvicorn's %s has no `app` to wrap; closing the connection (client "
                      "certificates cannot be reported)", base.__name__)
            transport.close()
            return

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            extensions = scope.get("extensions")
            if extensions is None:
                extensions = scope["extensions"] = {}
            extensions.setdefault("tls", ext)
            await app(scope, receive, send)

        self.app = with_tls

    return type(f"TlsReporting{base.__name__}", (base,), {"connection_made": connection_made})


def uvicorn_config(app: Any, *, host: str, port: int, tls: TlsConfig | None, section: str,
                   **options: Any) -> Any:
    """A `uvicorn.Config` for `app`; with `tls`, HTTPS with `server_context(tls)` and the TLS extension.

    Raises:
        ConfigError: (with `tls`) see `server_context`.
    """
    import uvicorn

    if tls is None:
        return uvicorn.Config(app, host=host, port=port, **options)
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    context = server_context(tls, section=section)
    http = options.pop("http", "auto")
    base = import_from_string(HTTP_PROTOCOLS.get(http, http)) if isinstance(http, str) else http

    class _Config(uvicorn.Config):
        def load(self) -> None:
            super().load()
            self.ssl = context  # uvicorn hands `config.ssl` to `loop.create_server`

    return _Config(app, host=host, port=port, http=_reporting_protocol(base), **options)
