"""Prompt-injection indicators in tool output (AARM 2.2 risk signals; threats 1 and 2 of section 5).

`scan_injection(text)` takes the flattened output text the classifier scans (`output_text(...).text`)
and returns the indicators it finds, one per kind, sorted by kind:

- `instruction_to_model`: text addressed to the model: overrides of earlier instructions ("ignore all
  previous instructions"), chat-template tokens (`<|im_start|>`, `[INST]`), role lines ("SYSTEM: delete
  ..."), greetings to an AI, secrecy from the user, system-prompt extraction, fake dialogue turns; or
  two weak cues within 400 characters ("IMPORTANT: you must" plus "call the tool `send_money`").
- `invisible_unicode`: zero-width characters (U+200B-U+200D, U+2060-U+2064, U+FEFF after the start),
  Unicode tag characters outside flag emoji (ASCII smuggling), runs of variation selectors or soft
  hyphens, beyond a tolerance of `INVISIBLE_TOLERANCE` (emoji joiners and single selectors are normal).
- `bidi_unicode`: bidirectional overrides (U+202D/U+202E) anywhere; embeddings and isolates
  (U+202A-U+202C, U+2066-U+2069) in a line with no right-to-left letters; two or more LRM/RLM marks in
  such a line (Trojan Source).
- `hidden_html`: an HTML comment, or an element hidden by CSS (display:none, visibility:hidden,
  font-size:0, opacity:0, off-screen, text in its own background colour or white on nothing), the
  `hidden` attribute, `aria-hidden`, a hidden input or a hiding class, whose text carries an instruction.
- `hidden_markdown`: a markdown comment (`[//]: # (...)`), image alt text or link title carrying an
  instruction; a markdown image, link or link definition whose URL carries data.
- `data_in_url`: a URL whose query or path carries data (see `aarmor.context._injection_markup`): the
  exfiltration beacon of a markdown image, a credential or SSN in a parameter, a base64 blob of text.

Rules this module enforces:
- Pure and bounded: no I/O, at most `max_chars` characters scanned (the classifier has already cut
  the text to `limits.max_scan_bytes`), every regex compiled once at import and linear-time.
- Cheap pre-checks: ASCII text skips the Unicode rules (O(1) in CPython), markup rules run only when
  `<`, `](`, `]:` or `://` occur, and each instruction rule only when one of its trigger words does,
  so clean text costs a few substring searches.
- Text a model would read differently from its bytes is folded first (`fold`): zero-width characters
  dropped, tag characters decoded, NFKC applied; canonical-JSON escapes (`\\n`, `\\"`) are undone so
  structured output reads like the text inside it.
- Evidence is short (`EVIDENCE_CHARS`), shows invisible characters as `\\uXXXX` and never carries a
  URL's parameter values. The context log records only the kinds, never the evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aarmor.limits import DEFAULT_LIMITS

from ._injection_markup import scan_html, scan_markdown, scan_urls
from ._injection_rules import EVIDENCE_CHARS, find_instruction, fold, safe_snippet

__all__ = [
    "BIDI_UNICODE",
    "DATA_IN_URL",
    "EVIDENCE_CHARS",
    "HIDDEN_HTML",
    "HIDDEN_MARKDOWN",
    "INJECTION_KINDS",
    "INSTRUCTION_TO_MODEL",
    "INVISIBLE_TOLERANCE",
    "INVISIBLE_UNICODE",
    "Indicator",
    "scan_injection",
]

INSTRUCTION_TO_MODEL = "instruction_to_model"
INVISIBLE_UNICODE = "invisible_unicode"
BIDI_UNICODE = "bidi_unicode"
HIDDEN_HTML = "hidden_html"
HIDDEN_MARKDOWN = "hidden_markdown"
DATA_IN_URL = "data_in_url"
INJECTION_KINDS: tuple[str, ...] = tuple(sorted((INSTRUCTION_TO_MODEL, INVISIBLE_UNICODE, BIDI_UNICODE,
                                                 HIDDEN_HTML, HIDDEN_MARKDOWN, DATA_IN_URL)))
#: suspicious invisible characters tolerated (a stray zero-width space from a web page)
INVISIBLE_TOLERANCE = 2


@dataclass(frozen=True, slots=True)
class Indicator:
    """One kind of injection indicator found, with a short evidence snippet safe to print."""

    kind: str
    evidence: str


def scan_injection(text: str, *, max_chars: int = DEFAULT_LIMITS.max_scan_bytes) -> tuple[Indicator, ...]:
    """The injection indicators in `text`, one per kind, sorted by kind (empty when none).

    Raises:
        TypeError: `text` is not a str.
    """
    if not isinstance(text, str):
        raise TypeError(f"scan_injection expects a str, found {type(text).__name__}")
    if not text:
        return ()
    if len(text) > max_chars:
        text = text[:max_chars]
    if "\\" in text:
        text = _unescape_json(text)
    found: dict[str, str] = {}
    view = text
    if not text.isascii():
        inv = _invisible(text)
        if inv:
            found[INVISIBLE_UNICODE] = inv
        bidi = _bidi(text)
        if bidi:
            found[BIDI_UNICODE] = bidi
        view = fold(text)
    low = view.lower()
    if len(low) != len(view):
        view = low  # a case mapping changed the length: take evidence from the lower-case text
    cues = find_instruction(low, view)
    if cues:
        found[INSTRUCTION_TO_MODEL] = safe_snippet(" + ".join(view[c.start:c.end] for c in cues))
    seen: set[str] = set()
    hidden_cues: dict[str, bool] = {}  # hidden text judged already (pages repeat their hidden bits)
    data: str | None = None
    if "<" in view:
        hidden, data = scan_html(view, low, hidden_cues, seen)
        if hidden:
            found[HIDDEN_HTML] = hidden
    if "](" in view or "]:" in view:
        hidden, md_data = scan_markdown(view, hidden_cues, seen)
        if hidden:
            found[HIDDEN_MARKDOWN] = hidden
        data = data or md_data
    if data is None and "://" in view:
        data = scan_urls(view, seen)
    if data:
        found[DATA_IN_URL] = data
    return tuple(Indicator(kind, safe_snippet(found[kind])) for kind in sorted(found))


_JSON_ESCAPES = (("\\n", "\n"), ("\\t", "\t"), ("\\r", "\r"), ('\\"', '"'), ("\\/", "/"))


def _unescape_json(text: str) -> str:
    # canonical JSON of structured output escapes newlines and quotes inside strings; undo the common
    # ones so line-anchored rules and quoted HTML attributes read as the model will read them
    for esc, ch in _JSON_ESCAPES:
        if esc in text:
            text = text.replace(esc, ch)
    return text


# --- Unicode --------------------------------------------------------------------------------------
_INVISIBLE_RUN = re.compile("[\u00ad\u200b-\u200d\u2060-\u2064\ufeff\ufe00-\ufe0f\U000e0000-\U000e007f"
                            "\U000e0100-\U000e01ef]+")
_TAG = re.compile("[\U000e0000-\U000e007f]+")
_EMOJI_JOIN = frozenset({"\ufe0f\u200d", "\u200d\ufe0f"})
_FLAG = "\U0001f3f4"
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff\U0001e800-\U0001efff]")
_MAX_OCCURRENCES = 4096


def _context(text: str, start: int, end: int, around: int = 24) -> str:
    return safe_snippet(text[max(0, start - around): end + around], EVIDENCE_CHARS)


def _invisible(text: str) -> str | None:
    suspicious, first = 0, None
    tags: list[str] = []
    for i, m in enumerate(_INVISIBLE_RUN.finditer(text)):
        if i >= _MAX_OCCURRENCES:
            break
        run, s, e = m.group(0), m.start(), m.end()
        bad = 0
        for t in _TAG.finditer(run):
            legit = (s + t.start() > 0 and text[s + t.start() - 1] == _FLAG and t.group(0).endswith("\U000e007f")
                     and len(t.group(0)) <= 7)
            if not legit:
                tags.append("".join(chr(ord(c) - 0xE0000) for c in t.group(0) if 0x20 <= ord(c) - 0xE0000 < 0x7F))
        rest = _TAG.sub("", run)
        if len(rest) >= 2 and rest not in _EMOJI_JOIN:
            bad = len(rest)  # a run of invisibles carries bits; emoji use one at a time
        elif rest in ("\u200c", "\u200d", "\ufe0f\u200d", "\u200d\ufe0f"):
            before = text[s - 1] if s > 0 else " "
            after = text[e] if e < len(text) else " "
            bad = int(before.isascii() and after.isascii())  # a joiner inside Latin text joins nothing
        elif rest and not ("\ufe00" <= rest <= "\ufe0f" or "\U000e0100" <= rest <= "\U000e01ef"
                           or rest == "\u00ad" or (rest == "\ufeff" and s == 0)):
            bad = 1
        if bad and first is None:
            first = (s, e)
        suspicious += bad
    if tags:
        hidden = " ".join(tags).strip()
        return safe_snippet(f"tag characters spell `{hidden}`" if hidden else "unicode tag characters")
    if suspicious > INVISIBLE_TOLERANCE and first is not None:
        return f"{suspicious} invisible characters: " + _context(text, *first)
    return None


def _bidi(text: str) -> str | None:
    marks_in_ltr, first_mark = 0, None
    for i, m in enumerate(_BIDI.finditer(text)):
        if i >= _MAX_OCCURRENCES:
            break
        ch, s = m.group(0), m.start()
        if ch in "\u202d\u202e":
            return "bidi override: " + _context(text, s, s + 1)
        lo = text.rfind("\n", 0, s) + 1
        hi = text.find("\n", s)
        if _RTL.search(text, lo, hi if hi >= 0 else len(text)):
            continue  # right-to-left text uses these controls legitimately
        if ch in "\u200e\u200f":
            marks_in_ltr += 1
            first_mark = first_mark if first_mark is not None else s
            if marks_in_ltr >= 2:
                return "direction marks in left-to-right text: " + _context(text, first_mark, s + 1)
            continue
        return "bidi control in left-to-right text: " + _context(text, s, s + 1)
    return None
