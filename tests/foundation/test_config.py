"""Configuration: defaults, precedence, strict schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from aarmor.config import RedactionConfig, load_config
from aarmor.errors import ConfigError


def test_embedded_defaults_live_under_aarmor_home(_isolated_home: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.home == _isolated_home
    assert cfg.store == f"sqlite:///{_isolated_home / 'aarmor.db'}"
    assert cfg.keys == _isolated_home / "keys"
    assert cfg.policy == "builtin:agent-default"
    assert cfg.identity_mode == "enforce" and cfg.source is None


def test_local_file_is_found_and_paths_resolve_against_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aarmor.yaml").write_text("policy: policies/main.yaml\nkeys: k\ninternal_domains: [corp.example]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.policy == str(tmp_path / "policies/main.yaml")
    assert cfg.keys == tmp_path / "k"
    assert cfg.internal_domains == ("corp.example",)


def test_keyword_overrides_win(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("store: sqlite:///from-file.db\n")
    cfg = load_config(f, store="memory://", redaction=RedactionConfig(mode="digest"))
    assert cfg.store == "memory://" and cfg.redaction.mode == "digest"


@pytest.mark.parametrize("text,needle", [
    ("unknown_top: 1\n", "`unknown_top`: unknown key"),
    ("deferrals: {max_timeout: 7200}\n", "`deferrals.max_timeout`"),
    ("identity: {mode: open}\n", "`identity.mode`"),
    ("classification: {unclassified: TOP_SECRET}\n", "TOP_SECRET"),
    ("tools: {\"\u0435mail\": {returns: [PII]}}\n", "U+0435"),
    ("- a list\n", "must be a mapping"),
    ("key: [unclosed\n", "not valid YAML"),
    ("server: {outcome_timeout: 0}\n", "`server.outcome_timeout`"),
])
def test_bad_configuration_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert needle in str(info.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_the_server_outcome_timeout_is_read(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server: {outcome_timeout: 660}\n")
    assert load_config(f).server.outcome_timeout == 660
    assert load_config(tmp_path / "c.yaml", store="memory://").server.outcome_timeout == 660
