"""Pattern detectors for sensitive data in tool outputs (AARM R2: classification by patterns).

Rules this module enforces:
- Every regular expression is compiled once, at import; the hot path never calls `re.compile`.
- A detector reports *that* it fired, never the matched value: secrets found in an output must not be
  copied into the log, receipts or telemetry.
- Regex hits are confirmed by a validator where a checksum or structure exists, to keep plain numbers,
  dates and prose from firing: payment cards need a known issuer prefix and the Luhn check; IBANs the
  country length and mod-97; US SSNs exclude the never-issued ranges (area 000, 666, 900-999; group 00;
  serial 0000); UK NINOs exclude the invalid prefixes; JWTs need a base64url header that decodes to a
  JSON object with `alg`; generic `sk-` keys need mixed-case letters and digits (random-looking).
- Patterns are linear-time on adversarial input: bounded repetitions, look-arounds instead of nesting.
- A cheap substring or character pre-check skips a detector's regex when it cannot match.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_DETECTORS", "Detector", "iban_valid", "luhn_valid", "run_detectors"]


@dataclass(frozen=True, slots=True)
class Detector:
    """One pattern detector: hits add `categories` and raise the output to at least `level`."""

    name: str
    categories: frozenset[str]
    level: str
    pattern: re.Pattern[str]
    #: a substring that must occur for any match (skips the regex otherwise); None = digits needed
    hint: tuple[str, ...] | None = None
    validate: Callable[[re.Match[str]], bool] | None = None

    def fires(self, text: str, has_digit: bool) -> bool:
        if self.hint is None:
            if not has_digit:
                return False
        elif not any(h in text for h in self.hint):
            return False
        return any(self.validate is None or self.validate(m) for m in self.pattern.finditer(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the validated hits are (for redaction, never for logging)."""
        if not self.fires(text, any(c.isdigit() for c in text)):
            return []
        return [m.span() for m in self.pattern.finditer(text) if self.validate is None or self.validate(m)]


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of payment card numbers."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# ISO 13616 lengths of the IBAN registry (the countries most seen; others fall back to 15..34).
_IBAN_LEN = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23,
    "GL": 18, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20,
    "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "ME": 22, "MK": 19, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}


def iban_valid(text: str) -> bool:
    """Country length (where known) and the ISO 7064 mod-97 check of an IBAN (spaces ignored)."""
    s = text.replace(" ", "").upper()
    want = _IBAN_LEN.get(s[:2])
    if (want is not None and len(s) != want) or not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(ch, 36)) for ch in moved)
    return int(num) % 97 == 1


_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3[068]|35|6(?:011|5|4[4-9])")


def _card(m: re.Match[str]) -> bool:
    digits = re.sub(r"[ -]", "", m.group(0))
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    return bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _iban(m: re.Match[str]) -> bool:
    return iban_valid(m.group(0))


_SSN_BAD = {"078051120", "219099999", "123456789"}


def _ssn(m: re.Match[str]) -> bool:
    area, group, serial = m.group("a"), m.group("g"), m.group("s")
    if area == "000" or area == "666" or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return area + group + serial not in _SSN_BAD


_NINO_BAD_PREFIX = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def _nino(m: re.Match[str]) -> bool:
    return m.group(0)[:2] not in _NINO_BAD_PREFIX


def _phone_nanp(m: re.Match[str]) -> bool:
    area = m.group("area") or m.group("area2")
    return area[0] in "23456789" and m.group("ex")[0] in "23456789"


def _phone_uk(m: re.Match[str]) -> bool:
    text = m.group(0)
    n = sum(ch.isdigit() for ch in text)
    return n in (10, 11) and (" " in text or "-" in text)


def _mixed(m: re.Match[str]) -> bool:
    tail = m.group("tail")
    return any(c.isdigit() for c in tail) and any(c.isupper() for c in tail) and any(
        c.islower() for c in tail)


def _jwt(m: re.Match[str]) -> bool:
    head = m.group("h")
    try:
        raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
        obj = json.loads(raw)
    except (binascii.Error, ValueError):
        return False
    return isinstance(obj, dict) and isinstance(obj.get("alg"), str)


_PII = frozenset({"PII"})
_FIN = frozenset({"FINANCIAL"})
_CRED = frozenset({"CREDENTIALS"})

