"""`aarmor keys|receipts|audit`: the real sub-commands, a real SQLite store and key directory on disk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aarmor.cli import audit, keys, receipts
from aarmor.config import load_config
from aarmor.receipts import DevelopmentKeyWarning, Keyring, ReceiptSigner
from aarmor.store import open_store
from tests.receipts.helpers import STEPS, sign_chain

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site" / "aarmor.yaml"
    path.parent.mkdir()
    path.write_text(f"store: sqlite:///{tmp_path / 'site' / 'aarmor.db'}\nkeys: keys\n")
    return path


def _run(app: Any, *args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _populate(config: Path, sessions: tuple[str, ...] = ("s-1",)) -> list[dict[str, Any]]:
    """Generate keys through the CLI, then sign real receipts into the configured store."""
    if not (config.parent / "keys" / "current").exists():
        assert _run(keys.app, "generate", "--config", config).exit_code == 0
    cfg = load_config(config)
    signer = ReceiptSigner(Keyring.open(cfg.keys, create=False))
    store = open_store(cfg.store)
    out = []
    for sid in sessions:
        recs = sign_chain(signer, STEPS, session=sid)
        store.append_all(receipts=tuple(recs))
        out += [r.body for r in recs]
    store.close()
    return out


def test_keys_generate_rotate_list_export(config: Path, tmp_path: Path) -> None:
    res = _run(keys.app, "generate", "--config", config, "--json")
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)["key_id"]
    assert (config.parent / "keys" / f"{first}.pem").exists()
    again = _run(keys.app, "generate", "--config", config)
    assert again.exit_code == 2 and "already exists" in again.stderr
    rotated = json.loads(_run(keys.app, "rotate", "--config", config, "--json").stdout)
    assert rotated["previous"] == first and rotated["current"] != first
    listed = _run(keys.app, "list", "--config", config)
    assert f"* {rotated['current']}" in listed.stdout and f"  {first}" in listed.stdout
    jwks = json.loads(_run(keys.app, "export-public", "--format", "jwks", "--config", config).stdout)
    assert {k["kid"] for k in jwks["keys"]} == {first, rotated["current"]}
    pem = _run(keys.app, "export-public", "--config", config).stdout
    assert pem.count("BEGIN PUBLIC KEY") == 2 and "PRIVATE" not in pem
    assert _run(keys.app, "export-public", "--format", "der", "--config", config).exit_code == 2


def test_keys_commands_without_a_keyring_exit_2(config: Path) -> None:
    for cmd in ("rotate", "list", "export-public"):
        res = _run(keys.app, cmd, "--config", config)
        assert res.exit_code == 2 and "aarmor keys generate" in res.stderr


def test_group_readable_private_key_is_refused_by_the_cli(config: Path) -> None:
    _run(keys.app, "generate", "--config", config)
    (pem,) = (config.parent / "keys").glob("*.pem")
    os.chmod(pem, 0o644)
    res = _run(keys.app, "rotate", "--config", config)
    assert res.exit_code == 2 and str(pem) in res.stderr and "0644" in res.stderr


def _export_offline(config: Path, tmp_path: Path, fmt: str = "jwks") -> tuple[Path, Path]:
    exported = _run(receipts.app, "export", "--config", config)
    assert exported.exit_code == 0, exported.output
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "receipts.jsonl").write_text(exported.stdout)
    pub = _run(keys.app, "export-public", "--format", fmt, "--config", config)
    (offline / f"public.{fmt}").write_text(pub.stdout)
    return offline / "receipts.jsonl", offline / f"public.{fmt}"


@pytest.mark.parametrize("fmt", ["jwks", "pem"])
def test_export_verifies_on_another_machine_with_public_keys_only(config: Path, tmp_path: Path, fmt: str) -> None:
    """The verifier process sees only the export and the public keys: no store, no private key, no config."""
    bodies = _populate(config, ("s-1", "s-2"))
    file, pub = _export_offline(config, tmp_path, fmt)
    assert len(file.read_text().splitlines()) == len(bodies) == 8
    env = {k: v for k, v in os.environ.items() if not k.startswith("AARMOR")}
    env["AARMOR_HOME"] = str(tmp_path / "elsewhere")
    res = subprocess.run([sys.executable, "-c", "from aarmor.cli.receipts import app; app()", "verify",
                          file.name, "--public-keys", pub.name], cwd=file.parent, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK: 8 receipts in 2 session(s)" in res.stdout
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in file.parent.iterdir()) == sorted([file.name, pub.name])


def test_export_of_one_session(config: Path) -> None:
    _populate(config, ("s-1", "s-2"))
    lines = _run(receipts.app, "export", "--session", "s-2", "--config", config).stdout.splitlines()
    assert [json.loads(x)["session_id"] for x in lines] == ["s-2"] * 4


def test_verify_names_each_tampered_receipt_and_exits_1(config: Path, tmp_path: Path) -> None:
    _populate(config)
    file, pub = _export_offline(config, tmp_path)
    lines = file.read_text().splitlines()
    victim = json.loads(lines[2])
    victim["decision"]["result"] = "ALLOW"
    lines[2] = json.dumps(victim)
    del lines[1]
    file.write_text("\n".join(lines) + "\n")
    res = _run(receipts.app, "verify", file, "--public-keys", pub)
    assert res.exit_code == 1
    assert f"receipt `{victim['receipt_id']}`" in res.stdout and "[bad_signature]" in res.stdout
    assert "[chain_gap]" in res.stdout and "expected seq 1, found 2" in res.stdout
    report = json.loads(_run(receipts.app, "verify", file, "--public-keys", pub, "--json").stdout)
    assert report["ok"] is False and {f["code"] for f in report["failures"]} >= {"bad_signature", "chain_gap"}


def test_verify_reports_an_unparseable_line_as_a_failure(config: Path, tmp_path: Path) -> None:
    _populate(config)
    file, pub = _export_offline(config, tmp_path)
    lines = file.read_text().splitlines()
    lines[3] = lines[3][:40]  # a truncated line
    file.write_text("\n".join(lines) + "\n")
    res = _run(receipts.app, "verify", file, "--public-keys", pub)
    assert res.exit_code == 1 and "line 4: invalid JSON" in res.stdout


def test_verify_with_the_wrong_public_keys_fails(config: Path, tmp_path: Path) -> None:
    _populate(config)
    file, _ = _export_offline(config, tmp_path)
    other = tmp_path / "other-keys"
    with pytest.warns(DevelopmentKeyWarning):
        Keyring.open(other)
    (tmp_path / "other.jwks").write_text(Keyring.open(other).export_public("jwks"))
    res = _run(receipts.app, "verify", file, "--public-keys", tmp_path / "other.jwks")
    assert res.exit_code == 1 and "[unknown_key]" in res.stdout


def test_verify_defaults_to_the_configured_keyring(config: Path, tmp_path: Path) -> None:
    _populate(config)
    file, _ = _export_offline(config, tmp_path)
    assert _run(receipts.app, "verify", file, "--config", config).exit_code == 0


@pytest.mark.parametrize("args,message", [
    (["verify", "missing.jsonl", "--public-keys", "missing.jwks"], "cannot read public keys"),
    (["show", "rct_nope"], "no receipt `rct_nope`"),
])
def test_bad_input_exits_2(config: Path, args: list[str], message: str) -> None:
    _populate(config)
    res = _run(receipts.app, *args, "--config", config)
    assert res.exit_code == 2 and message in res.stderr


def test_empty_export_does_not_verify(tmp_path: Path, config: Path) -> None:
    _populate(config)
    (tmp_path / "empty.jsonl").write_text("")
    res = _run(receipts.app, "verify", tmp_path / "empty.jsonl", "--config", config)
    assert res.exit_code == 1 and "nothing verified" in res.stdout


def test_show_prints_the_stored_receipt(config: Path) -> None:
    bodies = _populate(config)
    res = _run(receipts.app, "show", bodies[1]["receipt_id"], "--config", config)
    assert res.exit_code == 0 and json.loads(res.stdout) == bodies[1]


def test_audit_timeline_rows(config: Path) -> None:
    bodies = _populate(config)
    res = _run(audit.app, "timeline", "--session", "s-1", "--config", config)
    assert res.exit_code == 0, res.output
    assert "email.send" in res.stdout and "MODIFY" in res.stdout and "all receipts verified" in res.stdout
    data = json.loads(_run(audit.app, "timeline", "--session", "s-1", "--config", config, "--json").stdout)
    assert [e["result"] for e in data["events"]] == ["ALLOW", "MODIFY", "DENY", "ALLOW"]
    assert [e["receipt_id"] for e in data["events"]] == [b["receipt_id"] for b in bodies]
    assert all(e["verified"] for e in data["events"])


def test_audit_timeline_flags_a_receipt_rewritten_in_the_database(config: Path) -> None:
    """ATTACK: rewrite a stored receipt body (DENY -> ALLOW) directly in SQLite."""
    bodies = _populate(config)
    db = config.parent / "aarmor.db"
    victim = dict(bodies[2])
    victim["decision"] = dict(victim["decision"], result="ALLOW")
    con = sqlite3.connect(db)
    con.execute("UPDATE receipts SET body=?, decision='ALLOW' WHERE receipt_id=?",
                (json.dumps(victim), victim["receipt_id"]))
    con.commit()
    con.close()
    res = _run(audit.app, "timeline", "--session", "s-1", "--config", config, "--json")
    assert res.exit_code == 1
    events = json.loads(res.stdout)["events"]
    assert [e["verified"] for e in events] == [True, True, False, False]
    assert "bad signature" in events[2]["failures"][0]
    human = _run(audit.app, "timeline", "--session", "s-1", "--config", config)
    assert human.exit_code == 1 and "FAILED" in human.stdout


def test_audit_timeline_flags_a_tampered_index_column(config: Path) -> None:
    bodies = _populate(config)
    con = sqlite3.connect(config.parent / "aarmor.db")
    con.execute("UPDATE receipts SET human='bob@company.com' WHERE receipt_id=?", (bodies[0]["receipt_id"],))
    con.commit()
    con.close()
    res = _run(audit.app, "timeline", "--session", "s-1", "--config", config, "--json")
    assert res.exit_code == 1
    assert "`human`" in json.loads(res.stdout)["events"][0]["failures"][0]


def test_audit_timeline_of_unknown_session_exits_2(config: Path) -> None:
    _populate(config)
    res = _run(audit.app, "timeline", "--session", "nope", "--config", config)
    assert res.exit_code == 2 and "no receipts for session `nope`" in res.stderr
