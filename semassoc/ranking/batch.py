"""Batch jobs: related products for many products, recommendations for many users, written to Parquet, JSON lines
or CSV. Resumable: work is cut into chunks, each written atomically to ``OUT.parts/``; a rerun after Ctrl-C or
``kill -9`` skips the chunks on disk and only then assembles ``OUT``, so no row is missing or written twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semassoc.errors import InvalidInput, NotFound
from semassoc.faults import fault_point
from semassoc.io import atomic_output, atomic_write_json
from semassoc.ranking.engine import RelatedEngine
from semassoc.ranking.fusion import FusionWeights
from semassoc.results import ScoredItem
from semassoc.store.base import ProductFilter

#: progress(done, total) in queries (products or users).
BatchProgress = Callable[[int, int], None]
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def _schema() -> Any:
    """Columns of every batch output (pyarrow is imported only when a batch runs)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("query", pa.string()),
            ("path", pa.string()),
            ("rank", pa.int32()),
            ("product_id", pa.string()),
            ("title", pa.string()),
            ("score", pa.float64()),
            ("explanation", pa.string()),
            ("signals", pa.string()),  # JSON object: per-signal scores
        ]
    )


@dataclass
class BatchReport:
    """What a batch job did."""

    out: str
    queries: int
    rows: int
    chunks: int
    resumed_chunks: int
    seconds: float

    @property
    def per_second(self) -> float:
        """Queries answered per second in this run (resumed chunks excluded)."""
        done = self.queries * (self.chunks - self.resumed_chunks) / max(self.chunks, 1)
        return done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_second": round(self.per_second, 1)}


def read_ids(path: str | Path) -> list[str]:
    """Ids from a file: one per line, or the first column of a CSV (a header named ``*id`` is skipped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the id list: {exc.strerror or exc}") from None
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(
            f"{path}: row {line}: not valid UTF-8 text (byte 0x{data[exc.start]:02x}); an id list is a text file, "
            "one id per line"
        ) from None
    ids = [line.split(",")[0].strip().strip('"') for line in lines]
    if ids and ids[0].lower().replace(" ", "_").endswith("id"):
        ids = ids[1:]
    ids = list(dict.fromkeys(i for i in ids if i))
    if not ids:
        raise InvalidInput(f"{path}: no ids in the file")
    return ids


def cold_products(engine: RelatedEngine, max_baskets: int) -> list[str]:
    """Catalog products seen in fewer than ``max_baskets`` baskets (0 = never bought)."""
    return [p for p in all_products(engine) if engine.basket_count(p) < max_baskets]


def all_products(engine: RelatedEngine) -> list[str]:
    """Every catalog product, sorted."""
    if not engine.has_catalog:
        raise NotFound(f"no catalog indexed in {engine.ws.path}")
    return sorted(p["product_id"] for p in engine.ws.store.iter_payloads(["product_id"]))


def _rows(query: str, path: str, items: Sequence[ScoredItem]) -> list[dict[str, Any]]:
    return [
        {
            "query": query,
            "path": path,
            "rank": rank,
            "product_id": item.product_id,
            "title": item.title,
            "score": float(item.score),
            "explanation": item.explanation,
            "signals": json.dumps({k: round(v, 6) for k, v in item.signals.items()}, sort_keys=True),
        }
        for rank, item in enumerate(items, start=1)
    ]


def _run(
    out: str | Path,
    ids: Sequence[str],
    job: dict[str, Any],
    answer: Callable[[list[str]], list[dict[str, Any]]],
    chunk_size: int,
    progress: BatchProgress | None,
) -> BatchReport:
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{out}: unsupported output format; use {', '.join(FORMATS)}")
    if chunk_size < 1:
        raise InvalidInput("chunk size must be >= 1")
    ids = list(dict.fromkeys(ids))
    parts = out.with_name(out.name + ".parts")
    job = {**job, "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest(), "chunk_size": chunk_size}
    _claim(parts, job)
    chunks = [ids[i : i + chunk_size] for i in range(0, len(ids), chunk_size)]
    resumed = 0
    done = 0
    for number, chunk in enumerate(chunks):
        part = parts / f"part-{number:06d}.parquet"
        if part.is_file():
            resumed += 1
        else:
            table = pa.Table.from_pylist(answer(chunk), schema=_schema())
            with atomic_output(part) as tmp:  # a chunk is on disk whole or not at all
                pq.write_table(table, tmp)
            fault_point("batch.chunk")
        done += len(chunk)
        if progress is not None:
            progress(done, len(ids))
    rows = _assemble(parts, len(chunks), out, fmt)
    shutil.rmtree(parts)
    return BatchReport(str(out), len(ids), rows, len(chunks), resumed, time.perf_counter() - started)


def _claim(parts: Path, job: dict[str, Any]) -> None:
    """Start a job directory, or resume the same job; a different unfinished job there is refused."""
    spec = parts / "job.json"
    if spec.is_file():
        try:
            before = json.loads(spec.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            before = None
        if not isinstance(before, dict):
            raise InvalidInput(f"{spec}: damaged job file; delete {parts} to start the job again")
        same_arguments = {k: v for k, v in before.items() if k != "workspace"} == {
            k: v for k, v in job.items() if k != "workspace"
        }
        if same_arguments and before.get("workspace") != job.get("workspace"):
            raise InvalidInput(
                f"{parts} holds an unfinished batch job started on another workspace, or before the workspace "
                f"changed ({_describe(before.get('workspace'))}; now {_describe(job.get('workspace'))}); its rows "
                f"would not match: delete {parts} to start again"
            )
        if before != job:
            raise InvalidInput(
                f"{parts} holds an unfinished batch job with other arguments; rerun it with the same arguments "
                f"to finish it, or delete {parts}"
            )
        return
    atomic_write_json(spec, job, sort_keys=True)


def workspace_fingerprint(engine: RelatedEngine) -> dict[str, Any]:
    """What a batch job's rows depend on: which workspace, and which committed state of it. A resumed job whose
    workspace differs is refused rather than mixing rows of two states into one output."""
    ws = engine.ws
    behaviour = ws.behaviour_dir / "manifest.json"
    try:
        stats = json.loads(behaviour.read_text(encoding="utf-8")) if behaviour.is_file() else {}
    except (OSError, ValueError):
        stats = {}
    return {
        "path": str(Path(ws.path).resolve()),
        "created": ws.manifest.created,
        "updated": ws.manifest.updated,
        "products": ws.manifest.products,
        "encoder": ws.manifest.encoder_id,
        "generation": ws.manifest.store.generation,
        "behaviour": stats.get("last_update"),
    }


def _describe(fingerprint: Any) -> str:
    if not isinstance(fingerprint, dict):
        return "unknown workspace"
    return f"{fingerprint.get('path')} as of {fingerprint.get('updated')}"


def _assemble(parts: Path, n_chunks: int, out: Path, fmt: str) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    tables = [pq.read_table(parts / f"part-{i:06d}.parquet") for i in range(n_chunks)]
    table = pa.concat_tables(tables) if tables else _schema().empty_table()
    with atomic_output(out) as tmp:
        if fmt == "parquet":
            pq.write_table(table, tmp)
        elif fmt == "csv":
            pacsv.write_csv(table, tmp)
        else:
            with tmp.open("w", encoding="utf-8") as handle:
                for row in table.to_pylist():
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return table.num_rows


def batch_related(
    engine: RelatedEngine,
    product_ids: Sequence[str],
    out: str | Path,
    *,
    mode: str = "auto",
    k: int = 10,
    filter: ProductFilter | None = None,
    collapse: str | None = None,
    weights: FusionWeights | None = None,
    chunk_size: int = 256,
    progress: BatchProgress | None = None,
    ranker: bool = True,
) -> BatchReport:
    """Related products for every product of ``product_ids`` (one batched store query per chunk); each row equals
    what ``related`` returns for that product (``ranker=False``: the hand-set fusion even with a fitted ranker)."""
    flt = filter or ProductFilter()
    job: dict[str, Any] = {
        "task": "related",
        "mode": mode,
        "k": k,
        "filter": repr(flt),
        "collapse": collapse,
        "weights": repr(weights),
        "workspace": workspace_fingerprint(engine),
    }
    if not ranker:
        job["ranker"] = False

    def answer(chunk: list[str]) -> list[dict[str, Any]]:
        lists = engine.related_batch(
            chunk, mode=mode, k=k, filter=flt, collapse=collapse, weights=weights, ranker=ranker
        )
        return [row for pid, items in zip(chunk, lists, strict=True) for row in _rows(pid, mode, items)]

    return _run(out, product_ids, job, answer, chunk_size, progress)


def batch_recommend(
    engine: RelatedEngine,
    user_ids: Sequence[str],
    out: str | Path,
    *,
    k: int = 10,
    allow_repeat: bool = False,
    filter: ProductFilter | None = None,
    profile: str = "vectors",
    chunk_size: int = 256,
    progress: BatchProgress | None = None,
    ranker: bool = True,
) -> BatchReport:
    """Recommendations for every user of ``user_ids``; each row equals what ``recommend`` returns for that user."""
    flt = filter or ProductFilter()
    job = {
        "task": "recommend",
        "k": k,
        "allow_repeat": allow_repeat,
        "filter": repr(flt),
        "profile": profile,
        "ranker": ranker,
        "workspace": workspace_fingerprint(engine),
    }

    def answer(chunk: list[str]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for user in chunk:
            result = engine.recommend(user, k=k, allow_repeat=allow_repeat, filter=flt, profile=profile, ranker=ranker)
            rows.extend(_rows(user, result.path, result.items))
        return rows

    return _run(out, user_ids, job, answer, chunk_size, progress)
