"""Cost of the intent scorer (`intent.scorer: embedding`, all-MiniLM-L6-v2 int8 ONNX; docs/intent.md).

- Model load, in a fresh interpreter per repeat: `build_scorer` (locate + SHA-256 of both files) and
  `encoder.load()` (import onnxruntime, read + hash again, create the session), and the resident memory
  (VmRSS) it adds over `import aarmor`, measured after the first encode.
- Per action: `scorer.score(action, snapshot)` with the session's request already cached and a descriptor
  never seen before (the argument changes every call), i.e. one sentence through the model; and the same
  with a repeated descriptor (cache hit). Also one uncached sentence at 1 and 2 intra-op threads, and the
  lexical fallback.

    .venv/bin/python benchmarks/bench_intent.py
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _timing import HEADER, measure

from aarmor.config import IntentConfig
from aarmor.intent import build_scorer
from aarmor.intent.embedding import MiniLMEncoder
from aarmor.intent.scorer import SemanticScorer
from aarmor.model import ContextSnapshot, Identity
from aarmor.normalize import normalize_action

_LOAD = r"""
import json, time
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
import aarmor
from aarmor.config import IntentConfig
from aarmor.intent import build_scorer
r0 = rss()
t0 = time.perf_counter()
s = build_scorer(IntentConfig(scorer='embedding'))
t1 = time.perf_counter()
s.encoder.load()
t2 = time.perf_counter()
s.encoder.encode(['summarise my unread emails'])
t3 = time.perf_counter()
print(json.dumps({'check_ms': (t1 - t0) * 1e3, 'load_ms': (t2 - t1) * 1e3, 'first_ms': (t3 - t2) * 1e3,
                  'rss_mb': rss() - r0}))
"""

NOW = datetime(2026, 1, 5, tzinfo=UTC)
ALICE = Identity(human="alice@company.com")
REQUEST = "Summarise my unread emails and draft a short reply to the ones from my manager"


def load_figures(repeats: int = 5) -> dict[str, float]:
    runs = [json.loads(subprocess.run([sys.executable, "-c", _LOAD], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> None:
    figs = load_figures()
    print("| model load (fresh process, median of 5) | ms / MiB |\n|---|---|")
    print(f"| start-up check: locate + SHA-256 of both files (`build_scorer`) | {figs['check_ms']:.0f} ms |")
    print(f"| `encoder.load()`: import onnxruntime, verify, create the session | {figs['load_ms']:.0f} ms |")
    print(f"| first encode after load | {figs['first_ms']:.0f} ms |")
    print(f"| resident memory added over `import aarmor` | {figs['rss_mb']:.0f} MiB |")
    print()

    scorer = build_scorer(IntentConfig(scorer="embedding"))
    assert isinstance(scorer, SemanticScorer) and isinstance(scorer.encoder, MiniLMEncoder)
    encoder = scorer.encoder
    snap = ContextSnapshot(session_id="bench", started_at=NOW, original_request=REQUEST)
    counter = itertools.count()

    def fresh_action() -> None:
        i = next(counter)
        a = normalize_action("read_email", {"id": i, "folder": f"inbox-{i}"}, operation=None, identity=ALICE,
                             session_id="bench", now=NOW)
        scorer.score(a, snap)

    same = normalize_action("read_email", {"id": 7, "folder": "inbox"}, operation=None, identity=ALICE,
                            session_id="bench", now=NOW)
    lexical = build_scorer(IntentConfig(scorer="lexical"))
    words = itertools.count()
    two = MiniLMEncoder(encoder.files, threads=2, cache_size=0)
    one = MiniLMEncoder(encoder.files, threads=1, cache_size=0)
    text = "send email: to bob@company.com, subject Quarterly numbers"
    print(HEADER)
    for r in (
        measure("score, new descriptor (1 sentence through the model)", fresh_action, n=2000, warmup=50),
        measure("score, repeated descriptor (cache hit)", lambda: scorer.score(same, snap), n=20000),
        measure("encode 1 sentence uncached, 1 thread", lambda: one.encode([text]), n=1000, warmup=50),
        measure("encode 1 sentence uncached, 2 threads", lambda: two.encode([text]), n=1000, warmup=50),
        measure("lexical scorer, new descriptor",
                lambda: lexical.score(normalize_action("read_email", {"id": next(words)}, operation=None,
                                                       identity=ALICE, session_id="bench", now=NOW), snap),
                n=20000),
    ):
        print(r.row())


if __name__ == "__main__":
    main()
