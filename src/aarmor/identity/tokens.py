"""Bearer-token verification (AARM R6): OIDC / JWT access or ID tokens checked against a JWKS.

`TokenVerifier` is the `IdentityVerifier` of identity mode `jwt` (docs/identity.md). The token reaches it
on `Identity.token` (never serialised: `Identity.to_json` leaves it out). For each verification:

1. the token must be a compact JWS of at most `MAX_TOKEN_BYTES`; its header names an algorithm from the
   configured allowlist (RS256, ES256, EdDSA at most: `none` and every HMAC algorithm are refused);
2. the key is the JWKS entry with the header's `kid` (or, without a `kid`, the only key for that
   algorithm). Each key type verifies exactly one algorithm (RSA: RS256, EC P-256: ES256, OKP Ed25519:
   EdDSA), so a token cannot pick how a key is used: HS256 "signed" with a public key is refused before
   any signature check, and so is ES256 against an RSA key. Symmetric (`oct`) and `use: enc` keys are
   never loaded;
3. the signature (PyJWT), then the claims, against the mediator's clock (`now`), each with `leeway`
   seconds of clock skew: `exp` (required), `nbf`, `iat` (not in the future; required when `max_age` is
   set, and no older than it), `iss` (exact), `aud` (one of the configured audiences);
4. the identity: the principal claim (`sub`) is the human principal (a different claimed `human` is an
   error), roles and scopes come from the configured claims and replace any claimed ones, and
   `verified_by` is `jwt`.

Every failure raises `TokenError` (an `IdentityError`) whose `code` is one of `TOKEN_ERROR_CODES` and whose
message says precisely what failed; the mediator turns it into a DENY that carries the message. Messages
never contain the token.

JWKS from a URL: fetched on first use (not at start, so a Guard opens without the network), cached for
`jwks_cache_seconds`, fetched again when a token names an unknown `kid` but at most once per
`jwks_refetch_interval` seconds (a flood of made-up `kid`s cannot turn into a flood of fetches). A failed
fetch keeps the cached set; with no set at all the action is DENY (`jwks_unavailable`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from aarmor.config import JWT_ALGORITHMS, JwtConfig
from aarmor.errors import ConfigError
from aarmor.identity import IdentityError
from aarmor.model import Identity

__all__ = ["MAX_TOKEN_BYTES", "TOKEN_ERROR_CODES", "Jwks", "TokenError", "TokenVerifier"]

MAX_TOKEN_BYTES = 16 * 1024
MAX_JWKS_BYTES = 1024 * 1024
_VERIFIED_CACHE = 4096
TOKEN_ERROR_CODES = (
    "missing", "malformed", "algorithm_not_allowed", "unknown_key", "bad_signature", "expired",
    "not_yet_valid", "too_old", "issuer_mismatch", "audience_mismatch", "principal_mismatch",
    "jwks_unavailable",
)


class TokenError(IdentityError):
    """A bearer token that does not verify; `code` is one of `TOKEN_ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"identity token {code.replace('_', ' ')}: {message}")
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    algorithm: str
    key: Any  # a cryptography public key


def _key_algorithm(jwk: Mapping[str, Any]) -> str | None:
    """The one algorithm a JWK may verify, from its key type alone (None: a key type we never use)."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC" and crv == "P-256":
        return "ES256"
    if kty == "OKP" and crv == "Ed25519":
        return "EdDSA"
    return None


def _parse_jwks(data: Any, allowed: tuple[str, ...], where: str) -> list[_Key]:
    """The usable signing keys of a JWKS document.

    Raises:
        ValueError: not a JWKS object, or no usable key in it.
    """
    import jwt

    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{where} is not a JWKS (a JSON object with a `keys` list)")
    keys: list[_Key] = []
    skipped: list[str] = []
    for i, jwk in enumerate(data["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"#{i}: not an object")
            continue
        name = f"`{jwk['kid']}`" if isinstance(jwk.get("kid"), str) else f"#{i}"
        alg = _key_algorithm(jwk)
        if alg is None:
            skipped.append(f"{name}: key type {jwk.get('kty')}/{jwk.get('crv')} is not RSA, EC P-256 or Ed25519")
            continue
        if jwk.get("use", "sig") != "sig" or ("alg" in jwk and jwk["alg"] != alg):
            skipped.append(f"{name}: declared for use `{jwk.get('use')}` / alg `{jwk.get('alg')}`")
            continue
        if alg not in allowed:
            skipped.append(f"{name}: {alg} is not in the configured algorithms")
            continue
        try:
            public = jwt.PyJWK(jwk, algorithm=alg).key
        except Exception as exc:  # PyJWKError, InvalidKeyError, ValueError from cryptography
            skipped.append(f"{name}: {exc}")
            continue
        if hasattr(public, "private_bytes"):
            skipped.append(f"{name}: a private key; publish only the public part")
            continue
        keys.append(_Key(jwk.get("kid") if isinstance(jwk.get("kid"), str) else None, alg, public))
    if not keys:
        detail = "; ".join(skipped) if skipped else "the `keys` list is empty"
        raise ValueError(f"{where} holds no usable signing key ({detail})")
    return keys


class Jwks:
    """The trusted keys: a JWKS file (read once) or URL (fetched, cached, refetched; see the module doc)."""

    def __init__(self, *, file: str | None = None, url: str | None = None,
                 algorithms: tuple[str, ...] = JWT_ALGORITHMS, cache_seconds: float = 300.0,
                 refetch_interval: float = 30.0, timeout: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """Raises:
        ConfigError: not exactly one of file and url; an unreadable file or one without a usable key.
        """
        if (file is None) == (url is None):
            raise ConfigError("a JWKS needs exactly one of a file or a URL")
        if url is not None and not url.startswith(("https://", "http://")):
            raise ConfigError(f"JWKS URL `{url}` must be http:// or https://")
        self.source = file or url or ""
        self._url = url
        self._algorithms = algorithms
        self._cache_seconds, self._refetch_interval, self._timeout = cache_seconds, refetch_interval, timeout
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: list[_Key] | None = None
        self._fetched_at = self._tried_at = float("-inf")
        self._last_error: str | None = None
        if file is not None:
            try:
                data = json.loads(Path(file).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read JWKS file `{file}`: {exc.strerror}") from exc
            except ValueError as exc:
                raise ConfigError(f"JWKS file `{file}` is not JSON: {exc}") from exc
            try:
                self._keys = _parse_jwks(data, algorithms, f"JWKS file `{file}`")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc

    def find(self, kid: str | None, alg: str) -> _Key:
        """The key for a token header.

        Raises:
            TokenError: `unknown_key` (no such kid, or no kid and not exactly one key for `alg`),
                `algorithm_not_allowed` (the kid's key verifies another algorithm), `jwks_unavailable`.
        """
        keys = self._current()
        key = self._pick(keys, kid, alg)
        if key is None and self._url is not None and self._may_refetch():
            keys = self._current(force=True)
            key = self._pick(keys, kid, alg)
        if key is None:
            if kid is None:
                n = sum(1 for k in keys if k.algorithm == alg)
                raise TokenError("unknown_key", f"the token names no `kid` and the key set ({self.source}) has "
                                                f"{n} {alg} keys; exactly one is needed to choose without a kid")
            raise TokenError("unknown_key", f"no key `{kid}` in the key set ({self.source})")
        if key.algorithm != alg:
            raise TokenError("algorithm_not_allowed",
                             f"the token's algorithm {alg} does not match key `{kid}`, which verifies "
                             f"{key.algorithm} only")
        return key

    @staticmethod
    def _pick(keys: list[_Key], kid: str | None, alg: str) -> _Key | None:
        if kid is not None:
            return next((k for k in keys if k.kid == kid), None)
        same = [k for k in keys if k.algorithm == alg]
        return same[0] if len(same) == 1 else None

    def _may_refetch(self) -> bool:
        return self._monotonic() - self._tried_at >= self._refetch_interval

    def _current(self, *, force: bool = False) -> list[_Key]:
        if self._url is None:
            assert self._keys is not None
            return self._keys
        with self._lock:
            now = self._monotonic()
            stale = now - self._fetched_at >= self._cache_seconds
            # a failed or forced fetch is retried at most once per refetch interval
            if (force or stale) and (self._keys is None or now - self._tried_at >= self._refetch_interval):
                self._tried_at = now
                try:
                    self._keys = self._fetch(self._url)
                    self._fetched_at, self._last_error = now, None
                except ValueError as exc:
                    self._last_error = str(exc)  # keep the cached set, if any
            if self._keys is None:
                raise TokenError("jwks_unavailable", self._last_error or f"no key set from {self._url} yet")
            return self._keys

    def _fetch(self, url: str) -> list[_Key]:
        """Raises: ValueError: the fetch failed or the document holds no usable key."""
        req = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "aarmor"})
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # http(s) only: checked in __init__
                body = resp.read(MAX_JWKS_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ValueError(f"cannot fetch JWKS {url}: {getattr(exc, 'reason', None) or exc}") from exc
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"JWKS {url} is larger than {MAX_JWKS_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"JWKS {url} is not JSON: {exc}") from exc
        return _parse_jwks(data, self._algorithms, f"JWKS {url}")


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by exact name, else by dotted path into nested objects (`realm_access.roles`)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _strings(value: Any, name: str) -> tuple[str, ...]:
    """A claim holding names: a list of strings or one space-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenError("malformed", f"claim `{name}` must be a list of strings or a space-separated string")


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError("malformed", f"claim `{name}` must be a NumericDate (seconds since the epoch)")
    return float(value)


def _ts(seconds: float) -> str:
    from datetime import UTC

    t = datetime.fromtimestamp(seconds, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{t.microsecond // 1000:03d}Z" if t.microsecond else "Z")


class TokenVerifier:
    """`IdentityVerifier` for identity mode `jwt` (module doc)."""

    name = "jwt"

    def __init__(self, config: JwtConfig, *, jwks: Jwks | None = None) -> None:
        """Raises:
        ConfigError: PyJWT is not installed, an algorithm outside RS256/ES256/EdDSA, or a JWKS file
            that cannot be used.
        """
        try:
            import jwt  # noqa: F401
        except ImportError as exc:  # pragma: no cover - PyJWT comes with the `mcp` extra
            raise ConfigError("identity mode `jwt` needs PyJWT with its crypto backend: "
                              "pip install 'aarmor[mcp]' (or 'PyJWT[crypto]')") from exc
        bad = [a for a in config.algorithms if a not in JWT_ALGORITHMS]
        if bad or not config.algorithms:
            raise ConfigError(f"identity.jwt.algorithms: `{bad[0] if bad else '[]'}` is not allowed; "
                              f"use some of {', '.join(JWT_ALGORITHMS)}")
        self.config = config
        self.jwks = jwks or Jwks(file=config.jwks_file, url=config.jwks_url, algorithms=config.algorithms,
                                 cache_seconds=config.jwks_cache_seconds,
                                 refetch_interval=config.jwks_refetch_interval, timeout=config.jwks_timeout)
        # token -> (the key that verified its signature, its claims). A session presents the same token at
        # every decision; its signature is checked once per key object (a JWKS refresh that drops or
        # replaces the key makes `find` return another object, and the token is verified again). Time,
        # issuer and audience are checked at every decision. Bounded: cleared when full.
        self._verified: dict[str, tuple[_Key, dict[str, Any]]] = {}

    def verify(self, identity: Identity, *, now: datetime) -> tuple[Identity, str | None]:
        """Raises:
        IdentityError: not an Identity. TokenError: the token is missing or does not verify (`code`).
        """
        if not isinstance(identity, Identity):
            raise IdentityError(f"identity must be an aarmor.Identity, found {type(identity).__name__}")
        if not identity.token:
            raise TokenError("missing", "identity mode `jwt` needs a bearer token on Identity.token")
        claims = self._verified_claims(identity.token, now.timestamp())
        principal = claims.get(self.config.principal_claim)
        if not isinstance(principal, str) or not principal:
            raise TokenError("malformed", f"the token has no string `{self.config.principal_claim}` claim "
                                          "(the human principal)")
        if identity.human is not None and identity.human != principal:
            raise TokenError("principal_mismatch", f"the claimed human principal `{identity.human}` is not the "
                                                   f"token's `{self.config.principal_claim}` `{principal}`")
        roles = _strings(_claim(claims, self.config.roles_claim), self.config.roles_claim)
        scopes_claim = self.config.scopes_claim
        if scopes_claim is None:
            scopes_claim = "scope" if "scope" in claims else "scp"
        scopes = _strings(_claim(claims, scopes_claim), scopes_claim)
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise TokenError("malformed", f"the `jti` claim must be a string, found {type(jti).__name__}")
        return dataclasses.replace(identity, human=principal, roles=roles, scopes=scopes,
                                   verified_by="jwt", token_id=jti), None

    def _verified_claims(self, token: str, now: float) -> dict[str, Any]:
        import jwt

        cfg = self.config
        cached = self._verified.get(token)
        if cached is not None and self.jwks.find(cached[0].kid, cached[0].algorithm) is cached[0]:
            return self._checked(cached[1], now)
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise TokenError("malformed", f"not a compact JWS (three dot-separated parts, at most "
                                          f"{MAX_TOKEN_BYTES} bytes)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("malformed", f"unreadable header: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            raise TokenError("algorithm_not_allowed",
                             f"`{alg}` is not one of {', '.join(cfg.algorithms)}")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("malformed", "header `kid` must be a string")
        if "crit" in header:
            raise TokenError("malformed", "header `crit` extensions are not supported")
        key = self.jwks.find(kid, alg)
        claims = self._signature(token, key)
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.clear()
        self._verified[token] = (key, claims)
        return self._checked(claims, now)

    def _checked(self, claims: dict[str, Any], now: float) -> dict[str, Any]:
        """Claims whose signature verified, checked for time, issuer and audience (at every decision)."""
        cfg = self.config
        self._check_time(claims, now)
        iss = claims.get("iss")
        if iss != cfg.issuer:
            raise TokenError("issuer_mismatch", f"issuer `{iss}` is not `{cfg.issuer}`")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in cfg.audience for a in auds):
            raise TokenError("audience_mismatch",
                             f"audience {json.dumps(aud)} names none of {', '.join(cfg.audience)}")
        return claims

    def _signature(self, token: str, key: _Key) -> dict[str, Any]:
        """The token's claims once its signature verifies with `key` (and only with `key.algorithm`)."""
        import jwt

        try:
            claims = jwt.decode(token, key.key, algorithms=[key.algorithm], options={
                "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False})
        except jwt.InvalidSignatureError:
            raise TokenError("bad_signature", f"the signature does not verify with key "
                                              f"`{key.kid or key.algorithm}` ({self.jwks.source})") from None
        except jwt.PyJWTError as exc:
            raise TokenError("malformed", str(exc)) from None
        if not isinstance(claims, dict):  # pragma: no cover - PyJWT returns the payload object
            raise TokenError("malformed", "the payload is not a JSON object")
        return claims

    def _check_time(self, claims: Mapping[str, Any], now: float) -> None:
        cfg, leeway = self.config, self.config.leeway
        exp, nbf, iat = _numeric(claims, "exp"), _numeric(claims, "nbf"), _numeric(claims, "iat")
        if exp is None:
            raise TokenError("malformed", "the token has no `exp` claim")
        if now >= exp + leeway:
            raise TokenError("expired", f"expired at {_ts(exp)} (now {_ts(now)}, leeway {leeway:g}s)")
        if nbf is not None and now < nbf - leeway:
            raise TokenError("not_yet_valid", f"not before {_ts(nbf)} (now {_ts(now)}, leeway {leeway:g}s)")
        if iat is not None and now < iat - leeway:
            raise TokenError("not_yet_valid", f"issued in the future at {_ts(iat)} (now {_ts(now)}, "
                                              f"leeway {leeway:g}s)")
        if cfg.max_age is not None:
            if iat is None:
                raise TokenError("malformed", "the token has no `iat` claim, needed for max_age")
            if now - iat > cfg.max_age + leeway:
                raise TokenError("too_old", f"issued at {_ts(iat)}, {now - iat:.0f}s ago; max_age is "
                                            f"{cfg.max_age:g}s (leeway {leeway:g}s)")
