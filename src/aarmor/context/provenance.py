"""Provenance (taint) of the values an action sends out (AARM threats 1-3 and 5: hijacked destinations,
exfiltration).

Every value that enters a session is attributed to where it first came from: the user's request or a
human-supplied context value (trusted), or a tool output (untrusted unless the tool is declared trusted).
When an action is evaluated, its arguments are scanned for the same kinds of values; one that first
appeared in an untrusted output and never in the user's request is reported with the argument that holds
it and the action whose output brought it in. A PDP rule can then deny an attacker-chosen recipient while
the user's own recipients pass.

Kinds of values (`KINDS`), each normalised so that trivial transformations still match:
- `email` (lower-cased; `mailto:` and percent-encoding removed), `domain` (the host of every URL and
  e-mail address, and bare domains with a common top-level domain; lower-cased, IDNA, no `www.`), `url`
  (scheme, host, path and query; percent-decoded, no fragment, no trailing slash),
- `iban` (mod-97 valid; upper-case, no separators), `account` (8-19 digit runs with optional single
  separators, not starting with a date; and IBAN-shaped strings with 8+ digits that fail the checksum),
  `phone` (E.164, NANP and UK forms; the last 9 digits),
- `amount` (a number marked as money: a currency symbol or code next to it, or in an argument named like
  an amount; compared as a decimal), `path` (absolute, home- or dot-relative file paths; normalised, lower),
- `secret` (a long random-looking token: 24+ characters of letters and digits): every 16-character window
  of it, lower-case alphanumerics only, so a substring of a secret still matches.
Values are kept only as 64-bit BLAKE2b fingerprints of `kind + value`: the log never holds them in clear.

A value is `sensitive` when a detector of `aarmor.context.detectors` classifies it (an e-mail address,
IBAN, card number, phone number or credential) or it is a secret: such values flowing into an action with
an external destination are exfiltration candidates.

Rules: scanning is linear in the text (bounded regular expressions) and capped at `max_chars`; nothing
here decides: the window turns findings into risk signals, the PDP decides.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from aarmor.model import freeze

from .detectors import DEFAULT_DETECTORS, iban_valid

__all__ = ["DESTINATION_KINDS", "KINDS", "MAX_TRACKED_PER_OUTPUT", "Value", "fingerprint", "scan_arguments",
           "scan_text"]

KINDS = ("email", "domain", "url", "iban", "account", "phone", "amount", "path", "secret")
#: kinds that name where an action sends something (its destination)
DESTINATION_KINDS = frozenset({"email", "domain", "url", "phone", "iban", "account"})
#: fingerprints one output's log entry keeps (beyond: `truncated`, and the session's provenance is
#: reported incomplete so policy can be careful)
MAX_TRACKED_PER_OUTPUT = 4096
_SECRET_WINDOW = 16
#: windows kept per token of a tool output: tokens up to 143 characters are covered whole, longer ones
#: (JWTs, blobs) by their first 128 windows; an argument's tokens are checked at every offset
_MAX_SECRET_WINDOWS = 128

_DET = {d.name: d for d in DEFAULT_DETECTORS}
_EMAIL = _DET["email"].pattern
_PHONES = tuple(_DET[n] for n in ("phone_e164", "phone_nanp", "phone_uk"))
_IBAN = _DET["iban"].pattern
_URL = re.compile(r"(?i)\b(?:https?|ftp|wss?)://[^\s<>\"'`\\)\]}]{1,2048}")
_COMMON_TLDS = (
    "com|net|org|io|ai|co|dev|app|info|biz|xyz|top|site|online|me|us|uk|de|fr|es|it|nl|ru|cn|jp|in|br|"
    "au|ca|ch|eu|se|no|dk|fi|pl|be|at|cz|pt|gr|tr|ir|kr|tk|ml|ga|cf|gq|ly|gl|sh|to|tv|cc|ws|club|live|shop|"
    "store|cloud|link|click|zip|mov|page|tech|pro|gov|edu|mil|int")
_BARE_DOMAIN = re.compile(
    r"(?i)(?<![\w@.-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}(?:" + _COMMON_TLDS + r"))(?![\w-])")
_ACCOUNT = re.compile(r"(?<![\w.,/-])\d(?:[ -]?\d){7,18}(?![\w/-]|[.,]\d)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}-\d{2}-\d{4}")
# money: a currency symbol or upper-case code before the number, or a code or word after it (case-sensitive
# on purpose: each alternative starts with a rare character, so the scan stays fast). The suffix form runs
# only when a suffix marker occurs in the text.
_NUMBER = r"(\d{1,3}(?:[,\u202f ]\d{3})+(?:\.\d{1,8})?|\d{1,15}(?:\.\d{1,8})?)"
_AMOUNT = re.compile(r"(?:[$€£¥₹]|\b(?:USD|EUR|GBP|CHF|JPY|CAD|AUD|INR|CNY|BTC|ETH))\s?" + _NUMBER + r"(?!\d)")
_AMOUNT_AFTER = re.compile(r"(?<![\w.])" + _NUMBER + r"\s?(?:USD|EUR|GBP|CHF|JPY|CAD|AUD|INR|CNY|BTC|ETH|"
                           r"dollars?|euros?|pounds?)\b")
_PATH = re.compile(r"(?<![\w:/.~-])(?:~|\.{1,2})?(?:/[\w.@+-]{1,255}){1,64}/?"
                   r"|(?<![\w])[A-Za-z]:\\(?:[\w.@+ -]{1,255}\\?){1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9_+/=-]{24,4096}")  # longer runs are data (images, archives), not secrets
_ARG_TOKEN = re.compile(r"[A-Za-z0-9_+/=-]{16,}")
#: argument names whose numbers are money (outgoing side)
_AMOUNT_ARG = re.compile(r"(?i)(?:^|[_-]|\b)(?:amount|amt|price|total|fee|cost|payment|balance|value)s?(?:$|[_-]|\b)")


@dataclass(frozen=True, slots=True)
class Value:
    """One value found: its kind, fingerprint, and whether a detector classifies it as sensitive.

    `host` (e-mail, URL and domain values of the action being evaluated only; never stored) is the
    domain it points at; `whole` says the value is the whole argument (a recipient field, not a mention).
    """

    kind: str
    fp: str
    sensitive: bool = False
    host: str | None = None
    whole: bool = False


def fingerprint(kind: str, normalised: str) -> str:
    """64-bit BLAKE2b of kind and normalised value, hex (the only form a value is kept in)."""
    return hashlib.blake2b(f"{kind}\0{normalised}".encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _unquote(s: str) -> str:
    for _ in range(3):  # double or triple encoding is still the same value
        if "%" not in s and "+" not in s:
            break
        t = urllib.parse.unquote_plus(s)
        if t == s:
            break
        s = t
    return s


def _domain(host: str) -> str | None:
    host = host.strip().strip(".").lower()
    if host.startswith("www."):
        host = host[4:]
    if not host or "." not in host or len(host) > 253:
        return None
    try:
        host = host.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        pass  # keep the Unicode form: still a stable key for the same spelling
    return host


def _url(raw: str) -> tuple[str, str | None] | None:
    raw = raw.rstrip(".,;:!?'\"")
    try:
        u = urllib.parse.urlsplit(_unquote(raw))
    except ValueError:
        return None
    host = _domain(u.hostname or "")
    if host is None:
        return None
    path = posixpath.normpath(u.path) if u.path else ""
    path = "" if path in (".", "/") else path
    query = f"?{u.query}" if u.query else ""
    return f"{u.scheme.lower()}://{host}{path}{query}".lower(), host


def _amount(num: str) -> str | None:
    try:
        d = Decimal(num.replace(",", "").replace("\u202f", "").replace(" ", ""))
    except InvalidOperation:
        return None
    return format(d.normalize(), "f") if d else None


def _secret_windows(token: str, limit: int, *, outgoing: bool) -> Iterator[str]:
    """16-character windows of a token, as fingerprints: of a random-looking one (24+ characters, letters
    and digits, not repetitive) in an output, at most `limit`; of any 16+ character run in an argument
    (it is only compared with the secrets already seen, so it needs no such test)."""
    s = re.sub(r"[^a-z0-9]", "", token.lower())
    if len(s) < _SECRET_WINDOW:
        return
    if not outgoing and (len(s) < 24 or not re.search(r"\d", s) or not re.search(r"[a-z]", s)
                         or len(set(s)) < 10):  # `aaaa...1111` is not a secret
        return
    last = min(len(s) - _SECRET_WINDOW, limit - 1)
    for i in range(last + 1):
        yield fingerprint("secret", s[i:i + _SECRET_WINDOW])


def scan_text(text: str, *, max_chars: int = 262_144, money: bool = False, outgoing: bool = False) -> list[Value]:
    """Every value of `KINDS` in `text` (the first `max_chars` characters). With `money`, a bare number
    counts as an amount too (an argument named like one). `outgoing` (an action's argument): secret
    windows at every offset, and the hosts of destinations are kept (in memory) for the external check.

    Speed: each pattern runs only where it can match: the word-like kinds on the whitespace-separated
    tokens that hold a marker (`@`, `/`, `\\`, `%`, a dot before a letter) or are long, the digit kinds in
    windows around the digit runs. A regular expression pass over the whole text costs ~25 ns a
    character here; ten of them made a 4 KB output cost 2.4 ms.
    """
    text = text[:max_chars]
    out: list[Value] = []
    for tok in text.split():
        if len(tok) >= _SECRET_WINDOW or _MARKER(tok):
            _scan_token(tok, out, outgoing)
    for lo, hi in _digit_windows(text):
        _scan_digits(text[lo:hi], out)
    if money and _BARE_AMOUNT(text):
        a = _amount(text.strip().lstrip("$€£¥₹"))
        if a is not None:
            out.append(Value("amount", fingerprint("amount", a)))
    return out


_DIGIT_RUN = re.compile(r"\d+")
_BARE_AMOUNT = re.compile(r"\s*[$€£¥₹]?[\d,.]{1,24}\s*").fullmatch  # an argument named like an amount
#: a token that can hold a word-like value: `@`, `/`, `\`, `%`, or a dot followed by a letter (a host or a
#: file name, not a sentence's end); long runs (secrets) are let through by length
_MARKER = re.compile(r"[@/\\%]|\.[A-Za-z]").search
_CURRENCY_RX = re.compile("[$€£¥₹]|USD|EUR|GBP|CHF|JPY|CAD|AUD|INR|CNY|BTC|ETH|dollar|euro|pound")
_SUFFIX_RX = re.compile("USD|EUR|GBP|CHF|JPY|CAD|AUD|INR|CNY|BTC|ETH|dollar|euro|pound")
_MARGIN = 36  # characters around a digit run that its value can span (IBAN letters, a currency, groups)


def _digit_windows(text: str) -> list[tuple[int, int]]:
    """Spans of `text` around its digit runs, merged where they overlap."""
    spans: list[tuple[int, int]] = []
    for m in _DIGIT_RUN.finditer(text):
        lo, hi = max(0, m.start() - _MARGIN), m.end() + _MARGIN
        if spans and lo <= spans[-1][1]:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


def _scan_digits(chunk: str, out: list[Value]) -> None:
    add = out.append
    for m in _IBAN.finditer(chunk.upper()):
        compact = re.sub(r"[^A-Z0-9]", "", m.group(0))
        if iban_valid(m.group(0)):
            add(Value("iban", fingerprint("iban", compact), True))
        elif sum(c.isdigit() for c in compact) >= 8:
            # IBAN-shaped but no valid IBAN (a country without IBANs, a made-up or mistyped number):
            # still an account identifier a payment can be sent to
            add(Value("account", fingerprint("account", compact), True))
    for m in _ACCOUNT.finditer(chunk):
        if not _DATE.match(m.group(0)):  # `2024-05-30 10:20` is a date and a time, not an account
            add(Value("account", fingerprint("account", re.sub(r"\D", "", m.group(0))), True))
    for det in _PHONES:
        if det.hint is not None and not any(h in chunk for h in det.hint):
            continue
        for m in det.pattern.finditer(chunk):
            if det.validate is None or det.validate(m):
                digits = re.sub(r"\D", "", m.group(0))
                if len(digits) >= 7:
                    add(Value("phone", fingerprint("phone", digits[-9:]), True))
    if _CURRENCY_RX.search(chunk):
        for m in _AMOUNT.finditer(chunk):
            a = _amount(m.group(1))
            if a is not None:
                add(Value("amount", fingerprint("amount", a)))
    if _SUFFIX_RX.search(chunk):
        for m in _AMOUNT_AFTER.finditer(chunk):
            a = _amount(m.group(1))
            if a is not None:
                add(Value("amount", fingerprint("amount", a)))


def _scan_token(tok: str, out: list[Value], outgoing: bool) -> None:
    add = out.append
    if "%" in tok:
        tok = _unquote(tok)
    if "@" in tok:
        for m in _EMAIL.finditer(tok):
            email = m.group(0).lower().removeprefix("mailto:")
            host = _domain(email.rsplit("@", 1)[1])
            add(Value("email", fingerprint("email", email), True, host if outgoing else None))
            if host:
                add(Value("domain", fingerprint("domain", host), False, host if outgoing else None))
    if "://" in tok:
        for m in _URL.finditer(tok):
            parsed = _url(m.group(0))
            if parsed is not None:
                host = parsed[1] if outgoing else None
                add(Value("url", fingerprint("url", parsed[0]), False, host))
                if parsed[1]:
                    add(Value("domain", fingerprint("domain", parsed[1]), False, host))
    if "." in tok:
        for m in _BARE_DOMAIN.finditer(tok):
            host = _domain(m.group(1))
            if host:
                add(Value("domain", fingerprint("domain", host), False, host if outgoing else None))
    if "/" in tok or "\\" in tok:
        for m in _PATH.finditer(tok):
            p = m.group(0)
            if p.count("/") + p.count("\\") < 2 and "." not in p.rsplit("/", 1)[-1]:
                continue  # `/tmp`, `/s`: too short to be a meaningful destination
            add(Value("path", fingerprint("path", posixpath.normpath(p.replace("\\", "/")).lower())))
    if len(tok) >= _SECRET_WINDOW:
        windows = 1 << 30 if outgoing else _MAX_SECRET_WINDOWS
        for m in (_ARG_TOKEN if outgoing else _TOKEN).finditer(tok):
            for fp in _secret_windows(m.group(0), windows, outgoing=outgoing):
                add(Value("secret", fp, True))


def _whole(v: Value, text: str) -> Value:
    """Mark `v` as the whole argument when the argument is nothing but it (a recipient field)."""
    t = text.strip()
    if v.kind in DESTINATION_KINDS and len(t) <= 2048 and not any(c.isspace() for c in t):
        return Value(v.kind, v.fp, v.sensitive, v.host, True)
    return v


def scan_arguments(params: Mapping[str, Any], *, max_chars: int = 262_144) -> list[tuple[str, Value]]:
    """(argument path, value) for every value in an action's arguments (strings and numbers, walked)."""
    found: list[tuple[str, Value]] = []
    budget = [max_chars]

    def walk(v: Any, path: str, depth: int) -> None:
        if depth > 64 or budget[0] <= 0:
            return
        money = isinstance(v, str | int | float | Decimal) and bool(_AMOUNT_ARG.search(path.rsplit(".", 1)[-1]))
        if isinstance(v, str):
            budget[0] -= len(v)
            values = scan_text(v, max_chars=max_chars, money=money, outgoing=True)
            if len(values) == 1 or len({x.kind for x in values if x.kind != "domain"}) == 1:
                values = [_whole(x, v) for x in values]
            found.extend((path, x) for x in values)
        elif isinstance(v, bool) or v is None:
            return
        elif isinstance(v, int | float | Decimal):
            if money:
                a = _amount(str(v))
                if a is not None:
                    found.append((path, Value("amount", fingerprint("amount", a))))
            elif isinstance(v, int) and 10**7 <= abs(v) < 10**19:
                found.append((path, Value("account", fingerprint("account", str(abs(v))), True)))
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k), depth + 1)
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                walk(x, f"{path}.{i}" if path else str(i), depth + 1)

    walk(params, "", 0)
    return found


