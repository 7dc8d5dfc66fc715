"""The cheap fallback similarity: word overlap, no model, no extra (`intent.scorer: lexical`).

Both texts become sets of content words: lower-cased, split on anything that is not a letter or digit and
at camelCase and snake_case boundaries, stop words dropped, a plural or `-ing`/`-ed` ending stripped
(`emails` -> `email`, `sending` -> `send`). The similarity is the cosine of the two binary word vectors,
|A ∩ B| / sqrt(|A| |B|), in [0, 1]; 0 when either set is empty.

It only sees shared words: `summarise my unread emails` and `list_messages(folder=inbox)` share none, so it
is far weaker than the embedding model; it is meant for drift monitoring and low alignment thresholds
where the `aarmor[semantic]` extra cannot be installed (docs/intent.md).
"""

from __future__ import annotations

import math
import re

__all__ = ["content_words", "lexical_similarity"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT = re.compile(r"[^0-9a-z]+")
_STOP = frozenset(
    "a an and are as at be been but by can could do does for from get has have i if in into is it its me my "
    "of on or our please set should so than that the their them then there these this those to up us was we "
    "were what when which while who will with would you your all any some just also".split()
)


def _stem(w: str) -> str:
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            return w[: -len(suffix)] + keep
    return w


def content_words(text: str) -> frozenset[str]:
    """The set of normalised content words of `text`."""
    words = _SPLIT.split(_CAMEL.sub(" ", text).lower())
    return frozenset(_stem(w) for w in words if len(w) > 1 and w not in _STOP)


def lexical_similarity(a: str, b: str) -> float:
    """Cosine of the binary content-word vectors of `a` and `b`, in [0, 1]."""
    wa, wb = content_words(a), content_words(b)
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / math.sqrt(len(wa) * len(wb))
