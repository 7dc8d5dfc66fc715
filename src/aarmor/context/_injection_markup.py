"""Markup rules of the injection scanner: hidden HTML, hidden markdown, data carried in URLs.

Rules this module enforces:
- Hidden text fires only when it carries an instruction (`hidden_cue`): web pages and e-mails hide
  menus, modals and tracking markup all the time; what matters is hidden text that talks to the model.
- A URL fires only when a value in it *is* data: a detector hit (credentials, SSNs, IBANs, ... in any
  URL; e-mail addresses and phone numbers only in auto-loading images), a base64 or hex blob that
  decodes to readable text, free text in a parameter named like data, a secret-named parameter with a
  value, or an exfiltration template (`?q={conversation}`, `INSERT_DATA_HERE`). Random tokens of
  tracking links and signed URLs decode to binary and do not fire.
- Images (`![..](url)`, `<img src>`) are *beacons*: the client fetches them with no click, so their
  URLs are judged more strictly (AARM threat 5: exfiltration through an allowed channel).
- Evidence names the host, the parameter and why, never the value (it may be the secret itself).
- Patterns are compiled once; repetitions are bounded.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from ._injection_rules import hidden_cue, safe_snippet
from .detectors import run_detectors

__all__ = ["scan_html", "scan_markdown", "scan_urls", "url_payload"]

# --- URLs -----------------------------------------------------------------------------------------
_URL = re.compile(r"https?://[^\s<>\"'`\\]{1,4096}")
#: a value of 8+ characters, a long path segment, or a secret-named parameter: else nothing to look at
_WORTH = re.compile(r"=[^&#]{8}|/[^/?#]{24}|[?&](?:pass|pwd|secret|api_?key|access_key|private_key|ssn|card|cc_)",
                    re.I)
_B64 = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){16,}")
_EXT = re.compile(r"\.[A-Za-z0-9]{2,5}$")
_DATA_WORDS = (r"(?:data|secrets?|conversation|chat|history|summary|passwords?|info|context|content|memory|ssn|"
               r"card|message|email|answer|results?)")
_PLACEHOLDER = re.compile(r"(?:\{\{?|\[|<|\$\{?|%)\s*[a-z_ ]{0,20}?" + _DATA_WORDS + r"[a-z_ ]{0,20}"
                          r"(?:\}\}?|\]|>|%)")
_INSERT = re.compile(r"\b(?:insert|replace|put|add|append|include|paste)[_ +-]{1,3}(?:(?:the|your|users?'?s?)"
                     r"[_ +-]{1,3})?" + _DATA_WORDS + r"\b")
_NAME_SPLIT = re.compile(r"[^a-z0-9]+")
#: parameters whose free-text value is data in any URL
_DATA_NAMES = frozenset({"data", "content", "payload", "secret", "secrets", "conversation", "history", "chat",
                         "memory", "context", "exfil", "leak", "dump", "stolen", "creds", "credentials",
                         "summary"})
#: ... and in an auto-loading image
_BEACON_NAMES = _DATA_NAMES | {"d", "q", "query", "msg", "message", "body", "text", "info", "prompt", "output",
                               "p", "s", "c", "m", "x", "log", "email", "user", "password", "ssn"}
_SECRET_NAMES = frozenset({"password", "passwd", "pwd", "pass", "secret", "api_key", "apikey", "access_key",
                           "secret_key", "private_key", "client_secret", "ssn", "card_number", "cc_number"})
_STRICT_DETECTORS = frozenset({"pem_private_key", "aws_access_key", "aws_secret_key", "github_token",
                               "slack_token", "api_key", "iban", "us_ssn", "uk_nino"})
_CARD_NAMES = frozenset({"card", "cc", "pan", "card_number", "cc_number", "cardnumber", "ccnum"})
_FAKE_VALUE = re.compile(r"(?-i:[A-Z0-9_<>{}\[\]$.-]+)|.*(?:your|xxx|\*\*\*|example|placeholder|changeme).*",
                         re.I)
_TOKEN = re.compile(r"[A-Za-z0-9_.~-]+")


def _readable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 12 or sum(ch.isprintable() or ch in "\n\t" for ch in text) < 0.95 * len(text):
        return None
    return text


def _decoded_text(value: str) -> str | None:
    """The readable text a base64/hex blob decodes to, or None (random tokens decode to binary)."""
    if _HEX.fullmatch(value):
        return _readable(bytes.fromhex(value))
    if not _B64.fullmatch(value):
        return None
    v = value.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return _readable(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)))
    except (binascii.Error, ValueError):
        return None


def _blob_reason(value: str, *, beacon: bool) -> str | None:
    text = _decoded_text(value)
    if text is None:
        return None
    if len(text.split()) >= 3:
        return "encoded text"
    hits = run_detectors(text)
    if hits and (beacon or any(d.name in _STRICT_DETECTORS for d in hits)):
        return f"encoded {hits[0].name}"
    return None


def _value_reason(name: str, value: str, *, beacon: bool) -> str | None:
    if not value:
        return None
    hits = run_detectors(value)
    for d in hits:
        if beacon or d.name in _STRICT_DETECTORS or (d.name == "payment_card" and name in _CARD_NAMES):
            return d.name
    why = _blob_reason(value, beacon=beacon)
    if why:
        return why
    words = len(value.split())
    key = name.lower()
    if len(value) >= 30 and words >= 5 and (beacon or key in _DATA_NAMES):
        return "free text"
    if beacon and len(value) >= 16 and not _TOKEN.fullmatch(value) and (
            key in _BEACON_NAMES or _NAME_SPLIT.split(key)[-1] in _BEACON_NAMES):
        return "structured value"  # random ids of tracking pixels are plain tokens; data has punctuation
    if key in _SECRET_NAMES and len(value) >= 6 and not _FAKE_VALUE.fullmatch(value):
        return "secret parameter"
    return None


def url_payload(url: str, *, beacon: bool) -> str | None:
    """Evidence (host, parameter, why; never the value) when `url` carries data, else None."""
    url = url.rstrip(".,;:!?'\")]}")
    if len(url) < 12:
        return None
    if not beacon and not _WORTH.search(url, url.find("/", url.find("//") + 2) % (len(url) + 1)):
        return None  # no value long enough to be data, no secret-named parameter
    try:
        parts = urlsplit(url)
        pairs = parse_qsl(parts.query, keep_blank_values=True, max_num_fields=256)
    except ValueError:
        return None
    host = (parts.hostname or "")[:60]
    plain = unquote_plus(url).lower()
    if (beacon and _PLACEHOLDER.search(plain)) or _INSERT.search(unquote_plus(parts.query).lower()):
        return f"{host}: exfiltration template in the URL"
    for name, value in pairs:
        why = _value_reason(name, value, beacon=beacon)
        if why:
            return f"{host}: `{safe_snippet(name, 24)}` carries {why} ({len(value)} chars)"
    for seg in parts.path.split("/"):
        if len(seg) < 24:
            continue
        seg = _EXT.sub("", unquote(seg))
        why = _blob_reason(seg, beacon=beacon)
        if why is None and beacon:
            hits = run_detectors(seg)
            why = hits[0].name if hits else None
        if why:
            return f"{host}: path segment carries {why} ({len(seg)} chars)"
    return None


def scan_urls(text: str, seen: set[str]) -> str | None:
    """Evidence for the first plain URL in `text` (not already judged, `seen`) that carries data."""
    for m in _URL.finditer(text):
        url = m.group(0)
        if url in seen:
            continue
        if len(seen) >= 4 * MAX_CANDIDATES:
            break
        seen.add(url)
        ev = url_payload(url, beacon=False)
        if ev:
            return ev
    return None


# --- markdown --------------------------------------------------------------------------------------
_TITLE = r"(?:\s+(\"[^\"\n]{0,500}\"|'[^'\n]{0,500}'|\([^)\n]{0,500}\)))?"
_MD_TAIL = re.compile(r"\]\(\s*(<[^>\n]{0,4096}>|[^\s)]{1,4096})" + _TITLE + r"\s*\)")
_MD_DEF = re.compile(r"[ \t]{0,3}\[([^\]\n]{1,200})\]:[ \t]*(<[^>\n]{0,4096}>|\S{1,4096})" + _TITLE + r"[ \t]*$",
                     re.M)
_MD_COMMENT_LABELS = frozenset({"//", "#", "comment", "_", "-", "//:", "todo", "note"})
#: occurrences of one construct examined per text (bounds adversarial input)
MAX_CANDIDATES = 256


def scan_markdown(text: str, cues: dict[str, bool], seen: set[str]) -> tuple[str | None, str | None]:
    """(hidden_markdown evidence, data_in_url evidence) for markdown links, images and definitions.
    `cues` caches `hidden_cue` per text; `seen` collects the URLs judged here."""
    hidden = data = None
    i, n = text.find("]("), 0
    while i >= 0 and n < MAX_CANDIDATES and not (hidden and data):
        n += 1
        j = text.rfind("[", max(0, i - 1000), i)
        m = _MD_TAIL.match(text, i)
        if j >= 0 and m is not None and "\n" not in text[j:i] and "]" not in text[j + 1:i]:
            image, alt, url, title = j > 0 and text[j - 1] == "!", text[j + 1:i], m.group(1).strip("<>"), m.group(2)
            seen.add(url)
            if hidden is None and ((image and _cue(alt, cues)) or (title and _cue(title[1:-1], cues))):
                hidden = safe_snippet(text[j - image: m.end()])
            ev = url_payload(url, beacon=image)
            if ev:
                data = data or ev
                hidden = hidden or f"{'image' if image else 'link'} URL: {ev}"
        i = text.find("](", i + 2)
    i, n = text.find("]:"), 0
    while i >= 0 and n < MAX_CANDIDATES and not (hidden and data):
        n += 1
        m = _MD_DEF.match(text, text.rfind("\n", 0, i) + 1)
        if m is not None:
            label, url, title = m.group(1).strip().lower(), m.group(2), m.group(3)
            comment = label in _MD_COMMENT_LABELS or url in ("#", "<>", "//")
            body = title[1:-1] if title else ""
            if hidden is None and body and _cue(body, cues):
                hidden = f"{'comment' if comment else 'link definition'}: {safe_snippet(body)}"
            if not comment:
                url = url.strip("<>")
                seen.add(url)
                ev = url_payload(url, beacon=False)
                if ev:
                    data = data or ev
                    hidden = hidden or f"link definition URL: {ev}"
        i = text.find("]:", i + 2)
    return hidden, data


def _cue(text: str, cues: dict[str, bool]) -> bool:
    """`hidden_cue`, cached per scan; text too short to hold an instruction is not one."""
    text = text.strip()
    if len(text) < 12 or " " not in text:
        return False
    hit = cues.get(text)
    if hit is None:
        hit = cues[text] = hidden_cue(text)
    return hit


# --- HTML ------------------------------------------------------------------------------------------
_COMMENT_END = "-->"
#: where a hiding attribute may be: each starts with a literal, so the regex engine skips ahead fast
_HIDE_SPOTS = tuple(re.compile(p) for p in (
    r"display\s*:\s*none", r"visibility\s*:\s*hidden", r"font-size\s*:\s*0", r"opacity\s*:\s*0", r"hidden",
    r"sr-only", r"d-none", r"invisible", r":\s*-\d{3}",
    r"color\s*:\s*(?:#fff|white|transparent|rgba?\(\s*255\s*,\s*255\s*,\s*255|rgba\([^)]{0,20},\s*0\s*\))",
    r"background"))
#: what makes a tag hide its content (checked on the tag alone)
_TAG_HIDES = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0+(?:\.0+)?(?:px|pt|em|rem|%)?(?![\d.])"
    r"|opacity\s*:\s*0+(?:\.0+)?(?![\d.])|(?:left|top|text-indent|margin-left)\s*:\s*-\d{3,}"
    r"|\shidden(?=[\s/>=])|aria-hidden\s*=\s*[\"']?true|type\s*=\s*[\"']?hidden"
    r"|class\s*=\s*[\"']?[^\"'>]{0,200}?\b(?:hidden|d-none|invisible|sr-only|visually-hidden)\b")
_TAG_NAME = re.compile(r"<([a-z][a-z0-9-]{0,20})")
_COLOR = re.compile(r"(?<![-\w])color\s*:\s*([^;\"'}!]{1,40})")
_BACKGROUND = re.compile(r"background(?:-color)?\s*:\s*([^;\"'}!]{1,40})")
_WHITE = frozenset({"white", "#fff", "#ffffff", "rgb(255,255,255)", "rgba(255,255,255,1)", "transparent",
                    "rgba(0,0,0,0)"})
_ATTR_TEXT = re.compile(r"\b(?:alt|title|value|content|aria-label)\s*=\s*(\"[^\"]{0,1000}\"|'[^']{0,1000}'"
                        r"|[^\s>]{1,200})")
_TAGS = re.compile(r"<[^>]{0,1000}>")
_IMG_SRC = re.compile(r"<img\b[^>]{0,1000}?\bsrc\s*=\s*[\"']?([^\"'\s>]{1,4096})")
_VOID = frozenset({"img", "input", "meta", "br", "hr", "source", "link", "area", "embed", "wbr", "col"})


def _hides(tag: str) -> bool:
    if _TAG_HIDES.search(tag):
        return True
    colors = {c.replace(" ", "") for c in _COLOR.findall(tag)}
    if not colors:
        return False
    backs = {b.replace(" ", "").split("url(")[0].strip() for b in _BACKGROUND.findall(tag)}
    if colors & backs:
        return True  # the text is painted in its own background colour
    return bool(colors & _WHITE) and not (backs - _WHITE)  # white (or no) text on nothing, i.e. white


def _hidden_element(text: str, low: str, start: int, cues: dict[str, bool]) -> str | None:
    end = low.find(">", start, start + 2000)
    tag = _TAG_NAME.match(low, start)
    if end < 0 or tag is None or not _hides(low[start:end + 1]):
        return None
    name = tag.group(1)
    attrs = " ".join(v.strip("\"'") for v in _ATTR_TEXT.findall(text, start, end)) if "=" in low[start:end] else ""
    if name in _VOID or low[end - 1] == "/":
        inner = attrs
    else:
        close = low.find("</" + name, end, end + 4000)
        raw = text[end + 1: close if close >= 0 else end + 4000]
        if len(raw) < 12 and not attrs:
            return None  # "Close", "Menu": too short to instruct anyone
        inner = _TAGS.sub(" ", raw) + " " + attrs
    if not _cue(inner, cues):
        return None
    return safe_snippet(text[start: min(end + 1, start + 40)] + " " + inner)


def scan_html(text: str, low: str, cues: dict[str, bool], seen: set[str]) -> tuple[str | None, str | None]:
    """(hidden_html evidence, data_in_url evidence of an `<img src>` beacon). `low` is `text.lower()`
    with the same length."""
    hidden = data = None
    i, n = text.find("<!--"), 0
    while i >= 0 and n < MAX_CANDIDATES:
        n += 1
        end = text.find(_COMMENT_END, i + 4, i + 4004)
        body = text[i + 4: end if end >= 0 else i + 4004]
        if _cue(body, cues):
            hidden = "comment: " + safe_snippet(body)
            break
        i = text.find("<!--", i + 4)
    if hidden is None:
        tags: set[int] = set()
        for spot in _HIDE_SPOTS:
            for m in spot.finditer(low):
                start = low.rfind("<", max(0, m.start() - 2000), m.start())
                if start < 0 or start in tags or ">" in low[start:m.start()]:
                    continue  # not inside a tag (CSS in a <style> block, prose), or seen already
                tags.add(start)
                hidden = _hidden_element(text, low, start, cues)
                if hidden or len(tags) >= MAX_CANDIDATES:
                    break
            if hidden or len(tags) >= MAX_CANDIDATES:
                break
    if "<img" in low:
        for n, m in enumerate(_IMG_SRC.finditer(low)):
            url = text[m.start(1): m.end(1)]
            if n >= MAX_CANDIDATES or url in seen:
                continue
            seen.add(url)
            data = url_payload(url, beacon=True)
            if data:
                break
    return hidden, data
