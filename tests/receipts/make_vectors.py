"""Generate the receipt golden vectors in tests/vectors/receipts/ (run: `python -m tests.receipts.make_vectors`).

Each vector is a session export (JSON lines as a list), the public keys that verify it (JWKS), the one
defect made to the valid chain, and the failures verification must report (receipt index, seq, code).
Everything is deterministic: a fixed Ed25519 seed (TEST ONLY, published here), fixed ids and times.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aarmor.canonical import b64, format_ts
from aarmor.model import FrozenMap
from aarmor.normalize import normalize_action
from aarmor.receipts import Keyring, ReceiptSigner, build_receipt, receipt_hash, signing_bytes, verify_receipts
from aarmor.store import GENESIS
from tests.receipts.helpers import ALICE, REDACTION, T0, decision

OUT = Path(__file__).resolve().parents[1] / "vectors" / "receipts"
KEY_ID = "aarmor-20260210-0000feed"
OTHER_KEY_ID = "aarmor-20260210-0000beef"


def _key(label: bytes) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"aarmor test vector key: " + label).digest())


def keyring() -> Keyring:
    return Keyring(Path("/nonexistent"), KEY_ID, {KEY_ID: _key(b"main")})


def valid_chain() -> list[dict[str, Any]]:
    """Five receipts of one session: ALLOW, MODIFY, DENY (fail-closed error), DEFER and its resolution."""
    signer = ReceiptSigner(keyring())
    steps: list[dict[str, Any]] = [
        {"tool": "email.send", "params": {"to": "bob@company.com", "subject": "agenda"}, "result": "ALLOW"},
        {"tool": "database.query", "params": {"sql": "SELECT * FROM customers", "limit": 5000},
         "result": "MODIFY"},
        {"tool": "email.send", "params": {"to": "mallory@evil.example", "api_key": "k-123"}, "result": "DENY"},
        {"tool": "credentials.rotate", "params": {"target": "prod"}, "result": "DEFER", "kind": "deferral"},
        {"tool": "credentials.rotate", "params": {"target": "prod"}, "result": "DEFER", "kind": "resolution"},
    ]
    out: list[dict[str, Any]] = []
    seq, head = -1, GENESIS
    for i, step in enumerate(steps):
        now = T0 + timedelta(seconds=i)
        act = normalize_action(step["tool"], step["params"], operation=None, identity=ALICE, session_id="s-vec",
                               now=T0 + timedelta(seconds=min(i, 3)), action_id=f"act_{min(i, 3):032x}")
        kw: dict[str, Any] = {}
        if step["result"] == "MODIFY":
            kw["modified_parameters"] = {**step["params"], "limit": 100}
            dec = decision("MODIFY", modifications=FrozenMap({"parameters": FrozenMap({"limit": 100})}))
        elif step["result"] == "DEFER":
            dec = decision("DEFER", defer_trigger="unpopulated_context", context_needed=("maintenance_window",))
            block = {"reason": "maintenance window unknown", "trigger": "unpopulated_context",
                     "context_needed": ["maintenance_window"], "deferred_at": format_ts(T0 + timedelta(seconds=3)),
                     "timeout_at": format_ts(T0 + timedelta(seconds=603)), "resolution_method": None,
                     "resolved_at": None, "result": None}
            if step["kind"] == "resolution":
                block.update(resolution_method="timeout", resolved_at=format_ts(now), result="TIMEOUT")
            kw["deferral"] = block
        else:
            dec = decision(step["result"])
        if step["result"] in ("ALLOW", "MODIFY"):
            kw["execution"] = {"started_at": format_ts(now), "completed_at": format_ts(now), "success": True,
                               "output_hash": "sha256:" + "cd" * 32, "error": None}
        if step["result"] == "DENY":
            kw["error"] = {"class": "InputError", "message": "recipient outside the allowlist"}
        body = build_receipt(kind=step.get("kind", "decision"), action=act, decision=dec, session_seq=seq + 1,
                             prev_receipt_hash=head, context_hash="sha256:" + f"{2 * i:064x}", log_seq=2 * i,
                             now=now, redaction=REDACTION, **kw)
        body["receipt_id"] = f"rct_{i:032x}"
        rec = signer.sign(body)
        out.append(rec.body)
        seq, head = rec.seq, rec.receipt_hash
    return out


def _set(r: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for k in path[:-1]:
        r = r[k]
    r[path[-1]] = value


def _field(index: int, path: tuple[Any, ...], value: Any) -> Callable[[list[Any]], list[Any]]:
    def change(chain: list[Any]) -> list[Any]:
        _set(chain[index], path, value)
        return chain
    return change


def _resign_other(chain: list[Any]) -> list[Any]:
    chain[2]["signature"]["value"] = b64(_key(b"attacker").sign(signing_bytes(chain[2])))
    return chain


def _unknown_key(chain: list[Any]) -> list[Any]:
    chain[1]["signature"]["key_id"] = OTHER_KEY_ID
    return chain


VARIANTS: list[tuple[str, str, Callable[[list[Any]], list[Any]]]] = [
    ("tampered-requester-human", "action.requester_context.human of receipt 2 changed to mallory@company.com",
     _field(2, ("action", "requester_context", "human"), "mallory@company.com")),
    ("tampered-delegation-scope", "delegation_chain[0].scope of receipt 0 widened to [\"*\"]",
     _field(0, ("action", "requester_context", "delegation_chain", 0, "scope"), ["*"])),
    ("tampered-policy-hash", "decision.policy.hash of receipt 1 replaced",
     _field(1, ("decision", "policy", "hash"), "sha256:" + "00" * 32)),
    ("tampered-decision-result", "decision.result of receipt 2 changed from DENY to ALLOW",
     _field(2, ("decision", "result"), "ALLOW")),
    ("tampered-parameters", "action.parameters.to of receipt 0 changed",
     _field(0, ("action", "parameters", "to"), "attacker@evil.example")),
    ("tampered-deferral-resolution", "deferral.resolution_method of receipt 4 changed from timeout to approved",
     _field(4, ("deferral", "resolution_method"), "approved")),
    ("rewritten-prev-hash", "prev_receipt_hash of receipt 3 replaced",
     _field(3, ("prev_receipt_hash",), "sha256:" + "11" * 32)),
    ("deleted-middle-receipt", "receipt 2 removed", lambda c: c[:2] + c[3:]),
    ("deleted-first-receipt", "receipt 0 removed", lambda c: c[1:]),
    ("reordered-receipts", "receipts 1 and 2 swapped", lambda c: [c[0], c[2], c[1], c[3], c[4]]),
    ("replayed-receipt", "receipt 0 appended again at the end", lambda c: [*c, copy.deepcopy(c[0])]),
    ("signed-by-another-key", "receipt 2 re-signed by a key that is not ours, under our key id", _resign_other),
    ("unknown-key-id", "signature.key_id of receipt 1 names a key the verifier does not have", _unknown_key),
    ("signature-not-base64", "signature.value of receipt 0 is not base64",
     _field(0, ("signature", "value"), "not base64!")),
    ("unsupported-version", "version of receipt 1 changed to 2.0", _field(1, ("version",), "2.0")),
    ("missing-requester-context", "action.requester_context of receipt 3 removed",
     lambda c: (c[3]["action"].pop("requester_context"), c)[1]),
]


def vectors() -> dict[str, dict[str, Any]]:
    ring = keyring()
    keys = json.loads(ring.export_public("jwks"))
    base = valid_chain()
    pub = ring.public_keys()
    out: dict[str, dict[str, Any]] = {}

    def expect(chain: list[Any], anchors: dict[str, tuple[int, str]] | None = None) -> dict[str, Any]:
        rep = verify_receipts(chain, pub, anchors=anchors)
        return {"ok": rep.ok, "failures": [
            {"receipt_id": f.receipt_id, "seq": f.seq, "code": f.code, "reason": f.reason} for f in rep.failures]}

    valid = expect(base)
    valid["receipt_hashes"] = [receipt_hash(r) for r in base]
    out["valid-chain"] = {"name": "valid-chain", "defect": None, "public_keys": keys, "receipts": base,
                          "anchors": None, "expect": valid}
    for name, defect, change in VARIANTS:
        chain = change(copy.deepcopy(base))
        out[name] = {"name": name, "defect": defect, "public_keys": keys, "receipts": chain, "anchors": None,
                     "expect": expect(chain)}
    anchors = {"s-vec": verify_receipts(base, pub).heads["s-vec"]}
    out["truncated-tail"] = {
        "name": "truncated-tail", "defect": "last receipt (4) removed; the verifier holds an anchor of the head",
        "public_keys": keys, "receipts": base[:4], "anchors": {k: list(v) for k, v in anchors.items()},
        "expect": expect(base[:4], anchors)}
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, vec in vectors().items():
        (OUT / f"{name}.json").write_text(json.dumps(vec, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(vectors())} vectors to {OUT}")


if __name__ == "__main__":
    main()