DEFAULT_DETECTORS: tuple[Detector, ...] = (
    # --- credentials (RESTRICTED) ------------------------------------------------------------
    Detector("pem_private_key", _CRED, "RESTRICTED",
             re.compile(r"-----BEGIN (?:[A-Z0-9]{1,16} ){0,3}PRIVATE KEY(?: BLOCK)?-----"), ("-----BEGIN",)),
    Detector("aws_access_key", _CRED, "RESTRICTED",
             re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|A3T[A-Z0-9])[A-Z0-9]{16}"
                        r"(?![A-Z0-9])"),
             ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "A3T")),
    Detector("aws_secret_key", _CRED, "RESTRICTED",
             re.compile(r"(?i:aws_?secret_?access_?key)[\"']?\s{0,4}[:=]\s{0,4}[\"']?[A-Za-z0-9/+=]{40}"
                        r"(?![A-Za-z0-9/+=])"), ("ecret",)),
    Detector("github_token", _CRED, "RESTRICTED",
             re.compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"
                        r"(?![A-Za-z0-9_])"), ("gh", "github_pat_")),
    Detector("slack_token", _CRED, "RESTRICTED",
             re.compile(r"(?<![A-Za-z0-9])xox[abposr]-[A-Za-z0-9-]{10,250}"
                        r"|https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,}"),
             ("xox", "hooks.slack.com")),
    Detector("api_key", _CRED, "RESTRICTED",
             re.compile(r"(?<![A-Za-z0-9_-])(?:sk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?|sk_live_|rk_live_)"
                        r"(?P<tail>[A-Za-z0-9_-]{20,250})(?![A-Za-z0-9_-])"), ("sk-", "sk_live_", "rk_live_"),
             _mixed),
    Detector("jwt", _CRED, "RESTRICTED",
             re.compile(r"(?<![A-Za-z0-9_-])(?P<h>ey[A-Za-z0-9_-]{10,2048})\.[A-Za-z0-9_-]{2,8192}"
                        r"\.[A-Za-z0-9_-]{0,2048}(?![A-Za-z0-9_-])"), ("ey",), _jwt),
    # --- financial (CONFIDENTIAL) ------------------------------------------------------------
    Detector("payment_card", _FIN, "CONFIDENTIAL",
             # a whole digit run, or the printed groupings 4-4-4-4(-3) and 4-6-5 with one separator
             re.compile(r"(?<![\d-])(?:\d{13,19}|\d{4}(?P<s1>[ -])\d{4}(?P=s1)\d{4}(?P=s1)\d{4}"
                        r"(?:(?P=s1)\d{3})?|\d{4}(?P<s2>[ -])\d{6}(?P=s2)\d{5})(?![\d-])"), None, _card),
    Detector("iban", _FIN, "CONFIDENTIAL",
             re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                        r"(?![A-Za-z0-9])"),
             None, _iban),
    # --- personal data (CONFIDENTIAL) --------------------------------------------------------
    Detector("email", _PII, "CONFIDENTIAL",
             re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                        r"[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])"), ("@",)),
    Detector("us_ssn", _PII, "CONFIDENTIAL",
             re.compile(r"(?<![\d-])(?P<a>\d{3})(?P<sep>[- ])(?P<g>\d{2})(?P=sep)(?P<s>\d{4})(?![\d-])"),
             None, _ssn),
    Detector("uk_nino", _PII, "CONFIDENTIAL",
             re.compile(r"(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
                        r"(?![A-Za-z0-9])"), None, _nino),
    Detector("phone_e164", _PII, "CONFIDENTIAL",
             # one digit per repetition: a single parse of any input, so no backtracking blow-up
             re.compile(r"(?<![\w+])\+[1-9](?:[ .-]?\(?\d\)?){7,14}(?!\w)"), ("+",)),
    Detector("phone_nanp", _PII, "CONFIDENTIAL",
             re.compile(r"(?<![\w+-])(?:\((?P<area>\d{3})\) ?|(?P<area2>\d{3})(?P<sep>[-. ]))"
                        r"(?P<ex>\d{3})[-. ]\d{4}(?![\w-])"), None,
             _phone_nanp),
    Detector("phone_uk", _PII, "CONFIDENTIAL",
             re.compile(r"(?<![\w+-])0[1-9]\d{1,3}[ -]?\d{3,4}[ -]?\d{3,4}(?![\w-])"), None, _phone_uk),
)


def run_detectors(text: str, detectors: tuple[Detector, ...] = DEFAULT_DETECTORS) -> tuple[Detector, ...]:
    """The detectors that fire on `text`, in declaration order."""
    if not text:
        return ()
    has_digit = any(c.isdigit() for c in text) if len(text) < 4096 else re.search(r"\d", text) is not None
    return tuple(d for d in detectors if d.fires(text, has_digit))
