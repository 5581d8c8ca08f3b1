import subprocess
import sys

import numpy as np
import pytest

from semassoc.errors import InvalidInput
from semassoc.text.cache import VectorCache, encode_with_cache
from semassoc.text.encoder import (
    DEFAULT_MODEL,
    HashingEncoder,
    LazyEncoder,
    load_encoder,
    read_max_seq_length,
    resolve_model,
)
from semassoc.text.prompts import text_hash


def test_hashing_encoder_is_deterministic_normalised_and_lexical():
    enc = HashingEncoder(128)
    a = enc.encode(["red enamel mug", "red enamel mug", "lavender candle", ""])
    assert a.dtype == np.float32 and a.shape == (4, 128)
    np.testing.assert_allclose(np.linalg.norm(a[:3], axis=1), 1.0, rtol=1e-6)
    assert np.array_equal(a[0], a[1]) and not a[3].any()
    mug, cup, candle = enc.encode(["red enamel mug", "blue enamel mug", "lavender candle"])
    assert mug @ cup > mug @ candle


def test_cache_avoids_reencoding_and_survives_reopen(tmp_path):
    enc = HashingEncoder(32)
    texts = ["a mug", "a cup", "a mug"]
    hashes = [text_hash(t) for t in texts]
    cache = VectorCache(tmp_path / "cache.sqlite")
    first, stats = encode_with_cache(enc, texts, hashes, cache)
    assert (stats.requested, stats.encoded, stats.cached) == (3, 2, 1)  # the duplicate is encoded once, then reused
    cache.close()
    cache = VectorCache(tmp_path / "cache.sqlite")
    again, stats = encode_with_cache(enc, texts, hashes, cache)
    assert (stats.encoded, stats.cached) == (0, 3)
    np.testing.assert_array_equal(first, again)
    other, stats = encode_with_cache(HashingEncoder(16), texts, hashes, cache)
    assert stats.encoded == 2 and other.shape == (3, 16)  # the cache is per encoder
    cache.close()


def test_lazy_encoder_is_not_loaded_when_everything_is_cached(tmp_path):
    cache = VectorCache(tmp_path / "cache.sqlite")
    texts = ["x y", "z"]
    hashes = [text_hash(t) for t in texts]
    encode_with_cache(HashingEncoder(8), texts, hashes, cache)
    lazy = LazyEncoder("hashing:8")
    vectors, stats = encode_with_cache(lazy, texts, hashes, cache)
    assert stats.encoded == 0 and not lazy.is_loaded and vectors.shape == (2, 8)
    progress = []
    encode_with_cache(lazy, ["new text", "z"], [text_hash("new text"), hashes[1]], cache, progress=progress.append)
    assert lazy.is_loaded and sum(progress) == 2


def test_model_resolution():
    assert resolve_model(None)[0] == DEFAULT_MODEL
    assert resolve_model("hashing:12") == ("hashing:12", "hashing:12")
    assert resolve_model("some-org/some-model") == ("some-org/some-model", "some-org/some-model")
    assert read_max_seq_length(None) == 256  # read from the bundled model's config, no model load
    with pytest.raises(InvalidInput, match="hashing:DIM"):
        load_encoder("hashing:big")


def test_local_model_directory_id_carries_a_weights_fingerprint(tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights-1")
    first = resolve_model(str(model))[0]
    (model / "model.safetensors").write_bytes(b"weights-2")
    assert first.startswith("my-model@") and resolve_model(str(model))[0] != first


def test_importing_the_cli_loads_no_heavy_module():
    heavy = ("torch", "sentence_transformers", "scipy", "pyarrow", "qdrant_client", "matplotlib", "fim")
    code = f"import sys, semassoc.cli.app, semassoc.api; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
