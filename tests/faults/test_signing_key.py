"""The receipt signing key unreadable (issue 8, "fail closed under faults"): at start the Guard refuses to open
with an error naming the file (never a fresh key in its place); while running, keys live in memory (they are
read once, at start: docs/durability.md "Faults"), so a key file lost meanwhile changes nothing until the next
start, a rotation by another process is picked up at the next start, and a keyring that can no longer sign
refuses every call. A rotation on a full disk leaves no half-written key behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied, Identity
from aarmor.errors import SigningKeyError
from aarmor.receipts import Keyring, verify_receipts
from tests.faults.small_disk import small_disk

ALICE = Identity(human="alice@company.com", agent="ops-agent")
POLICY = 'policy: {id: faults, version: "1", default: ALLOW}\nrules:\n  - {id: no-shell, match: {tool: shell}, ' \
         'action: DENY}\n'


def _key_files(keys: Path) -> tuple[Path, Path]:
    kid = (keys / "current").read_text().strip()
    return keys / f"{kid}.pem", keys / "current"


def _as_directory(p: Path) -> None:
    p.unlink()
    p.mkdir(mode=0o700)


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:40])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _removed(p: Path) -> None:
    p.unlink()


@pytest.mark.parametrize("which,damage,says", [
    ("current", _removed, "is missing but"),
    ("pem", _as_directory, "is not a regular file"),
    ("pem", _truncated, "is not a PEM private key"),
    ("pem", _empty, "is not a PEM private key"),
    ("current", _as_directory, "cannot read"),
])
def test_an_unreadable_key_stops_the_guard_at_start_naming_the_file(
        make_guard: Callable[..., Any], tmp_path: Path, which: str, damage: Callable[[Path], None],
        says: str) -> None:
    make_guard(POLICY).close()  # creates the key
    pem, current = _key_files(tmp_path / "keys")
    target = pem if which == "pem" else current
    damage(target)
    before = sorted(os.listdir(tmp_path / "keys"))
    with pytest.raises(SigningKeyError) as info:
        make_guard(POLICY)
    assert str(target) in str(info.value) and says in str(info.value)
    assert sorted(os.listdir(tmp_path / "keys")) == before  # no key was generated in its place


UNPRIVILEGED = textwrap.dedent("""
    import sys, warnings
    from aarmor import Guard
    warnings.simplefilter("ignore")
    try:
        Guard.open(policy=sys.argv[1], store="sqlite:///" + sys.argv[2], keys=sys.argv[3])
    except Exception as exc:
        print(type(exc).__name__, exc)
    else:
        print("opened")
