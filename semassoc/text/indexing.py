"""The index pipeline: render each product's text, find what changed, encode what is new (through the vector
cache) and write the store, in bounded chunks.

:func:`semassoc.api.index_catalog` reads the catalog and opens the workspace; :func:`index_products` does the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semassoc.catalog import Product
from semassoc.errors import RowProblem
from semassoc.faults import fault_point
from semassoc.text.cache import VectorCache, encode_with_cache
from semassoc.text.encoder import Encoder, LazyEncoder, read_max_seq_length
from semassoc.text.prompts import PromptSet, text_hash
from semassoc.workspace import Workspace

#: progress(done, total): ``done`` products of ``total`` to process are finished.
IndexProgress = Callable[[int, int], None]

_CHUNK = 1024  # products encoded and written per step: bounds memory, keeps the progress bar moving


@dataclass
class IndexReport:
    """What ``index`` did.

    ``added``/``updated``/``unchanged`` count products of the catalog file; ``removed`` counts products dropped by
    ``replace``; ``reencoded`` counts products not in the file whose text changed because the template or the
    encoder changed. ``encoded`` is how many distinct texts went through the encoder; ``from_cache`` how many
    products got a vector without it (from the vector cache, or from another product with the same text):
    ``encoded + from_cache`` is the number of products written with a new vector.
    """

    workspace: str
    catalog: str
    store: str
    encoder_id: str
    rows_read: int
    products_in_file: int
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    reencoded: int = 0
    encoded: int = 0
    from_cache: int = 0
    products_total: int = 0
    optimized: bool = False
    skipped: list[RowProblem] = field(default_factory=list)
    seconds: float = 0.0
    encode_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "skipped"}
        data["skipped"] = [str(p) for p in self.skipped]
        return data


@dataclass
class _Work:
    product: Product
    text: str
    hash: str
    payload: dict[str, Any]


def index_products(
    ws: Workspace,
    products: list[Product],
    prompt_set: PromptSet,
    prompts_arg: str | Path | None,
    model: str | None,
    encoder: Encoder | None,
    device: str | None,
    replace: bool,
    rebuild: bool,
    batch_size: int,
    progress: IndexProgress | None,
) -> IndexReport:
    """Index ``products`` into the workspace's store (a new generation of the embedded store, committed by the
    caller's ``ws.save()``). ``rebuild`` starts from an empty store and takes every vector it can from the cache."""
    manifest = ws.manifest
    if encoder is None:
        encoder = LazyEncoder(model or manifest.encoder_model, device=device)
        model_arg = model or manifest.encoder_model
    else:
        model_arg = encoder.id
    encoder_changed = manifest.encoder_id is not None and manifest.encoder_id != encoder.id
    if rebuild:
        store = ws.stage_store(fresh=True)
        existing: dict[str, dict[str, Any]] = {}
    else:
        # Embedded: the writes go to a copy of the committed store generation (readers keep using the committed
        # one), committed by the manifest write at the end; a kill before that leaves the committed state whole.
        store = ws.stage_store(fresh=False)
        if manifest.store.url is None:
            from semassoc.check import verify_store

            verify_store(ws)  # on the copy: a damaged store is repaired by --rebuild, not reported "unchanged"
        existing = {p["product_id"]: p for p in store.iter_payloads()}
        if encoder_changed:
            store.drop()  # vectors of two encoders never share a collection: rebuild it from the stored payloads

    if not encoder_changed and manifest.max_seq_length is not None:
        max_seq_length: int | None = manifest.max_seq_length
    else:
        max_seq_length = _max_seq_length(encoder, model_arg)

    report = IndexReport(
        workspace=str(ws.path),
        catalog="",
        store=store.location,
        encoder_id=encoder.id,
        rows_read=0,
        products_in_file=len(products),
    )
    to_encode: list[_Work] = []
    payload_only: list[_Work] = []
    in_file = set()
    for product in products:
        in_file.add(product.product_id)
        work = _render(product, prompt_set, max_seq_length)
        old = existing.get(product.product_id)
        if old is None:
            report.added += 1
            to_encode.append(work)
        elif encoder_changed or old.get("_text_hash") != work.hash:
            report.updated += 1
            to_encode.append(work)
        elif old != work.payload:
            report.updated += 1
            payload_only.append(work)
        else:
            report.unchanged += 1
    removed = [pid for pid in existing if pid not in in_file] if replace else []
    report.removed = len(removed)
    removed_set = set(removed)
    for pid, payload in existing.items():
        if pid in in_file or pid in removed_set:
            continue
        work = _render(Product.from_payload(payload), prompt_set, max_seq_length)
        if encoder_changed or payload.get("_text_hash") != work.hash:
            report.reencoded += 1
            to_encode.append(work)

    total = len(to_encode) + len(payload_only)
    done = 0
    cache = VectorCache(ws.path / "cache.sqlite")
    encode_started = time.perf_counter()
    known = cache.get(encoder.id, [w.hash for w in to_encode])  # one look-up, before the writer thread starts
    counts = Counter(w.hash for w in to_encode)

    def write_store(chunk: list[_Work], vectors: np.ndarray) -> None:
        store.upsert([w.product.product_id for w in chunk], vectors, [w.payload for w in chunk])

    def write_cache(fresh: list[str], vectors: np.ndarray) -> None:
        if fresh:
            cache.put(encoder.id, fresh, vectors)

    # On a GPU the store and the cache are written behind the encoder, each by its own thread: the writes of one
    # chunk overlap the encoding of the next (there they would otherwise take most of the time: 0.25x -> 0.55x of
    # bare encode on an H200). On a CPU the threads only take cores from torch and add ~0.15 GB of peak memory at
    # 100k products (measured), so the writes run inline there.
    try:
        with ThreadPoolExecutor(max_workers=2) as writers:
            pending: list[Any] = []
            for start in range(0, len(to_encode), _CHUNK):
                chunk = to_encode[start : start + _CHUNK]
                fresh = [h for h in dict.fromkeys(w.hash for w in chunk) if h not in known]
                vectors, stats = encode_with_cache(
                    encoder,
                    [w.text for w in chunk],
                    [w.hash for w in chunk],
                    None,
                    batch_size=batch_size,
                    chunk_size=_CHUNK,
                    known=known,
                )
                fresh_vectors = np.stack([known[h] for h in fresh]) if fresh else vectors[:0]
                for h in fresh:  # keep a new vector only while a later product has the same text
                    if counts[h] == 1:
                        del known[h]
                report.encoded += stats.encoded
                report.from_cache += stats.cached
                for future in pending:
                    future.result()  # one chunk in flight at most: bounded memory, errors surface here
                if _on_gpu(encoder):
                    pending = [
                        writers.submit(write_store, chunk, vectors),
                        writers.submit(write_cache, fresh, fresh_vectors),
                    ]
                else:
                    pending = []
                    write_store(chunk, vectors)
                    write_cache(fresh, fresh_vectors)
                done += len(chunk)
                fault_point("index.chunk")
                if progress is not None:
                    progress(done, total)
            for future in pending:
                future.result()
    finally:
        cache.close()
    report.encode_seconds = time.perf_counter() - encode_started
    if payload_only:
        store.set_payloads([w.product.product_id for w in payload_only], [w.payload for w in payload_only])
        if progress is not None:
            progress(total, total)
    store.delete(removed)

    manifest.encoder_id = encoder.id
    manifest.encoder_model = model_arg
    manifest.max_seq_length = max_seq_length
    manifest.prompts_digest = prompt_set.digest
    manifest.prompts_dir = str(prompt_set.directory) if prompts_arg is not None else None
    if manifest.dim is None or encoder_changed or rebuild:
        manifest.dim = store.dim()
    report.products_total = store.count()
    manifest.products = report.products_total
    return report


def _on_gpu(encoder: Encoder) -> bool:
    """Whether the encoder runs on an accelerator (a lazy one counts once loaded)."""
    if isinstance(encoder, LazyEncoder):
        if not encoder.is_loaded:
            return False
        encoder = encoder.loaded
    return str(getattr(encoder, "device", "cpu")).startswith(("cuda", "mps"))


def _max_seq_length(encoder: Encoder, model_arg: str | None) -> int | None:
    if isinstance(encoder, LazyEncoder):
        known = read_max_seq_length(model_arg)  # from the model's config file: no model load
        if known is not None:
            return known
    return int(encoder.max_seq_length)


def _render(product: Product, prompt_set: PromptSet, max_seq_length: int | None) -> _Work:
    text = prompt_set.render_document(product.fields_for_prompt(), max_seq_length)
    digest = text_hash(text)
    payload = product.to_payload()
    payload["_text_hash"] = digest
    return _Work(product, text, digest, payload)
