"""Strict loading: every defect kind fails with a message naming file, rule and line."""

from __future__ import annotations

import pytest

from aarmor.errors import PolicyError
from aarmor.limits import Limits
from aarmor.policy import load_policy, load_policy_text

HEAD = "policy: {id: p, version: '1'}\nrules:\n"


def err(text: str, **kw: object) -> PolicyError:
    with pytest.raises(PolicyError) as ei:
        load_policy_text(text, source="policy.yaml", **kw)  # type: ignore[arg-type]
    return ei.value


def test_unknown_operator_names_rule_file_line_and_choices() -> None:
    e = err(
        HEAD + "  - id: deny-shell\n    match:\n      tool: shell\n      parameters.cmd: {regexp: rm}\n"
        "    action: DENY\n"
    )
    assert str(e).startswith("rule `deny-shell` (policy.yaml:6): unknown operator `regexp`, expected one of")
    assert "matches" in str(e) and e.line == 6 and e.rule_id == "deny-shell" and e.file == "policy.yaml"


def test_unknown_rule_key_is_refused() -> None:
    e = err(HEAD + "  - id: r1\n    match: {tool: x}\n    action: DENY\n    prority: 5\n")
    assert "rule `r1` (policy.yaml:6): unknown rule key `prority`" in str(e)


def test_unknown_top_level_and_header_keys() -> None:
    assert "unknown top-level key `rulez`" in str(err("policy: {id: p}\nrulez: []\n"))
    assert "unknown key `defualt`" in str(err("policy: {id: p, defualt: ALLOW}\nrules: []\n"))


def test_invalid_regex_names_line() -> None:
    e = err(
        HEAD + "  - id: bad-rx\n    match:\n      parameters.q: {matches: '(unclosed'}\n    action: DENY\n"
    )
    assert "rule `bad-rx` (policy.yaml:5): invalid regular expression" in str(e)


def test_regex_longer_than_limit_names_the_limit() -> None:
    e = err(
        HEAD + "  - id: long-rx\n    match:\n      parameters.q: {regex: 'aaaaaaaaaaaa'}\n    action: DENY\n",
        limits=Limits(max_regex_length=5),
    )
    assert "exceeds limit `max_regex_length` (5)" in str(e) and e.line == 5


def test_gt_with_a_string_is_a_type_error() -> None:
    e = err(HEAD + "  - id: r\n    match:\n      parameters.amount: {gt: 'ten'}\n    action: DENY\n")
    assert "rule `r` (policy.yaml:5): `gt` expects a number, found string `ten`" in str(e)


def test_priority_must_be_int() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\n    priority: high\n")
    assert "rule `r` (policy.yaml:6): `priority` must be an integer" in str(e)


def test_unknown_decision() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: BLOCK\n")
    assert "unknown decision `BLOCK`, expected one of ALLOW, DENY, MODIFY, STEP_UP, DEFER" in str(e)
    assert e.line == 5


def test_duplicate_yaml_key_is_refused() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: ALLOW\n    action: DENY\n")
    assert "(policy.yaml:6): duplicate key `action` (first at line 5)" in str(e)


def test_duplicate_rule_ids() -> None:
    e = err(
        HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\n  - id: r\n    match: {tool: y}\n"
        "    action: DENY\n"
    )
    assert "rule `r` (policy.yaml:6): duplicate rule id (first defined at policy.yaml:3)" in str(e)


def test_empty_rule_list_means_no() -> None:
    assert "`rules` is empty (empty means no" in str(err("policy: {id: p}\nrules: []\n"))


def test_empty_allowlist_means_no() -> None:
    e = err(
        HEAD
        + "  - id: r\n    match: {tool: email}\n    constraints: {domain_allowlist: []}\n    action: DENY\n"
    )
    assert "rule `r` (policy.yaml:5)" in str(e) and "empty list (empty means no" in str(e)


def test_rule_without_conditions_is_refused() -> None:
    e = err(HEAD + "  - id: r\n    action: ALLOW\n")
    assert "rule has no conditions" in str(e)


def test_forbidden_must_deny() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: ALLOW\n    classification: forbidden\n")
    assert "classification `forbidden` requires decision DENY, found ALLOW" in str(e)


def test_modify_without_modifications() -> None:
    assert "a MODIFY rule needs `modifications`" in str(
        err(HEAD + "  - id: r\n    match: {tool: x}\n    action: MODIFY\n")
    )