""")


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A directory an unprivileged user can reach (pytest's own tmp dirs are 0700 root's)."""
    base = Path(tempfile.mkdtemp(prefix="aarmor-faults-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("layout", ["directory closed", "key file closed"])
def test_a_key_the_process_user_may_not_read_stops_the_guard_naming_the_file(outside_tmp: Path, layout: str) -> None:
    """Root reads any file whatever its mode, so the Guard runs as `nobody` here (setpriv), as in production."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run the Guard as an unprivileged user"
    keys = outside_tmp / "keys"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the development-key notice
        Keyring.open(keys)
    pem, current = _key_files(keys)
    if layout == "directory closed":
        keys.chmod(0o700)  # root's: nobody may not even look inside
        expected = current
    else:
        keys.chmod(0o755)
        current.chmod(0o644)  # the pointer is readable, the private key (0600, root's) is not
        expected = pem
    work = outside_tmp / "work"
    work.mkdir()
    shutil.chown(work, "nobody")
    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    policy.chmod(0o644)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AARMOR_HOME": str(work / "home")}
    done = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                           UNPRIVILEGED, str(policy), str(work / "a.db"), str(keys)],
                          capture_output=True, text=True, env=env, timeout=60, cwd=work)
    out = done.stdout.strip()
    assert out.startswith("SigningKeyError"), (out, done.stderr[-2000:])
    assert str(expected) in out and "Permission denied" in out
    assert sorted(p.name for p in keys.iterdir()) == sorted([pem.name, pem.with_suffix(".pub").name, "current"])


def test_while_running_keys_are_in_memory_a_rotation_is_used_from_the_next_start(
        make_guard: Callable[..., Any], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    guard = make_guard(POLICY)
    old = guard.keyring.current_key_id
    s = guard.session(identity=ALICE)
    s.invoke("email.send", {"n": 1}, lambda a: "ok")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = Keyring.open(keys).rotate()  # `aarmor keys rotate` from another process
    pem_old = keys / f"{old}.pem"
    pem_old.unlink()  # and the old private key file is gone too
    s.invoke("email.send", {"n": 2}, lambda a: "ok")  # the running Guard signs on with the key it read at start
    guard.close()
    again = make_guard(POLICY)  # the next start picks the rotation up
    s2 = again.session(identity=ALICE, session_id=s.session_id)
    s2.invoke("email.send", {"n": 3}, lambda a: "ok")
    bodies = [r.body for r in again.store.read_receipts(s.session_id)]
    assert [b["signature"]["key_id"] for b in bodies] == [old, old, new]
    assert verify_receipts(bodies, Keyring.open(keys).public_keys()).ok  # the old `.pub` still verifies


def test_a_keyring_that_can_no_longer_sign_refuses_every_call(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(POLICY)
    s = guard.session(identity=ALICE)
    s.invoke("email.send", {"n": 1}, lambda a: "ok")
    guard.keyring.close()  # the key is lost to this process
    ran: list[int] = []
    with pytest.raises(ActionDenied) as info:
        s.invoke("email.send", {"n": 2}, lambda a: ran.append(2))
    assert ran == [] and info.value.receipt_id is None  # refused before the tool; no receipt can be signed
    assert "SigningKeyError" in info.value.decision.reason
    log = list(guard.store.read_log(s.session_id))
    assert [r.kind for r in log][-2:] == ["action_requested", "action_outcome"]  # recorded as far as possible
    assert log[-1].body["executed"] is False and "SigningKeyError" in log[-1].body["error"]["class"]
    assert guard.store.inflight_list() == []


def test_a_rotation_on_a_full_disk_leaves_no_half_written_key(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size="1m") as disk:
        keys = disk.root / "keys"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the development-key notice
            ring = Keyring.open(keys)
        before = sorted(os.listdir(keys))
        disk.fill()
        with pytest.raises(OSError):
            ring.rotate()
        assert sorted(os.listdir(keys)) == before  # nothing half-written
        assert Keyring.open(keys, create=False).current_key_id == ring.current_key_id  # still opens
        disk.free()
        new = ring.rotate()
        assert Keyring.open(keys, create=False).current_key_id == new


POLICY_PROBE = textwrap.dedent("""
    import sys
    from aarmor.errors import AarmorError
    from aarmor.policy import load_policy
    try:
        load_policy(sys.argv[1])
        print("loaded")
    except AarmorError as exc:
        print(type(exc).__name__, exc)
""")


@pytest.mark.parametrize("layout", ["file closed", "directory closed"])
def test_a_policy_the_process_user_may_not_read_is_a_policy_error_naming_it(outside_tmp: Path, layout: str) -> None:
    """Found beside the key faults: a policy path the process may not look into raised a bare PermissionError
    (from `Path.is_dir`), not the PolicyError the loader promises. Run as `nobody`, as root reads anything."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to run as an unprivileged user"
    pdir = outside_tmp / "policies"
    pdir.mkdir()
    (pdir / "main.yaml").write_text(POLICY)
    if layout == "file closed":
        pdir.chmod(0o755)
        (pdir / "main.yaml").chmod(0o600)  # root's
        target = pdir / "main.yaml"
    else:
        pdir.chmod(0o700)  # root's: nobody may not look inside
        target = pdir / "sub"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c",
                           POLICY_PROBE, str(target)], capture_output=True, text=True, env=env, timeout=60,
                          cwd=outside_tmp)
    out = done.stdout.strip()
    assert out.startswith("PolicyError"), (out, done.stderr[-2000:])
    assert "Permission denied" in out and str(target) in out
