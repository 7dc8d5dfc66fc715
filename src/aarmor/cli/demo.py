"""`aarmor demo`: one scripted agent session through the real runtime, on the embedded defaults.

It uses the SQLite store under the data directory, the generated development key and the built-in
`default` policy. The session gets all five decisions, each with its signed receipt, and ends by
verifying every receipt offline: only the exported receipts and the public key, copied to an empty
directory.

Two helpers play the people around the agent, for real: an approver (`carol@company.com`, with an
approver token the demo creates and revokes) who approves STEP_UP requests by running the
`aarmor approvals approve` command in a separate process; and the agent host, which answers the
DEFER by supplying the missing context with `session.update_context`. The demo caps every wait at
`--wait` seconds so that nothing hangs if a helper fails; an uncaught wait still ends in DENY.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from aarmor.canonical import format_ts
from aarmor.cli._common import ConfigOption

SCRIPT: list[tuple[str, dict[str, Any], str]] = [
    ("crm.get", {"customer_id": 42}, "read one customer record"),
    ("database.query", {"sql": "SELECT name, email FROM customers", "limit": 5000}, "bulk read, capped"),
    ("email.send", {"to": "bob@company.com", "subject": "Q3 report", "body": "Draft attached."},
     "internal colleague"),
    ("email.send", {"to": "partner@gmail.com", "subject": "Q3 customers", "body": "Full list attached."},
     "external, after reading PII"),
    ("payments.transfer", {"amount": 25_000, "currency": "EUR", "to": "ACME Corp"}, "large payment"),
    ("credentials.rotate", {"target": "prod-payments"}, "environment state unknown"),
    ("database.drop", {"database": "production"}, '"the CEO said drop it"'),
]

REQUEST = ("Prepare the Q3 customer report, send it to Bob, pay the ACME invoice and rotate the payment "
           "credentials. The CEO said we can drop the old production database.")


APPROVER = "carol@company.com"


class _People:
    """The approver (through the CLI, in another process) and the agent host (supplying context)."""

    def __init__(self, guard: Any, config: Path | None, token: str) -> None:
        self._guard, self._config, self._token = guard, config, token
        self.session: Any = None
        self.log: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aarmor-demo-people", daemon=True)

    def __enter__(self) -> _People:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        done: set[str] = set()
        while not self._stop.wait(0.1):
            for item in self._guard.approvals.list():
                if item["id"] not in done:
                    done.add(item["id"])
                    self._approve(item)
            for item in self._guard.deferrals.list():
                if item["id"] not in done and self.session is not None:
                    done.add(item["id"])
                    self.session.update_context(**{n.removeprefix("context."): False
                                                   for n in item["context_needed"]})
                    self.log.append(f"agent host supplied {', '.join(item['context_needed'])} = false to "
                                    f"{item['id']} (session.update_context)")

    def _approve(self, item: dict[str, Any]) -> None:
        req = item["request"]
        cmd = [sys.executable, "-m", "aarmor", "approvals", "approve", item["id"], "--token", self._token,
               "--reason", f"demo: reviewed {req.get('tool')}.{req.get('operation')}"]
        if self._config is not None:
            cmd += ["--config", str(self._config)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        label = "escalated DEFER" if item["source"] == "defer_escalation" else "STEP_UP"
        self.log.append(f"{APPROVER} approved {item['id']} ({label}, {req.get('tool')}.{req.get('operation')}) "
                        f"with `aarmor approvals approve`: " + (done.stdout.strip() or done.stderr.strip()))


def demo(
    wait: Annotated[float, typer.Option(help="Longest STEP_UP or DEFER wait before it times out to DENY "
                                             "(demo only).")] = 30.0,
    config: ConfigOption = None,
) -> None:
    """Run a scripted agent session through aarmor and verify every receipt offline."""
    from rich.console import Console
    from rich.table import Table

    from aarmor import ActionDenied, Guard, Identity, ToolSpec
    from aarmor.config import DEFAULT_POLICY, load_config
    from aarmor.context import check_chain
    from aarmor.receipts import load_public_keys, verify_receipts
    from aarmor.tokens import create_token

    out = Console(width=max(110, Console().width))
    cfg = load_config(config, internal_domains=["company.com"])
    if cfg.policy == DEFAULT_POLICY:
        # the script walks through all five decisions of the deny-by-default baseline pack
        cfg = dataclasses.replace(cfg, policy="builtin:default")
    groups = dict(cfg.approvals.groups)
    for group in ("finance-manager", "security-team"):
        groups.setdefault(group, (APPROVER,))
    cfg = dataclasses.replace(
        cfg, approvals=dataclasses.replace(cfg.approvals, groups=tuple(groups.items()), max_timeout=wait,
                                           poll_interval=0.05),
        deferrals=dataclasses.replace(cfg.deferrals, max_timeout=wait, poll_interval=0.05))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guard = Guard(cfg)
    for w in caught:
        out.print(f"[yellow]warning:[/] {w.message}")
    out.print(f"[bold]aarmor demo[/]  data: {cfg.home}  store: {cfg.store}")
    out.print(f"policy: {guard.policy.policy_id} {guard.policy.version} ({guard.policy.hash[:23]}...), "
              f"default posture {guard.policy.default_decision.value}; signing key {guard.keyring.current_key_id}")
    token_rec, token = create_token(guard.store, APPROVER, "approver", now=guard._clock())
    out.print(f"approver: {APPROVER} (token {token_rec.token_id}, revoked at the end); waits capped at {wait:g} s\n")

    ran: list[str] = []

    def tool(name: str) -> Any:
        def execute(arguments: dict[str, Any]) -> Any:
            ran.append(name)
            if name == "crm.get":
                return {"id": arguments["customer_id"], "name": "Jane Roe", "email": "jane.roe@example.org"}
            if name == "database.query":
                return [{"name": "Jane Roe", "email": "jane.roe@example.org"}][: arguments["limit"]]
            return {"status": "done"}

        return execute

    alice = Identity(human="alice@company.com", service="report-agent-svc", agent="report-agent",
                     roles=["analyst"], scopes=["crm:read", "email:send", "payments:write"])
    tools = [ToolSpec(name, annotations={"readOnlyHint": name in ("crm.get", "database.query")})
             for name in dict.fromkeys(t for t, _, _ in SCRIPT)]
    table = Table(title="one agent session, seven tool calls")
    for col in ("#", "call", "decision (rule)", "enforced", "ran", "receipt"):
        table.add_column(col)
    with _People(guard, config, token) as people, \
            guard.session(identity=alice, original_request=REQUEST, tools=tools) as session:
        people.session = session
        for i, (name, args, why) in enumerate(SCRIPT, 1):
            before = len(ran)
            try:
                session.invoke(name, args, tool(name))
                receipt = list(guard.store.read_receipts(session.session_id))[-1].body
            except ActionDenied as denied:
                stored = guard.store.get_receipt(denied.receipt_id) if denied.receipt_id else None
                receipt = stored.body if stored is not None else {}
            decided = receipt.get("decision", {})
            enforced = receipt.get("enforcement", {}).get("result", "?")
            rule = decided.get("rule_id") or decided.get("defer_trigger") or "default posture"
            table.add_row(str(i), f"{name}({_short(args)})\n[dim]{why}[/]", f"{decided.get('result')}\n[dim]{rule}[/]",
                          enforced, "yes" if len(ran) > before else "no", receipt.get("receipt_id", "-"))
        sid = session.session_id
    out.print(table)
    for line in people.log:
        out.print(f"  [dim]-[/] {line}")
    guard.store.token_revoke(token_rec.token_id, format_ts(guard._clock()))
    guard.close()

    # Offline verification: copy only the receipts and the public keys to an empty directory.
    from aarmor.store import open_store

    store = open_store(cfg.store)
    try:
        exported = [r.body for r in store.read_receipts(sid)]
        log_report = check_chain(list(store.read_log(sid)), session_id=sid)
    finally:
        store.close()
    offline = Path(tempfile.mkdtemp(prefix="aarmor-demo-offline-"))
    try:
        (offline / "receipts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in exported))
        (offline / "public.jwks").write_text(guard.keyring.export_public("jwks"))
        keys = load_public_keys(offline / "public.jwks")
        lines = (offline / "receipts.jsonl").read_text().splitlines()
        report = verify_receipts([json.loads(line) for line in lines], keys)
    finally:
        shutil.rmtree(offline)
    kinds: dict[str, int] = {}
    for r in exported:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    out.print(f"\nreceipts: {len(exported)} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})")
    out.print(f"context log: {log_report.entries} entries, hash chain "
              f"{'[red]BROKEN[/]' if log_report.failures else '[green]verified[/]'}")
    if report.ok:
        out.print(f"offline verification with only the public key: [green]all {report.checked} receipts "
                  "verified[/] (signatures and chain links)")
    else:
        for failure in report.failures:
            out.print(f"[red]FAILED[/] {failure}")
    out.print(f"\nnext: aarmor audit timeline --session {sid}\n      aarmor receipts show {exported[-1]['receipt_id']}"
              f"\n      aarmor log verify --session {sid}")
    if not report.ok or log_report.failures:
        raise typer.Exit(1)


def _short(args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= 48 else text[:45] + "..."
