"""Real keys (RSA, EC P-256, Ed25519), real JWKS documents (a file and a loopback HTTP server) and tokens
signed with PyJWT, for the token verifier of identity mode `jwt`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example.test/"
AUDIENCE = "aarmor-tests"

POLICY = """
policy:
  id: jwt-tests
  version: "1"
  default: ALLOW
rules:
  - id: big-payments
    match: {tool: payment, operation: transfer, parameters: {amount: {gt: 10000}}}
    action: STEP_UP
    approvers: [finance]
    timeout: 30
    reason: transfers over 10000 need a finance approver
"""


class Signer:
    """One private key, its public JWK and the algorithm it signs with."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg, self.kid = alg, kid
        if alg == "RS256":
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            jwk = OKPAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk: dict[str, Any] = {**jwk, "kid": kid, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return bytes(self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))

    def token(self, *, kid: str | None = "same", alg: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@company.com", "iat": now, "exp": now + 600,
                "roles": ["analyst"], "scope": "db:read email:send"}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {} if kid is None else {"kid": self.kid if kid == "same" else kid}
        return jwt.encode(body, self.private, algorithm=alg or self.alg, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None = None) -> str:
    """A token built by hand: `alg: none` (no key) or HS256 with `key` as the HMAC secret."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(sig)


@pytest.fixture(scope="session")
def signers() -> dict[str, Signer]:
    return {"RS256": Signer("RS256", "rsa-1"), "ES256": Signer("ES256", "ec-1"),
            "EdDSA": Signer("EdDSA", "ed-1"), "other": Signer("RS256", "rsa-1")}


@pytest.fixture
def jwks_file(tmp_path: Path, signers: dict[str, Signer]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [signers[a].jwk for a in ("RS256", "ES256", "EdDSA")]}))
    return path


class JwksServer:
    """A JWKS served over real HTTP on loopback; `keys` may change while it runs; `hits` counts GETs."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def jwks_server(signers: dict[str, Signer]) -> Iterator[JwksServer]:
    server = JwksServer([signers["RS256"].jwk, signers["EdDSA"].jwk])
    yield server
    server.close()


@pytest.fixture
def open_guard(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`Guard.open(aarmor.yaml)` with `identity: {mode: jwt, jwt: {...}}` written from keyword arguments."""
    import yaml

    from aarmor import Guard
    from aarmor.config import ApprovalsConfig

    opened: list[Any] = []

    def open_(policy: str = POLICY, **jwt_keys: Any) -> Any:
        n = len(opened)
        (tmp_path / f"policy-{n}.yaml").write_text(policy)
        cfg = {"policy": f"policy-{n}.yaml", "store": f"sqlite:///{tmp_path / f'aarmor-{n}.db'}",
               "keys": "keys",
               "identity": {"mode": "jwt", "jwt": {"issuer": ISSUER, "audience": AUDIENCE, **jwt_keys}}}
        path = tmp_path / f"aarmor-{n}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the one-time development-key notice
            guard = Guard.open(path, approvals=ApprovalsConfig(groups=(("finance", ("carol@company.com",)),),
                                                               poll_interval=0.02))
        opened.append(guard)
        return guard

    yield open_
    for g in opened:
        g.close()
