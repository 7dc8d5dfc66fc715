"""A throwaway PKI for the mutual-TLS tests: real X.509 (cryptography), written as PEM files.

`Pki(tmp_path)` makes a CA, a server certificate for 127.0.0.1 / localhost, and on demand client
certificates (subject CN, URI and DNS SANs, validity window, another CA), CRLs, and client `ssl` contexts
for httpx (`verify=pki.client_context(cert)`).
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aarmor.config import ServiceFrom, TlsConfig


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    certificate: x509.Certificate


class _Ca:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(self.key, hashes.SHA256()))


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.ca = _Ca("aarmor test CA")
        self.other_ca = _Ca("some other CA")
        self.ca_file = self._write("ca.pem", self.ca.cert.public_bytes(serialization.Encoding.PEM))
        self.server = self.issue("server", cn="localhost", dns=("localhost",), ips=("127.0.0.1",), server=True)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def issue(self, name: str, *, cn: str | None = None, uris: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), server: bool = False, other_ca: bool = False,
              not_before: datetime | None = None, not_after: datetime | None = None,
              extra_cn: str | None = None) -> Issued:
        """A certificate (client unless `server`) signed by the test CA (or `other_ca`), written as files."""
        ca = self.other_ca if other_ca else self.ca
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aarmor tests")]
        attrs += [x509.NameAttribute(NameOID.COMMON_NAME, c) for c in (cn, extra_cn) if c]
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca.name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(hours=1))
            .not_valid_after(not_after or now + timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Issued(self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                      self._write(f"{name}.key", key_pem), cert)

    def crl(self, *revoked: Issued) -> Path:
        """A CRL of the test CA revoking `revoked`."""
        now = datetime.now(UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.ca.name)
                   .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=1)))
        for r in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(r.certificate.serial_number)
                .revocation_date(now - timedelta(minutes=1)).build())
        return self._write("ca.crl.pem", builder.sign(self.ca.key, hashes.SHA256())
                           .public_bytes(serialization.Encoding.PEM))

    def tls(self, *, require: bool = True, service_from: ServiceFrom = "subject_cn",
            crl: Path | None = None) -> TlsConfig:
        """The listener's `tls` settings: this PKI's server certificate, client certificates from its CA."""
        return TlsConfig(cert=str(self.server.cert), key=str(self.server.key), client_ca=str(self.ca_file),
                         require_client_cert=require, service_from=service_from,
                         crl=str(crl) if crl else None)

    def client_context(self, client: Issued | None = None) -> ssl.SSLContext:
        """What httpx connects with: trusts the test CA, presents `client` (None: no certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx
