"""Domains, hosts, e-mail addresses and URLs: host extraction and the domain operators.

Rules this module enforces:
- Domains go through `aarmor.normalize.normalize_domain`; e-mail addresses and URLs contribute their host,
  and a host written without a scheme (`evil.com/x`, `//evil.com/x`, `evil.com:8080`) still counts.
- A domain in a list also covers its subdomains; a domain list is never empty (empty means no).
- `domain_not_in` and `external` are violation tests: one host outside the list is enough to fire.
- A host that is not a valid (internationalised) domain name raises `EvalError`: the rule fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from aarmor.errors import InputError
from aarmor.normalize import normalize_domain
from aarmor.policy.operands import (
    EvalError,
    OpContext,
    OperatorArgError,
    Pred,
    bool_arg,
    is_seq,
    scalar_list,
    show,
    type_name,
)

__all__ = [
    "build_domain_in",
    "build_domain_not_in",
    "build_external",
    "domain_list",
    "extract_hosts",
    "host_in",
]

# The host after EVERY `@`, local part or not: `bob@company.com@evil.com` and `"bob@company.com"@evil.com`
# are delivered to evil.com by some mail systems, so each domain that follows an `@` counts (a false
# positive is a DENY, never a bypass); an address literal `bob@[1.2.3.4]` names its IP.
_EMAIL = re.compile(r"@(\[[^\]\s]*\]|[\w-]+(?:\.[\w-]+)+)")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^/\s@?#]*@)?(\[[^\]]*\]|[^/\s:?#]+)")
# WHATWG URL parsing (browsers, Node's fetch) skips any run of `/` and `\` after a special scheme, even
# none: `https:/evil.com`, `https:\\evil.com` and `https:evil.com` all fetch evil.com.
_SPECIAL_URL = re.compile(r"(?i:https?|wss?|ftp):[/\\]*(?:[^/\\\s@?#]*@)?(\[[^\]]*\]|[^/\\\s:?#]+)")
_SPECIAL_SCHEME = re.compile(r"(?i:https?|wss?|ftp):")
# UTS 46 maps these to `.` (IDNA label separators): `evil。com` is evil.com to a resolver.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_BARE = re.compile(r"(?://)?([\w-]+(?:\.[\w-]+)+)\.?(?::\d+)?(?:[/?#]\S*)?")
_PLAIN_ADDR = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")


def _strings(v: Any) -> Iterator[str]:
    if isinstance(v, str):
        yield v
    elif is_seq(v):
        for x in v:
            yield from _strings(x)
    elif isinstance(v, Mapping):
        for x in v.values():
            yield from _strings(x)


def extract_hosts(v: Any) -> list[str]:
    """Normalised hosts of every e-mail address, URL or bare host name found in `v` (recursively).

    Raises:
        EvalError: a host that is not a valid (internationalised) domain name.
    """
    hosts: list[str] = []
    for s in _strings(v):
        if not s.isascii():
            s = s.translate(_DOTS)
        if "@" in s and s.count("@") == 1 and _PLAIN_ADDR.fullmatch(s):  # fast path: one plain address
            found = [s.rpartition("@")[2]]
        else:
            found = [m.group(1) for m in _EMAIL.finditer(s)] if "@" in s else []
        if "://" in s:
            found += [m.group(1) for m in _URL.finditer(s)]
        if ":" in s and _SPECIAL_SCHEME.search(s):
            found += [m.group(1) for m in _SPECIAL_URL.finditer(s)]
        if not found and "." in s:
            # A host written without a scheme (`evil.com/x`, `//evil.com/x`, `evil.com:8080`) still names
            # its host: leaving out `https://` must not turn an external destination into "no host".
            m = _BARE.fullmatch(s.strip())
            if m and (_IPV4.fullmatch(m.group(1)) or not m.group(1).rpartition(".")[2].isdigit()):
                found = [m.group(1)]  # `1.5` is a number, not a host; `10.0.0.1` is a host
        for h in found:
            h = h.strip("[]")
            if h.isascii():
                # ASCII has no default-ignorable code points and NFKC is the identity on it, so this
                # equals normalize_domain(h) at a fraction of the cost (hot path).
                h = h.lower().strip().rstrip(".")
                if h:
                    hosts.append(h)
                    continue
            try:
                hosts.append(normalize_domain(h))
            except InputError as exc:
                raise EvalError(str(exc)) from exc
    return hosts


def host_in(host: str, domains: tuple[str, ...]) -> bool:
    """True when `host` is one of `domains` or a subdomain of one."""
    return any(host == d or host.endswith("." + d) for d in domains)


def domain_list(arg: Any, op: str) -> tuple[str, ...]:
    """Normalised domains of a domain list (`*.` and `@` prefixes dropped).

    Raises:
        OperatorArgError: an empty list, a non-string item, or an invalid domain name.
    """
    items = scalar_list(arg, op)
    out = []
    for i in items:
        if not isinstance(i, str):
            raise OperatorArgError(f"`{op}` expects domain names, found {type_name(i)} `{show(i)}`")
        try:
            out.append(normalize_domain(i.strip().lstrip("*.").lstrip("@")))
        except InputError as exc:
            raise OperatorArgError(f"`{op}`: {exc}") from exc
    return tuple(out)


def build_domain_in(arg: Any, ctx: OpContext) -> Pred:
    """`domain_in`: true when any host found lies in the list (or a subdomain of it)."""
    doms = domain_list(arg, "domain_in")
    return lambda v: any(host_in(h, doms) for h in extract_hosts(v))


def build_domain_not_in(arg: Any, ctx: OpContext) -> Pred:
    """`domain_not_in` (alias `domain_allowlist`): true when any host found lies outside the list."""
    # Violation semantics: true when ANY host found lies outside the list (one bad recipient is enough).
    doms = domain_list(arg, "domain_not_in")
    return lambda v: any(not host_in(h, doms) for h in extract_hosts(v))


def build_external(arg: Any, ctx: OpContext) -> Pred:
    """`external`: true when a host lies outside `internal_domains` (`false`: hosts exist, all inside)."""
    want = bool_arg(arg, "external")
    internal = ctx.internal_domains

    def pred(v: Any) -> bool:
        hosts = extract_hosts(v)
        ext = any(not host_in(h, internal) for h in hosts)
        # `external: false` needs at least one host and every host internal.
        return ext if want else (bool(hosts) and not ext)

    return pred