def test_redact_output_labels_are_checked_at_load() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: MODIFY\n"
            "    modifications: {redact_output: [PII, emails]}\n")
    assert "rule `r` (policy.yaml:6)" in str(e) and "unknown redact_output label `emails`" in str(e)
    ok = load_policy_text(HEAD + "  - id: r\n    match: {tool: x}\n    action: MODIFY\n"
                          "    modifications: {redact_output: [PII, api_key]}\n", source="policy.yaml")
    assert ok.rules[0].spec.modifications["redact_output"] == ("PII", "api_key")


def test_both_spellings_of_one_key() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\n    decision: DENY\n")
    assert "`action` and `decision` both given" in str(e)


def test_cel_syntax_error_names_line() -> None:
    e = err(HEAD + "  - id: cel-bad\n    match: {tool: x}\n    when: 'action.tool == '\n    action: DENY\n")
    assert "rule `cel-bad` (policy.yaml:5): invalid CEL in `when`" in str(e)


def test_cel_longer_than_limit() -> None:
    e = err(
        HEAD + "  - id: r\n    match: {tool: x}\n    when: 'true || true'\n    action: DENY\n",
        limits=Limits(max_cel_length=4),
    )
    assert "exceeds limit `max_cel_length` (4)" in str(e)


def test_policy_bytes_limit() -> None:
    e = err(HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\n", limits=Limits(max_policy_bytes=10))
    assert "exceeds limit `max_policy_bytes` (10)" in str(e)


def test_rules_count_limit() -> None:
    e = err(
        HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\n  - id: s\n    match: {tool: y}\n"
        "    action: DENY\n",
        limits=Limits(max_rules=1),
    )
    assert "exceed limit `max_rules` (1)" in str(e)


def test_unknown_field_path() -> None:
    e = err(HEAD + "  - id: r\n    match:\n      environment.flag: true\n    action: DENY\n")
    assert "rule `r` (policy.yaml:5): unknown field `environment.flag`" in str(e)


def test_unknown_match_key_points_to_parameters() -> None:
    e = err(HEAD + "  - id: r\n    match:\n      tool: email\n      to: {external: true}\n    action: DENY\n")
    assert "unknown match key `to`" in str(e) and "parameter names go under `parameters:`" in str(e)


def test_yaml_syntax_error_has_line() -> None:
    e = err("policy: {id: p\nrules: [\n")
    assert e.file == "policy.yaml" and e.line is not None and "invalid YAML" in str(e)


def test_bad_intent_boundary_level() -> None:
    e = err(
        HEAD + "  - id: r\n    match: {tool: x}\n    action: DENY\nintent_boundaries:\n  prep:\n"
        "    max_data_classification: SECRETISH\n"
    )
    assert "`max_data_classification` expects one of PUBLIC" in str(e) and e.line == 8


def test_directory_duplicate_ids_name_both_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(
        "policy: {id: a}\nrules:\n  - id: r\n    match: {tool: x}\n    action: DENY\n"
    )
    (tmp_path / "b.yaml").write_text(
        "policy: {id: b}\nrules:\n  - id: r\n    match: {tool: y}\n    action: DENY\n"
    )
    with pytest.raises(PolicyError) as ei:
        load_policy(tmp_path)
    assert "rule `r` (b.yaml:3): duplicate rule id (first defined at a.yaml:3)" in str(ei.value)


def test_empty_directory_means_no(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PolicyError, match=r"no \*\.yaml policy files"):
        load_policy(tmp_path)


def test_directory_skips_cases_tables_beside_policies(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A CASES table is not a policy: loaded as one it would fail (`cases` is no top-level key) or, worse,
    # change the set's hash. It is skipped; a directory holding only CASES tables still holds no policy.
    rule = "policy: {id: a, version: '1'}\nrules:\n  - id: r\n    match: {tool: x}\n    action: DENY\n"
    (tmp_path / "a.yaml").write_text(rule)
    alone = load_policy(tmp_path)
    (tmp_path / "a.cases.yaml").write_text(
        "cases:\n  - name: x denied\n    action: {tool: x}\n    expect: {result: DENY, rule_id: r}\n"
    )
    both = load_policy(tmp_path)
    assert [r.id for r in both.rules] == ["r"] and both.version == alone.version == "1"
    assert both.hash == alone.hash
    (tmp_path / "a.yaml").unlink()
    with pytest.raises(PolicyError, match=r"no \*\.yaml policy files"):
        load_policy(tmp_path)
