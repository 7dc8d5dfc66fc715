"""The signing keyring (AARM 2.7 / 4.4): safe files, rotation that keeps history verifiable, export.

Real key files on disk, real Ed25519; every refusal asserts the message and that nothing changed.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aarmor.errors import SigningKeyError
from aarmor.receipts import DevelopmentKeyWarning, Keyring, load_public_keys, verify_receipts
from tests.receipts import POLICY, receipts, run_session


def _open_new(path: Path) -> Keyring:
    with pytest.warns(DevelopmentKeyWarning):
        return Keyring.open(path)


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), _mode(p)) for p in sorted(directory.iterdir())}


# --- first use ------------------------------------------------------------------------------------

def test_first_use_generates_owner_only_key_and_warns_once(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    with pytest.warns(DevelopmentKeyWarning) as record:
        ring = Keyring.open(keys)
    dev = [w for w in record if issubclass(w.category, DevelopmentKeyWarning)]
    assert len(dev) == 1
    assert ring.current_key_id in str(dev[0].message) and "production" in str(dev[0].message)
    pem = keys / f"{ring.current_key_id}.pem"
    assert _mode(pem) == 0o600  # ATTACK: a world-readable signing key lets anyone forge receipts
    assert (keys / "current").read_text().strip() == ring.current_key_id
    assert isinstance(serialization.load_pem_private_key(pem.read_bytes(), None), Ed25519PrivateKey)


def test_second_open_reuses_the_key_without_warning(tmp_path: Path) -> None:
    first = _open_new(tmp_path / "keys")
    before = _snapshot(tmp_path / "keys")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, DevelopmentKeyWarning included, fails the test
        again = Keyring.open(tmp_path / "keys")
    assert again.current_key_id == first.current_key_id
    assert _snapshot(tmp_path / "keys") == before  # nothing generated or rewritten


def test_missing_keys_without_create_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"no signing key .*aarmor keys generate"):
        Keyring.open(tmp_path / "keys", create=False)
    assert not (tmp_path / "keys").exists()


# --- unsafe or inconsistent key files ------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_accessible_private_key_refused(tmp_path: Path, mode: int) -> None:
    ring = _open_new(tmp_path / "keys")
    pem = tmp_path / "keys" / f"{ring.current_key_id}.pem"
    os.chmod(pem, mode)
    with pytest.raises(SigningKeyError) as exc:
        Keyring.open(tmp_path / "keys")
    msg = str(exc.value)
    assert str(pem) in msg and f"{mode:04o}" in msg and "chmod 600" in msg
    assert _mode(pem) == mode  # refused, not silently "fixed"


def test_current_pointing_at_missing_key_refused(tmp_path: Path) -> None:
    _open_new(tmp_path / "keys")
    (tmp_path / "keys" / "current").write_text("aarmor-20260101-deadbeef\n")
    before = _snapshot(tmp_path / "keys")
    with pytest.raises(SigningKeyError, match="`aarmor-20260101-deadbeef`") as exc:
        Keyring.open(tmp_path / "keys")
    assert "current" in str(exc.value)
    assert _snapshot(tmp_path / "keys") == before  # no replacement key was generated


def test_current_key_file_deleted_is_refused(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    (tmp_path / "keys" / f"{ring.current_key_id}.pem").unlink()
    with pytest.raises(SigningKeyError, match=ring.current_key_id):
        Keyring.open(tmp_path / "keys")


def test_non_ed25519_private_key_refused(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    pem = tmp_path / "keys" / f"{ring.current_key_id}.pem"
    pem.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SigningKeyError, match="expected an Ed25519 key") as exc:
        Keyring.open(tmp_path / "keys")
    assert str(pem) in str(exc.value)


def test_garbage_private_key_file_refused(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    pem = tmp_path / "keys" / f"{ring.current_key_id}.pem"
    pem.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError, match="is not a PEM private key") as exc:
        Keyring.open(tmp_path / "keys")
    assert str(pem) in str(exc.value)


def test_closed_keyring_cannot_sign(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    kid = ring.current_key_id
    ring.close()
    with pytest.raises(SigningKeyError, match="no usable signing key"):
        ring.sign(b"anything")
    assert kid in ring.public_keys()  # verification still possible


# --- rotation --------------------------------------------------------------------------------------

def test_rotation_keeps_old_receipts_verifiable(make_guard: Any, tmp_path: Path) -> None:
    from aarmor.receipts.keys import KEY_ID_FORMAT

    guard = make_guard(POLICY)
    old_kid = guard.keyring.current_key_id
    before = run_session(guard)                      # signed with the old key
    new_kid = guard.keyring.rotate()
    after = run_session(guard)                       # signed with the new key
    assert new_kid != old_kid and KEY_ID_FORMAT.fullmatch(new_kid)
    old_rs, new_rs = receipts(guard, before), receipts(guard, after)
    assert {r["signature"]["key_id"] for r in old_rs} == {old_kid}
    assert {r["signature"]["key_id"] for r in new_rs} == {new_kid}

    # an auditor with only the exported public keys verifies both generations
    jwks = tmp_path / "public.jwks"
    jwks.write_text(guard.keyring.export_public("jwks"))
    report = verify_receipts(old_rs + new_rs, load_public_keys(jwks))
    assert report.ok, report.failures
    assert report.checked == 8 and report.sessions == 2

    # on disk: the old private key is still there, `current` moved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reopened = Keyring.open(guard.config.keys)
    assert reopened.current_key_id == new_kid
    assert set(reopened.key_ids) >= {old_kid, new_kid}
    assert _mode(Path(guard.config.keys) / f"{new_kid}.pem") == 0o600


def test_rotation_mid_session_keeps_the_chain(make_guard: Any) -> None:
    from aarmor import ActionDenied
    from tests.receipts import Tool, alice

    guard = make_guard(POLICY)
    with guard.session(identity=alice()) as s:
        s.invoke("email.send", {"to": "bob@company.com"}, Tool())
        guard.keyring.rotate()
        with pytest.raises(ActionDenied):
            s.invoke("shell.run", {"cmd": "id"}, Tool())
    rs = receipts(guard, s.session_id)
    assert len({r["signature"]["key_id"] for r in rs}) == 2
    report = verify_receipts(rs, guard.keyring.public_keys())
    assert report.ok, report.failures


def test_receipt_signed_by_rotated_key_fails_without_its_public_key(make_guard: Any) -> None:
    guard = make_guard(POLICY)
    old_kid = guard.keyring.current_key_id
    sid = run_session(guard)
    guard.keyring.rotate()
    keys = guard.keyring.public_keys()
    del keys[old_kid]  # an auditor handed only the new key
    report = verify_receipts(receipts(guard, sid), keys)
    assert not report.ok
    assert {f.reason for f in report.failures} == {f"unknown key id `{old_kid}`"}


# --- no key material in output ---------------------------------------------------------------------

def test_repr_never_shows_key_bytes(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    ring.rotate()
    pem_files = list((tmp_path / "keys").glob("*.pem"))
    assert len(pem_files) == 2
    shown = repr(ring) + str(ring) + f"{ring!r}{ring}"
    for pem in pem_files:
        key = serialization.load_pem_private_key(pem.read_bytes(), None)
        assert isinstance(key, Ed25519PrivateKey)
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        body = "".join(pem.read_text().splitlines()[1:-1])
        for secret in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(), body):
            assert secret not in shown
        assert pem.stem in shown  # keys print only their key id
    assert "PRIVATE" not in shown and "BEGIN" not in shown
    assert "PRIVATE" not in ring.export_public("pem") and '"d"' not in ring.export_public("jwks")


# --- export and offline loading ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jwks", "pem"])
def test_public_key_export_round_trips(tmp_path: Path, fmt: str) -> None:
    ring = _open_new(tmp_path / "keys")
    ring.rotate()
    out = tmp_path / f"public.{fmt}"
    out.write_text(ring.export_public(fmt))
    loaded = load_public_keys(out)
    assert sorted(loaded) == sorted(ring.key_ids)
    assert {k: _raw(v) for k, v in loaded.items()} == {k: _raw(v) for k, v in ring.public_keys().items()}
    # the loaded keys verify what the ring signs
    kid, sig = ring.sign(b"payload")
    loaded[kid].verify(sig, b"payload")


def test_jwks_export_is_rfc8037_okp(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    doc = json.loads(ring.export_public("jwks"))
    (jwk,) = doc["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["kid"] == ring.current_key_id
    assert "=" not in jwk["x"] and "d" not in jwk
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    assert raw == _raw(ring.public_keys()[ring.current_key_id])


def test_unknown_export_format_refused(tmp_path: Path) -> None:
    ring = _open_new(tmp_path / "keys")
    with pytest.raises(ValueError, match="unknown public key format `der`"):
        ring.export_public("der")


def _ed_pem() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _ec_pem() -> str:
    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _jwk(**over: Any) -> str:
    x = base64.urlsafe_b64encode(_raw(Ed25519PrivateKey.generate().public_key())).rstrip(b"=").decode()
    jwk = {"kty": "OKP", "crv": "Ed25519", "kid": "k1", "x": x, **over}
    return json.dumps({"keys": [{k: v for k, v in jwk.items() if v is not None}]})


@pytest.mark.parametrize("name,content,expected", [
    ("not-json.jwks", '{"keys": [', "is not a valid JWKS"),
    ("no-keys-member.jwks", '{"kty": "OKP"}', "is not a valid JWKS"),
    ("keys-not-a-list.jwks", '{"keys": 5}', "is not a valid JWKS"),
    ("rsa.jwks", _jwk(kty="RSA"), "key `k1` is not an OKP/Ed25519 key"),
    ("x25519.jwks", _jwk(crv="X25519"), "key `k1` is not an OKP/Ed25519 key"),
    ("short-x.jwks", _jwk(x="AAAA"), "is not a valid JWKS"),
    ("no-kid.jwks", _jwk(kid=None), "kid"),
    ("no-x.jwks", _jwk(x=None), "`x`"),
    ("empty-keys.jwks", '{"keys": []}', "holds no public key"),
    ("no-key-id.pem", _ed_pem(), "has no `# key_id:` line"),
    ("ec.pem", "# key_id: k-ec\n" + _ec_pem(), "key `k-ec` is not Ed25519"),
    ("garbage.pem", "# key_id: k-bad\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
     "key `k-bad` is not a PEM public key"),
    ("empty.pem", "", "holds no public key"),
    ("prose.pem", "these are my keys, trust me\n", "holds no public key"),
    ("twice.pem", "# key_id: same\n" + _ed_pem() + "# key_id: same\n" + _ed_pem(),
     "key id `same` appears twice with different keys"),
])
def test_malformed_public_key_files_refused_with_clear_message(tmp_path: Path, name: str, content: str,
                                                               expected: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SigningKeyError) as exc:
        load_public_keys(path)
    assert expected in str(exc.value)
    assert str(path) in str(exc.value)  # names the file


def test_unreadable_public_key_file_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jwks"
    with pytest.raises(SigningKeyError, match="cannot read public keys") as exc:
        load_public_keys(missing)
    assert str(missing) in str(exc.value)
