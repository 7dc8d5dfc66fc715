"""Identity revocation: what the store lookup adds to every decision (docs/identity.md "Revocation").

Every verification reads the revocations (one primary-key search per key, no cache), so a revocation written
by any process is in force at the next decision. Measured side by side, in the same run and on the same
Guard: the verifier alone and wrapped (`RevocationCheck`) with an empty table and with 10,000 revocations,
then `session.evaluate` and `session.invoke` with the check and without it (the mediator's verifier swapped
for the inner one, which no configuration can do).
"""

from __future__ import annotations

import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

from _timing import Result, measure

from aarmor import DelegationLink, Guard, Identity
from aarmor.identity import ClaimedIdentityVerifier
from aarmor.identity.revocation import RevocationCheck, revoke

POLICY = """
policy: {id: bench, version: "1", default: ALLOW, internal_domains: [company.com]}
rules:
  - id: deny-shell
    match: {tool: shell}
    action: DENY
    reason: no shell
"""

PLAIN = Identity(human="alice@company.com", service="report-svc", agent="report-agent")
CHAINED = Identity(human="alice@company.com", service="report-svc", agent="report-agent", delegation=(
    DelegationLink("alice@company.com", "planner-agent", link_id="dlg-1"),
    DelegationLink("planner-agent", "report-agent", link_id="dlg-2")))


def run(n: int = 5_000) -> list[Result]:
    tmp = Path(tempfile.mkdtemp(prefix="aarmor-bench-"))
    (tmp / "policy.yaml").write_text(POLICY)
    now = datetime.now(UTC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard.open(policy=str(tmp / "policy.yaml"), store=f"sqlite:///{tmp / 'bench.db'}?synchronous=normal",
                           keys=str(tmp / "keys"))
    inner = ClaimedIdentityVerifier("enforce")
    check = RevocationCheck(inner, guard.store)
    results = [measure("verify: claimed identity alone (no revocation check)", lambda: inner.verify(PLAIN, now=now),
                       n=n)]
    results.append(measure("verify + revocation check, empty table, 3 keys", lambda: check.verify(PLAIN, now=now),
                           n=n))
    for i in range(10_000):
        revoke(guard.store, "token", f"jti-{i}", reason="bench", by="bench", now=now)
    results.append(measure("verify + revocation check, 10,000 revocations, 3 keys",
                           lambda: check.verify(PLAIN, now=now), n=n))
    results.append(measure("verify + revocation check, 10,000 revocations, 2-link chain (8 keys)",
                           lambda: check.verify(CHAINED, now=now), n=n))

    session = guard.session(identity=PLAIN, original_request="send the weekly report to bob")
    args = {"to": "bob@company.com", "subject": "weekly report", "body": "numbers attached"}
    wrapped = guard.mediator._verifier  # type: ignore[attr-defined]

    def tool(arguments: dict[str, object]) -> str:
        return "ok"

    # alternated, twice each, so drift of a shared machine shows as a difference between the repeats
    for label, verifier in (("with", wrapped), ("without", inner), ("with", wrapped), ("without", inner)):
        guard.mediator._verifier = verifier  # type: ignore[attr-defined]
        results.append(measure(f"session.evaluate {label} revocation check (10,000 revocations)",
                               lambda: session.evaluate("email.send", args), n=n))
    for label, verifier in (("with", wrapped), ("without", inner), ("with", wrapped), ("without", inner)):
        guard.mediator._verifier = verifier  # type: ignore[attr-defined]
        results.append(measure(f"session.invoke {label} revocation check, synchronous=normal",
                               lambda: session.invoke("email.send", args, tool), n=n // 2))
    guard.mediator._verifier = wrapped  # type: ignore[attr-defined]
    session.close()
    guard.close()
    return results


if __name__ == "__main__":
    from _timing import HEADER

    print(HEADER)
    for r in run():
        print(r.row())
