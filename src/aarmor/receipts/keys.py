"""The signing keyring: Ed25519 keys in a directory, rotation, public-key export (AARM 2.7, 4.4).

Rules:
- Private keys are PKCS#8 PEM files `<key_id>.pem` with mode 0600; a private key file readable or
  writable by group or others is refused (`SigningKeyError` naming the file and its mode).
- Every key also has a public file `<key_id>.pub` (SubjectPublicKeyInfo PEM). A retired private key may
  be deleted: its `.pub` file keeps the receipts it signed verifiable (and exported).
- `current` names the signing key. Rotation writes a new key and moves `current`; old keys stay, so
  receipts signed before the rotation still verify.
- Key ids are `aarmor-YYYYMMDD-<8 hex>`; a key file whose name is not a valid key id is refused.
- A key generated on first use is a development key: `DevelopmentKeyWarning` is raised once per key. It is
  generated only in a directory without private keys: a missing `current` next to keys is an error.
- Key files are written whole (temporary name, fsync, rename): a failed write (disk full) leaves nothing.
- Keys print only their key id; no repr shows key bytes.
- Public keys export as PEM (with `key_id` comment lines) or JWKS (OKP / Ed25519, `kid`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aarmor.errors import SigningKeyError

__all__ = ["KEY_ID_FORMAT", "DevelopmentKeyWarning", "Keyring", "load_public_keys"]

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: the shape of the ids this keyring generates (others, e.g. imported HSM ids, only need `_KEY_ID`)
KEY_ID_FORMAT = re.compile(r"aarmor-\d{8}-[0-9a-f]{8}")
_PEM_ID = re.compile(r"^# key_id: (\S+)\s*$", re.M)


class DevelopmentKeyWarning(UserWarning):
    """A signing key was generated on first use: fine for development, not for production."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Keyring:
    """Ed25519 signing keys in `directory`. Open with `Keyring.open`."""

    def __init__(self, directory: Path, current: str, private: Mapping[str, Ed25519PrivateKey],
                 public: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        self.directory = directory
        self._current = current
        self._private = dict(private)
        self._public = {kid: k.public_key() for kid, k in self._private.items()} | dict(public or {})

    def __repr__(self) -> str:
        return f"Keyring({str(self.directory)!r}, current={self._current!r}, keys={sorted(self._private)})"

    @classmethod
    def open(cls, directory: str | os.PathLike[str], *, create: bool = True) -> Keyring:
        """Load the keys in `directory`, generating a development key if there is none and `create`.

        Raises:
            SigningKeyError: no key and not `create`; unsafe file mode; unreadable or non-Ed25519 key;
                `current` naming a missing key.
        """
        path = Path(directory)
        pointer = path / "current"
        try:
            pointer.stat()
            missing = False
        except FileNotFoundError:
            missing = True
        except OSError as exc:  # e.g. a key directory this process may not enter: say so, never a new key
            raise SigningKeyError(f"cannot read `{pointer}`: {exc.strerror}") from exc
        if missing:
            if not create:
                raise SigningKeyError(f"no signing key in `{path}`; run `aarmor keys generate`")
            kept = sorted(p.name for p in path.glob("*.pem")) if path.is_dir() else []
            if kept:  # a lost pointer is a fault to repair, not a reason to sign with a fresh key
                raise SigningKeyError(f"`{pointer}` is missing but `{path}` holds private keys ({', '.join(kept)}); "
                                      "restore it (it names the current key id)")
            ring = cls(path, "", {})
            key_id = ring._generate()
            warnings.warn(f"generated development signing key `{key_id}` in `{path}`; use a managed key in "
                          "production (`aarmor keys generate` on a protected host)", DevelopmentKeyWarning,
                          stacklevel=2)
            return ring
        try:
            current = pointer.read_text().strip()
        except OSError as exc:
            raise SigningKeyError(f"cannot read `{pointer}`: {exc.strerror}") from exc
        private = {p.stem: _load_private(p) for p in sorted(path.glob("*.pem"))}
        if current not in private:
            raise SigningKeyError(f"`{pointer}` names key `{current}`, which has no private key in `{path}`")
        public = {p.stem: _load_public_file(p) for p in sorted(path.glob("*.pub"))}
        for kid, pub in public.items():
            if kid in private and _raw_public(pub) != _raw_public(private[kid].public_key()):
                raise SigningKeyError(f"`{path / (kid + '.pub')}` does not match the private key `{kid}.pem`")
        return cls(path, current, private, public)

    @property
    def current_key_id(self) -> str:
        return self._current

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every known key (public keys of retired private keys included)."""
        return tuple(sorted(self._public))

    def check(self) -> None:
        """Raises:
        SigningKeyError: the keyring is closed or has no current key.
        """
        if self._current not in self._private:
            raise SigningKeyError(f"keyring `{self.directory}` has no usable signing key (closed?)")

    def sign(self, data: bytes) -> tuple[str, bytes]:
        """Sign with the current key; returns (key_id, signature).

        Raises:
            SigningKeyError: the keyring is closed or has no current key.
        """
        self.check()
        return self._current, self._private[self._current].sign(data)

    def close(self) -> None:
        """Drop the private keys from memory; later signing fails (and mediation fails closed).

        Public keys stay available, so a closed keyring can still verify.
        """
        self._private.clear()

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """`key_id -> public key` for every key ever used here (current, rotated and retired)."""
        return dict(self._public)

    def _generate(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_id = f"aarmor-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        # each file appears whole or not at all: a full disk must not leave a truncated `.pem` behind, which
        # would make every later `Keyring.open` fail
        _write_whole(self.directory / f"{key_id}.pem", pem, 0o600)
        _write_whole(self.directory / f"{key_id}.pub", pub, 0o644)
        # INVARIANT: `current` always names a complete key
        _write_whole(self.directory / "current", (key_id + "\n").encode(), 0o644, replace=True)
        self._private[key_id] = key
        self._public[key_id] = key.public_key()
        self._current = key_id
        return key_id

    def rotate(self) -> str:
        """Generate a new current key; old keys stay for verification. Returns the new key id.

        Raises:
            OSError: the directory is not writable.
        """
        return self._generate()

    def export_public(self, fmt: str = "pem") -> str:
        """All public keys as `pem` (each preceded by `# key_id: ...`) or `jwks`.

        Raises:
            ValueError: unknown format.
        """
        keys = self.public_keys()
        if fmt == "jwks":
            return json.dumps({"keys": [
                {"kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
                 "x": _b64url(_raw_public(k))} for kid, k in sorted(keys.items())]}, indent=2) + "\n"
        if fmt == "pem":
            return "".join(
                f"# key_id: {kid}\n" + k.public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
                for kid, k in sorted(keys.items()))
        raise ValueError(f"unknown public key format `{fmt}`; expected pem or jwks")


def _write_whole(target: Path, data: bytes, mode: int, *, replace: bool = False) -> None:
    """Write `data` to a temporary name, fsync, and rename it to `target` (which must not exist unless
    `replace`); on any error the temporary file is removed and nothing appears."""
    if not replace and target.exists():
        raise FileExistsError(f"`{target}` already exists")
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise SigningKeyError(f"private key `{path}` is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise SigningKeyError(f"private key `{path}` has mode {mode:04o}; it must not be accessible to group "
                                  "or others (chmod 600)")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"cannot read private key `{path}`: {exc.strerror}") from exc
    except ValueError as exc:
        raise SigningKeyError(f"`{path}` is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"`{path}` holds a {type(key).__name__}, expected an Ed25519 key")
    if not _KEY_ID.fullmatch(path.stem):
        raise SigningKeyError(f"key file name `{path.name}` is not a valid key id")
    return key


def _load_public_file(path: Path) -> Ed25519PublicKey:
    if not _KEY_ID.fullmatch(path.stem):
        raise SigningKeyError(f"public key file name `{path.name}` is not a valid key id")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise SigningKeyError(f"cannot read public key `{path}`: {exc.strerror}") from exc
    except ValueError as exc:
        raise SigningKeyError(f"`{path}` is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"`{path}` holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def _add(keys: dict[str, Ed25519PublicKey], kid: str, key: Ed25519PublicKey, source: Path) -> None:
    # ATTACK: a bundle listing one key id twice with different keys could make a forged receipt verify
    # against the second key while an auditor inspects the first; refuse the ambiguity.
    if kid in keys and _raw_public(keys[kid]) != _raw_public(key):
        raise SigningKeyError(f"`{source}`: key id `{kid}` appears twice with different keys")
    keys[kid] = key


def load_public_keys(path: str | os.PathLike[str]) -> dict[str, Ed25519PublicKey]:
    """Read public keys for offline verification from a JWKS file or a PEM bundle with key ids.

    Raises:
        SigningKeyError: unreadable file, malformed JWKS/PEM, a PEM key without a `# key_id:` line, a
            non-Ed25519 key, or no key at all.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SigningKeyError(f"cannot read public keys `{p}`: {exc.strerror}") from exc
    keys: dict[str, Ed25519PublicKey] = {}
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
            for jwk in doc["keys"]:
                if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                    raise SigningKeyError(f"`{p}`: key `{jwk.get('kid')}` is not an OKP/Ed25519 key")
                if not isinstance(jwk.get("kid"), str) or not isinstance(jwk.get("x"), str):
                    raise SigningKeyError(f"`{p}`: every JWK needs string `kid` and `x`")
                raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
                _add(keys, jwk["kid"], Ed25519PublicKey.from_public_bytes(raw), p)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SigningKeyError(f"`{p}` is not a valid JWKS: {exc}") from exc
    else:
        blocks = re.split(r"(?=^# key_id: )", text, flags=re.M)
        for block in blocks:
            if "BEGIN PUBLIC KEY" not in block:
                continue
            m = _PEM_ID.search(block)
            if not m:
                raise SigningKeyError(f"`{p}`: a PEM public key has no `# key_id:` line before it")
            try:
                key = serialization.load_pem_public_key(block[block.index("-----BEGIN"):].encode())
            except ValueError as exc:
                raise SigningKeyError(f"`{p}`: key `{m.group(1)}` is not a PEM public key: {exc}") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise SigningKeyError(f"`{p}`: key `{m.group(1)}` is not Ed25519")
            _add(keys, m.group(1), key, p)
    if not keys:
        raise SigningKeyError(f"`{p}` holds no public key")
    return keys
