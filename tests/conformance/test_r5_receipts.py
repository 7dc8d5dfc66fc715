"""AARM R5: a signed receipt for every decision, verifiable offline; tampering is detected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aarmor import ActionDenied
from tests.conformance.conftest import Tool, receipts


def _all_five(guard: Any, identity: Any) -> str:
    with guard.session(identity=identity, original_request="weekly finance tasks") as s:
        s.invoke("email.send", {"to": "bob@company.com"}, Tool())
        s.invoke("database.query", {"sql": "SELECT 1", "limit": 500}, Tool([]))
        for tool, args in (("shell.run", {"cmd": "id"}), ("payment.transfer", {"amount": 20_000})):
            with pytest.raises(ActionDenied):
                s.invoke(tool, args, Tool())
        s.set_context("environment_state_conflict", True, source="monitor")
        with pytest.raises(ActionDenied):
            s.invoke("credentials.rotate", {"target": "prod"}, Tool())
    return s.session_id


def test_receipts_for_all_five_decisions_bind_requester_and_policy(guard: Any, alice: Any) -> None:
    sid = _all_five(guard, alice)
    rs = receipts(guard, sid)
    assert {r["decision"]["result"] for r in rs} == {"ALLOW", "MODIFY", "DENY", "STEP_UP", "DEFER"}
    for r in rs:
        rc = r["action"]["requester_context"]
        assert rc["human"] == "alice@company.com" and rc["service"] == "agent-svc"
        assert rc["agent"] == "mail-agent" and rc["session"] == sid
        assert rc["roles"] == ["analyst"] and rc["scope"] == ["db:read", "email:send"]
        assert rc["delegation_chain"][0]["delegator"] == "orchestrator"
        pol = r["decision"]["policy"]
        assert pol["policy_id"] == "conformance" and pol["version"] == "2026-11-28"
        assert pol["hash"].startswith("sha256:") and pol["hash"] == guard.policy.hash
        assert r["signature"]["algorithm"] == "Ed25519"
    modify = next(r for r in rs if r["decision"]["result"] == "MODIFY")
    assert modify["action"]["parameters"]["limit"] == 500                 # what the agent asked for
    assert modify["modification"]["modified_parameters"]["limit"] == 100  # what ran


def _export(guard: Any, cli: Any, tmp_path: Path) -> tuple[Path, Path]:
    cfg = ["--config", str(_config(guard, tmp_path))]
    exported = cli("receipts", "export", *cfg)
    assert exported.returncode == 0, exported.stderr
    receipts_file = tmp_path / "offline" / "receipts.jsonl"
    receipts_file.parent.mkdir()
    receipts_file.write_text(exported.stdout)
    pub = cli("keys", "export-public", "--format", "jwks", *cfg)
    assert pub.returncode == 0, pub.stderr
    keys_file = tmp_path / "offline" / "public.jwks"
    keys_file.write_text(pub.stdout)
    return receipts_file, keys_file


def _config(guard: Any, tmp_path: Path) -> Path:
    path = tmp_path / "aarmor.yaml"
    path.write_text(f"store: {guard.config.store}\nkeys: {guard.config.keys}\n")
    return path


def test_receipts_verify_offline_with_public_keys_only(guard: Any, alice: Any, cli: Any, tmp_path: Path) -> None:
    _all_five(guard, alice)
    guard.close()
    receipts_file, keys_file = _export(guard, cli, tmp_path)
    # another "machine": a fresh directory holding only the export and the public keys
    res = cli("receipts", "verify", str(receipts_file), "--public-keys", str(keys_file),
              cwd=receipts_file.parent, env={"AARMOR_HOME": str(tmp_path / "elsewhere")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (tmp_path / "elsewhere").exists()  # verification needs no store and no private key


@pytest.mark.parametrize("field,value", [
    (("action", "requester_context", "human"), "mallory@company.com"),
    (("decision", "policy", "hash"), "sha256:" + "1" * 64),
])
def test_tampered_receipt_fails_verification(guard: Any, alice: Any, cli: Any, tmp_path: Path,
                                             field: tuple[str, ...], value: str) -> None:
    _all_five(guard, alice)
    guard.close()
    receipts_file, keys_file = _export(guard, cli, tmp_path)
    lines = receipts_file.read_text().splitlines()
    victim = json.loads(lines[1])
    target = victim
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    lines[1] = json.dumps(victim)
    receipts_file.write_text("\n".join(lines) + "\n")
    res = cli("receipts", "verify", str(receipts_file), "--public-keys", str(keys_file))
    assert res.returncode == 1
    assert victim["receipt_id"] in res.stdout + res.stderr


def test_deferred_receipt_records_reason_method_and_time(guard: Any, alice: Any) -> None:
    sid = _all_five(guard, alice)
    deferral, resolution = [r for r in receipts(guard, sid) if r["decision"]["result"] == "DEFER"]
    assert deferral["kind"] == "deferral" and deferral["deferral"]["reason"]
    assert resolution["kind"] == "resolution"
    assert resolution["deferral"]["reason"] == deferral["deferral"]["reason"]
    assert resolution["deferral"]["resolution_method"] == "timeout"
    assert resolution["deferral"]["resolved_at"]
    assert resolution["prev_receipt_hash"] != deferral["prev_receipt_hash"]