#: fingerprints a session tracks before it stops adding (and reports its provenance incomplete)
MAX_TRACKED_PER_SESSION = 500_000


@dataclass(frozen=True, slots=True)
class Finding:
    """An argument value that first came from an untrusted tool output (or carries sensitive data)."""

    argument: str
    kind: str
    source_action: str
    source_tool: str

    def to_json(self) -> dict[str, str]:
        return {"argument": self.argument, "kind": self.kind, "source_action": self.source_action,
                "source_tool": self.source_tool}


class ProvenanceIndex:
    """Where each value of one session came from (not thread-safe: the session's lock guards it).

    Fed only by log entries (the user's request at `session_start`, `context_value` entries, the
    `provenance` of `action_outcome` entries), so a resumed session rebuilds the same index.
    """

    __slots__ = ("_injected", "_sensitive", "_sources", "_trusted", "_untrusted", "complete")

    def __init__(self) -> None:
        self._trusted: set[str] = set()
        self._untrusted: dict[str, str] = {}  # fp -> action id of the first untrusted output holding it
        self._sensitive: dict[str, str] = {}  # fp -> action id of the first output (any tool) holding it
        self._sources: dict[str, str] = {}  # action id -> `tool.operation`
        self._injected: set[str] = set()  # action ids whose output carried injection indicators
        self.complete = True

    def trust_text(self, text: str, *, max_chars: int = 262_144) -> None:
        """Values the user (or a person resolving a deferral) wrote: trusted wherever they appear."""
        self._trusted.update(v.fp for v in scan_text(text, max_chars=max_chars))

    def add_output(self, action_id: str, tool: str, prov: Mapping[str, Any], *, injected: bool) -> None:
        """Fold one `action_outcome` entry's `provenance` block in."""
        if prov.get("truncated"):
            self.complete = False
        if injected:
            self._injected.add(action_id)
        if len(self._untrusted) + len(self._sensitive) >= MAX_TRACKED_PER_SESSION:
            self.complete = False
            return
        self._sources.setdefault(action_id, tool)
        if prov.get("trusted"):
            self._trusted.update(str(fp) for fp in prov.get("values", ()))
        else:
            for fp in prov.get("values", ()):
                self._untrusted.setdefault(str(fp), action_id)
        for fp in prov.get("sensitive", ()):
            self._sensitive.setdefault(str(fp), action_id)

    def signals(self, params: Mapping[str, Any] | None, internal_domains: tuple[str, ...],
                max_chars: int = 262_144) -> dict[str, Any]:
        """The provenance risk signals of an action with these arguments (see docs/context.md)."""
        untrusted: dict[tuple[str, str], Finding] = {}
        sensitive: dict[tuple[str, str], Finding] = {}
        external = False
        for path, v in scan_arguments(params or {}, max_chars=max_chars):
            if v.host is not None and not _internal(v.host, internal_domains):
                external = True
            if v.fp in self._trusted:
                continue
            src = self._untrusted.get(v.fp)
            if src is not None:
                untrusted.setdefault((path, v.kind), Finding(path, v.kind, src, self._sources.get(src, "?")))
            src = self._sensitive.get(v.fp)
            if src is not None and v.sensitive and not v.whole:
                sensitive.setdefault((path, v.kind), Finding(path, v.kind, src, self._sources.get(src, "?")))
        found = sorted(untrusted.values(), key=lambda f: (f.argument, f.kind))
        flows = sorted(sensitive.values(), key=lambda f: (f.argument, f.kind))
        return {
            "argument_from_untrusted_source": bool(found),
            "untrusted_arguments": tuple(sorted({f.argument for f in found})),
            "untrusted_value_kinds": tuple(sorted({f.kind for f in found})),
            "untrusted_sources": tuple(sorted({f.source_tool for f in found})),
            "untrusted_source_injected": any(f.source_action in self._injected for f in found),
            "external_destination": external,
            "sensitive_data_to_external_sink": external and bool(flows),
            "sensitive_arguments": tuple(sorted({f.argument for f in flows})),
            "provenance_complete": self.complete,
            # kept immutable like every snapshot value
            "provenance_findings": freeze([f.to_json() for f in found] + [
                {**f.to_json(), "sensitive": True} for f in flows]),
        }


def _internal(host: str, internal_domains: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in internal_domains)
