"""The content-hash cache of encoder vectors: a SQLite file of the workspace, and encoding through it.

Example:
    >>> from semassoc.text.encoder import HashingEncoder
    >>> vectors, stats = encode_with_cache(HashingEncoder(8), ["a mug", "a mug"], ["h1", "h1"], None)
    >>> vectors.shape, stats.encoded, stats.cached
    ((2, 8), 1, 1)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semassoc.errors import StoreUnavailable
from semassoc.text.encoder import Encoder

#: progress(n): ``n`` more texts have their vector.
ProgressCallback = Callable[[int], None]


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
