"""Cost of provenance (taint) tracking, beside what the pipeline already pays on the same inputs.

Two sides, each measured against its baseline in the same run:
- every tool output is scanned once for values (`scan_text`), beside the classification detectors
  (`run_detectors`) and the injection scanner (`scan_injection`) that already scan the same text;
- every decision scans the action's arguments and looks them up (`ProvenanceIndex.signals`), beside the
  whole `session.evaluate` of the same action (which includes it) and `session.invoke` (which adds the two
  durable commits), in a session that has read 50 outputs.

Texts: a 300-byte e-mail as JSON (addresses, an amount), 4 KB of prose, a 4 KB JSON table dense with
digits (ids, IBANs, amounts, dates: the worst common case), 64 KB of prose.

    .venv/bin/python benchmarks/bench_provenance.py
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import measure
from bench_injection import median_us, prose

from aarmor import Guard, Identity
from aarmor.context.detectors import run_detectors
from aarmor.context.injection import scan_injection
from aarmor.context.provenance import ProvenanceIndex, scan_text


def email_json() -> str:
    return json.dumps({"from": "carol@vendor.example", "to": ["alice@company.com"], "subject": "Invoice 4411",
                       "body": "Hi Alice, please pay EUR 1,250.00 to GB29 NWBK 6016 1331 9268 19 by Friday. "
                               "Details: https://vendor.example/invoices/4411. Carol"})


def table(size: int) -> str:
    rnd = random.Random(1)
    rows = [{"id": i, "name": f"user{i}", "email": f"user{i}@example.com", "iban": "GB29 NWBK 6016 1331 9268 19",
             "amount": f"${rnd.randint(1, 9999)}.00", "updated": "2024-05-01"} for i in range(200)]
    return json.dumps(rows)[:size]


ARGS = {"to": "bob@company.com", "subject": "Re: invoice 4411",
        "body": "Paid EUR 1,250.00 as agreed; the receipt is attached. See https://vendor.example/invoices/4411."}


def output_side() -> str:
    texts = {"e-mail JSON, 300 B": email_json(), "prose, 4 KB": prose(4096), "JSON table, 4 KB": table(4096),
             "prose, 64 KB": prose(65536)}
    rows = ["| output | scan_text (µs) | run_detectors (µs) | scan_injection (µs) | scan_text / detectors |",
            "|---|---|---|---|---|"]
    for name, text in texts.items():
        number = 20 if len(text) > 10_000 else 200
        prov = median_us(lambda t=text: scan_text(t), number)
        det = median_us(lambda t=text: run_detectors(t), number)
        inj = median_us(lambda t=text: scan_injection(t), number)
        rows.append(f"| {name} | {prov:.0f} | {det:.0f} | {inj:.0f} | {prov / det:.2f} |")
    return "\n".join(rows)


def decision_side() -> str:
    idx = ProvenanceIndex()
    idx.trust_text("Pay Carol's invoice 4411 and tell Bob")
    for i in range(50):
        out = email_json().replace("4411", str(4400 + i))
        idx.add_output(f"act_{i}", "email.read", {"values": [v.fp for v in scan_text(out)],
                                                  "sensitive": [v.fp for v in scan_text(out) if v.sensitive]},
                       injected=False)
    rows = ["| per decision | n | p50 (µs) | p99 (µs) | p99.9 (µs) | ops/s |", "|---|---|---|---|---|---|"]
    rows.append(measure("ProvenanceIndex.signals (3 arguments)", lambda: idx.signals(ARGS, ("company.com",)),
                        n=20_000).row())
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = Guard.open(store=f"sqlite:///{tmp}/a.db", keys=f"{tmp}/keys", home=tmp)
        try:
            with guard.session(identity=Identity(human="alice@company.com"),
                               original_request="Pay Carol's invoice 4411 and tell Bob") as s:
                for i in range(50):
                    s.invoke("email.read", {"id": i}, lambda a, i=i: email_json().replace("4411", str(4400 + i)))
                rows.append(measure("session.evaluate(send_email) (whole decision, no write)",
                                    lambda: s.evaluate("send_email", ARGS), n=5_000).row())
                rows.append(measure("session.invoke(send_email) (decision + 2 durable commits)",
                                    lambda: s.invoke("send_email", ARGS, lambda a: "sent"), n=1_000).row())
        finally:
            guard.close()
    return "\n".join(rows)


def main() -> None:
    print("### Output side (once per tool output)\n")
    print(output_side())
    print("\n### Decision side (once per decision)\n")
    print(decision_side())


if __name__ == "__main__":
    main()
