"""The loading shell: files, directories and built-in packs -> `PolicySet` (parse, validate, compile).

This is the only policy module that reads files. A directory loads every `*.yaml`/`*.yml` in it (not
recursively, sorted by name) as one `PolicySet`, skipping `*.cases.yaml` (the CASES test tables that live
beside policies); see `compile_policy` for how ids and versions combine.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aarmor.errors import PolicyError
from aarmor.limits import DEFAULT_LIMITS, Limits
from aarmor.normalize import normalize_domain
from aarmor.policy.compile import Part, PolicySet, compile_policy
from aarmor.policy.operators import OpContext
from aarmor.policy.parse import LList, parse_policy_text
from aarmor.policy.validate import (
    HEADER_KEYS,
    Checker,
    re_validation,
    validate_boundaries,
    validate_header,
    validate_rule,
)

__all__ = ["BUILTIN_PACKS", "load_builtin", "load_policy", "load_policy_text"]

BUILTIN_PACKS = ("default", "agent-default")
CASES_SUFFIX = ".cases.yaml"  # CASES test tables beside the policies of a directory: not policies
TOP_KEYS = ("policy", "rules", "intent_boundaries", "re_validation", *HEADER_KEYS)


def _norm_domains(domains: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted({normalize_domain(d.lstrip("@")) for d in domains}))
    except Exception as exc:
        raise PolicyError(f"invalid internal domain: {exc}") from exc


def _part(text: str, *, source: str, stem: str, internal_domains: tuple[str, ...], limits: Limits) -> Part:
    doc = parse_policy_text(text, source=source, limits=limits)
    v = Checker(source, None)
    for k in doc:
        if k not in TOP_KEYS:
            v.fail(f"unknown top-level key `{k}`, expected one of {', '.join(TOP_KEYS)}", doc.key_line(k))
    header = validate_header(doc, source=source, stem=stem, internal_domains=internal_domains)
    rules = doc.get("rules")
    if not isinstance(rules, LList):
        v.fail("a policy needs a `rules:` list", doc.key_line("rules") if "rules" in doc else doc.line)
    if not rules:
        v.fail("`rules` is empty (empty means no: a policy with no rules is refused)", rules.line)
    if len(rules) > limits.max_rules:
        v.fail(f"{len(rules)} rules exceed limit `max_rules` ({limits.max_rules})", rules.line)
    ctx = OpContext(header.internal_domains, limits)
    specs = tuple(validate_rule(r, source=source, ctx=ctx, index=i) for i, r in enumerate(rules))
    rv = None
    if "re_validation" in doc:
        rv = re_validation(v, doc["re_validation"], doc.key_line("re_validation"))
    return Part(header, specs, validate_boundaries(doc, source=source), rv, source)


def load_policy_text(
    text: str,
    *,
    source: str = "<string>",
    internal_domains: tuple[str, ...] | list[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> PolicySet:
    """Load one policy from YAML text.

    Raises:
        PolicyError: any parse, validation or compile defect, naming `source`, rule id and line.
    """
    stem = Path(source).stem if source != "<string>" else "policy"
    part = _part(
        text, source=source, stem=stem, internal_domains=_norm_domains(internal_domains), limits=limits
    )
    return compile_policy([part])


def load_policy(
    path: str | Path, *, internal_domains: tuple[str, ...] | list[str] = (), limits: Limits = DEFAULT_LIMITS
) -> PolicySet:
    """Load a policy file, or every `*.yaml`/`*.yml` file of a directory as one policy set.

    In a directory, `*.cases.yaml` files (CASES test tables) are skipped.

    Raises:
        PolicyError: unreadable path, an empty directory, or any defect in any file.
    """
    p = Path(path)
    doms = _norm_domains(internal_domains)
    try:  # a path this process may not look into: Path.is_dir and glob raise PermissionError
        files = sorted(f for f in [*p.glob("*.yaml"), *p.glob("*.yml")] if not f.name.endswith(CASES_SUFFIX)) \
            if p.is_dir() else None
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", file=str(p)) from exc
    if files is not None:
        if not files:
            raise PolicyError("directory holds no *.yaml policy files (empty means no)", file=str(p))
        total = 0
        parts = []
        for f in files:
            text = _read(f, limits)
            total += len(text)
            if total > limits.max_policy_bytes:
                raise PolicyError(
                    f"policy set exceeds limit `max_policy_bytes` ({limits.max_policy_bytes})", file=str(f)
                )
            parts.append(_part(text, source=f.name, stem=f.stem, internal_domains=doms, limits=limits))
        if sum(len(x.rules) for x in parts) > limits.max_rules:
            raise PolicyError(f"policy set exceeds limit `max_rules` ({limits.max_rules})", file=str(p))
        return compile_policy(parts, set_id=p.resolve().name)
    text = _read(p, limits)
    return compile_policy([_part(text, source=p.name, stem=p.stem, internal_domains=doms, limits=limits)])


def _read(p: Path, limits: Limits) -> str:
    try:
        size = p.stat().st_size
        if size > limits.max_policy_bytes:
            raise PolicyError(
                f"policy is {size} bytes, exceeds limit `max_policy_bytes` ({limits.max_policy_bytes})",
                file=p.name,
            )
        return p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy: {exc.strerror or exc}", file=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy is not UTF-8: {exc}", file=p.name) from exc


def load_builtin(
    name: str = "default",
    *,
    internal_domains: tuple[str, ...] | list[str] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> PolicySet:
    """Load a built-in policy pack (`aarmor/policy/packs/<name>.yaml`).

    Raises:
        PolicyError: unknown pack name.
    """
    if name not in BUILTIN_PACKS:
        raise PolicyError(
            f"unknown built-in policy pack `{name}`, expected one of {', '.join(BUILTIN_PACKS)}"
        )
    text = resources.files("aarmor.policy.packs").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return load_policy_text(
        text, source=f"builtin:{name}.yaml", internal_domains=internal_domains, limits=limits
    )
