"""Pair statistics, user histories and association rules computed on Apache Spark, with the local engine's answers.

The heavy steps run in Spark: grouping rows into baskets, generating every product pair of every basket and summing
them (this is where Spark spills to disk instead of needing the whole basket matrix in memory), counting products,
and mining frequent itemsets (Spark ML's FP-growth). What comes back to the driver is the result, and the big parts
of it come back in pieces: Spark sorts the symmetric pair list by (row, column) and the basket log in its canonical
order (time, size, content hash), and the driver reads them back one batch at a time and appends each batch to the
workspace's ``.npy`` files (``PairFiles``); it holds one batch and the per-product arrays, never the pair matrix or
the log whole. ``BehaviourStats.build`` then adds the rest (products, neighbour lists read block by block,
manifest), so the workspace holds exactly the files the local engine writes and every query command works
unchanged. ``behavior update`` merges the new counts with the stored ones in memory, as locally.

- Pair counts are integers summed exactly, so they equal the local engine's bit for bit. Weighted dot products are
  sums of floats in another order: equal to about 1e-15 relative.
- Rules: Spark's FP-growth gives the frequent itemsets with their counts. Its ``minSupport`` is a fraction with
  ``ceil(minSupport * n)`` as the count; it is given ``(count - 0.5) / n`` so that rounding cannot move the threshold,
  and the itemsets are then filtered on the exact count (``ceil(s * n)``, as arules). Rules with a one-item
  consequent are generated from the itemsets in Spark SQL (the lhs count is a join, never a division), and every
  metric is computed from the integer counts with the local formulas, so rules are identical to ``mine_rules``'.
  Spark ML's own ``associationRules`` is not used: it has no empty-lhs rules (arules' ``minlen=1``) and carries no
  lhs count.

PySpark is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.behaviour.baskets import MISSING, MIX, content_hash, item_dtype
from semassoc.behaviour.events import LoadOptions
from semassoc.behaviour.npy_stream import NpyWriter
from semassoc.behaviour.pair_state import PairFiles, PairState, _narrow_unsigned
from semassoc.behaviour.rules import _CONFIDENCE_SLACK, Rule, _min_count, check_rule_options, rules_from_counts
from semassoc.behaviour.spark_events import SparkEvents, SparkSettings, load_events_spark, spark_session
from semassoc.behaviour.stats import BehaviourStats, BuildOptions
from semassoc.behaviour.users import UserHistories, _aggregate, _concat, _save, _write
from semassoc.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from typing_extensions import Unpack

__all__ = [
    "SparkEvents",
    "SparkSettings",
    "build_histories_spark",
    "build_stats_spark",
    "load_events_spark",
    "mine_rules_and_count_spark",
    "mine_rules_spark",
    "spark_session",
    "update_histories_spark",
    "update_stats_spark",
]

Progress = Callable[[str, int, int], None]


def _union(parts: Sequence[SparkEvents]) -> DataFrame:
    """Rows of several loads as one frame (as ``Events.concat``: equal basket keys merge)."""
    if not parts:
        raise InvalidInput("no events to count")
    frame = parts[0].rows
    for part in parts[1:]:
        frame = frame.unionByName(part.rows, allowMissingColumns=True)
    return frame


def _collect(frame: DataFrame) -> pa.Table:
    """A result table on the driver. In local mode it goes through a Parquet scratch directory (written by Spark,
    read by pyarrow), so the JVM never holds the whole result; on a cluster through Arrow batches
    (``spark.driver.maxResultSize`` must allow it)."""
    import pyarrow.parquet as pq

    spark = frame.sparkSession
    if not str(spark.sparkContext.master or "").startswith("local"):
        return frame.toArrow()
    scratch = Path(tempfile.mkdtemp(prefix="semassoc-spark-"))
    try:
        frame.write.mode("overwrite").parquet(str(scratch / "part"))
        return pq.read_table(scratch / "part")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- pair statistics


#: Rows per Arrow batch when a sorted result is read back in pieces.
_BATCH_ROWS = 1_000_000


def _read_back(frame: DataFrame, directory: Path) -> tuple[int, Iterator[pa.RecordBatch]]:
    """A (sorted) result read back in order, in batches: (number of pieces, batches). In local mode Spark writes it
    as Parquet into ``directory`` (one file per partition, named by partition number, so a global sort comes back
    in order) and pyarrow reads the files one batch at a time; on a cluster it comes through Arrow as one table
    (``spark.driver.maxResultSize`` must allow it)."""
    import pyarrow.parquet as pq

    if not str(frame.sparkSession.sparkContext.master or "").startswith("local"):
        return 1, iter(frame.toArrow().to_batches(max_chunksize=_BATCH_ROWS))
    frame.write.mode("overwrite").parquet(str(directory))
    files = sorted(directory.glob("part-*.parquet"), key=lambda f: int(f.name.split("-")[1]))

    def batches() -> Iterator[pa.RecordBatch]:
        for file in files:
            yield from pq.ParquetFile(file).iter_batches(batch_size=_BATCH_ROWS)

    return len(files), batches()


@contextmanager
def _wrapping_arithmetic(spark: SparkSession) -> Iterator[None]:
    """64-bit integer arithmetic that wraps around, as numpy's (the content hash of the basket log): Spark's ANSI
    mode, which raises on overflow, is off while the queries using it are built and run, and restored after."""
    key = "spark.sql.ansi.enabled"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "false")
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _splitmix(value: str) -> str:
    """``content_hash``'s per-product mix (splitmix64) as a Spark SQL expression on 64-bit integers."""
    c1, c2, c3 = (int(np.uint64(c).astype(np.int64)) for c in MIX)
    z = f"(cast({value} as bigint) + ({c1}L))"
    z = f"(({z} ^ shiftrightunsigned({z}, 30)) * ({c2}L))"
    z = f"(({z} ^ shiftrightunsigned({z}, 27)) * ({c3}L))"
    return f"({z} ^ shiftrightunsigned({z}, 31))"


def _increasing(keys: Sequence[np.ndarray], strict: bool) -> bool:
    """Whether rows given by key columns (most significant first) are in increasing lexicographic order."""
    later = np.zeros(keys[0].shape[0] - 1, dtype=bool)
    equal = np.ones(keys[0].shape[0] - 1, dtype=bool)
    for key in keys:
        a, b = key[:-1], key[1:]
        later |= equal & (b > a)
        equal &= b == a
    return bool((later | (equal & (not strict))).all())


def _stream_pairs(pairs: DataFrame, size: int, weighted: bool, item_counts: np.ndarray, scratch: Path) -> int:
    """Write the symmetric pair CSR (``pairs_*.npy``) from the upper-triangle pair list, sorted by Spark and read
    back piece by piece; returns the number of pieces."""
    from pyspark.sql import functions as F

    width = max(size, 1)
    i, j = F.expr(f"cast(key div {width} as int)"), F.expr(f"cast(key % {width} as int)")
    values = [F.col("c"), *([F.col("ww")] if weighted else [])]
    both = F.array(F.struct(i.alias("row"), j.alias("col"), *values), F.struct(j.alias("row"), i.alias("col"), *values))
    symmetric = pairs.select(F.explode(both).alias("e")).select("e.*").orderBy("row", "col")
    row_lengths = np.zeros(size, dtype=np.int64)
    last = -1
    with tempfile.TemporaryDirectory(prefix="semassoc-spark-") as parquet, ExitStack() as files:
        indices = files.enter_context(NpyWriter(scratch / "pairs_indices.npy", _narrow_unsigned(max(size - 1, 0))))
        counts_dtype = _narrow_unsigned(int(item_counts.max(initial=0)))
        counts = files.enter_context(NpyWriter(scratch / "pairs_counts.npy", counts_dtype))
        wdot = files.enter_context(NpyWriter(scratch / "pairs_wdot.npy", np.float64)) if weighted else None
        pieces, batches = _read_back(symmetric, Path(parquet) / "pairs")
        for batch in batches:
            if batch.num_rows == 0:
                continue
            row = batch.column("row").to_numpy().astype(np.int64)
            col = batch.column("col").to_numpy().astype(np.int64)
            key = np.r_[last, row * width + col]
            if not _increasing([key], strict=True):
                raise RuntimeError("Spark returned the pair list out of order")
            last = int(key[-1])
            row_lengths += np.bincount(row, minlength=size)
            indices.write(col)
            counts.write(batch.column("c").to_numpy())
            if wdot is not None:
                wdot.write(batch.column("ww").to_numpy())
    np.save(scratch / "pairs_indptr.npy", np.r_[0, np.cumsum(row_lengths)].astype(np.int64))
    return pieces


def _stream_log(baskets: DataFrame, size: int, scratch: Path) -> None:
    """Write the basket log (``log_*.npy``) in canonical order (``BasketLog.canonical``: time, size, content hash):
    Spark sorts the baskets by these keys, the driver reads them back piece by piece, recomputes the hash with
    numpy and checks the order as it writes."""
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    spark = baskets.sparkSession
    big = np.iinfo(np.int64).max
    first_seen = np.full(size, big, dtype=np.int64)
    previous: list[np.ndarray] = []
    entries = 0
    with _wrapping_arithmetic(spark), tempfile.TemporaryDirectory(prefix="semassoc-spark-") as parquet:
        content = F.expr(f"aggregate(codes, 0L, (acc, x) -> acc + {_splitmix('x')})")
        ordered = (
            baskets.select(F.col("b.code").alias("codes"), "t")
            .withColumn("h", content)
            .orderBy(F.coalesce(F.col("t"), F.lit(int(MISSING))), F.size("codes"), F.expr("h ^ shiftleft(1L, 63)"))
            .select("codes", "t")
        )
        with ExitStack() as files:
            indptr = files.enter_context(NpyWriter(scratch / "log_indptr.npy", np.int64))
            items = files.enter_context(NpyWriter(scratch / "log_items.npy", item_dtype(size)))
            times = files.enter_context(NpyWriter(scratch / "log_time.npy", np.int64))
            indptr.write(np.zeros(1, dtype=np.int64))
            for batch in _read_back(ordered, Path(parquet) / "log")[1]:
                if batch.num_rows == 0:
                    continue
                codes = batch.column("codes")
                lengths = pc.list_value_length(codes).to_numpy(zero_copy_only=False).astype(np.int64)
                flat = pc.list_flatten(codes).to_numpy(zero_copy_only=False).astype(np.int64)
                time = pc.fill_null(batch.column("t"), int(MISSING)).to_numpy(zero_copy_only=False)
                time = time.astype(np.int64)
                local = np.r_[0, np.cumsum(lengths)]
                keys = [time, lengths, content_hash(flat, local)]
                joined = [np.r_[p[-1:], k] for p, k in zip(previous, keys, strict=True)] if previous else keys
                if not _increasing(joined, strict=False):
                    raise RuntimeError("Spark returned the basket log out of canonical order")
                previous = keys
                indptr.write(entries + local[1:])
                entries += int(local[-1])
                items.write(flat)
                times.write(time)
                per_entry = np.repeat(time, lengths)
                timed = per_entry != MISSING
                np.minimum.at(first_seen, flat[timed], per_entry[timed])
    first_seen[first_seen == big] = MISSING
    np.save(scratch / "log_first_seen.npy", first_seen)


def _stream(
    parts: Sequence[SparkEvents], weighted: bool, event_types: Sequence[str] | None, progress: Progress | None
) -> PairFiles:
    """Every pair count, product counts, baskets and the basket log, computed by Spark and written into the
    workspace's file format piece by piece (``PairFiles``): the driver holds one batch and the per-product arrays,
    never the pair matrix or the log whole."""
    import pyarrow as pa
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    rows = _union(parts)
    spark = rows.sparkSession
    if progress:
        progress("basket matrix", 1, 4)
    # Vocabulary: every product of the kept rows (also those of event types left out below), sorted as numpy does.
    vocab = _collect(rows.select("item").distinct()).column("item").to_numpy(zero_copy_only=False).astype(object)
    item_ids = np.sort(vocab, kind="stable")
    codes = spark.createDataFrame(
        pa.table(
            {
                "item": pa.array(item_ids.tolist(), pa.string()),
                "code": pa.array(np.arange(item_ids.shape[0], dtype=np.int32)),
            }
        )
    )
    selected = rows if event_types is None else rows.where(F.col("event_type").isin(list(event_types)))
    # One entry per (basket, product): its largest weight (a purchase outweighs views of the same product).
    entries = selected.join(F.broadcast(codes), "item").groupBy("basket", "code").agg(F.max("weight").alias("w"))
    baskets = entries.groupBy("basket").agg(F.array_sort(F.collect_list(F.struct("code", "w"))).alias("b"))
    if all(p.has_timestamp for p in parts):
        # The basket log's time: the first event of the basket, whatever its type (as BasketLog.from_matrix).
        baskets = baskets.join(rows.groupBy("basket").agg(F.min("ts").alias("t")), "basket", "left")
    else:
        baskets = baskets.withColumn("t", F.lit(None).cast("long"))
    baskets = baskets.persist(StorageLevel.MEMORY_AND_DISK)
    scratch = Path(tempfile.mkdtemp(prefix="semassoc-spark-"))
    try:
        n_baskets = baskets.count()
        if progress:
            progress("pair counts", 2, 4)
        per_item = (
            baskets.select(F.explode("b").alias("e"))
            .groupBy(F.col("e.code").alias("code"))
            .agg(F.count(F.lit(1)).alias("c"), F.sum(F.col("e.w") * F.col("e.w")).alias("w2"))
        )
        # Each pair (i < j) of each basket as one 64-bit key i * size + j: one explode, one hash aggregation.
        size = int(item_ids.shape[0])
        key = f"cast(b[k].code as bigint) * {size} + y.code"
        element = f"named_struct('key', {key}, 'ww', b[k].w * y.w)" if weighted else key
        pair_expr = (
            "explode(flatten(transform(sequence(0, size(b) - 2), k -> transform(slice(b, k + 2, size(b) - k - 1), "
            f"y -> {element}))))"
        )
        exploded = baskets.where(F.size("b") >= 2).select(F.expr(pair_expr).alias("p"))
        if weighted:
            pairs = exploded.groupBy(F.col("p.key").alias("key")).agg(
                F.count(F.lit(1)).alias("c"), F.sum("p.ww").alias("ww")
            )
        else:
            pairs = exploded.groupBy(F.col("p").alias("key")).agg(F.count(F.lit(1)).alias("c"))
        items_table = _collect(per_item)
        item_counts = np.zeros(size, dtype=np.int64)
        wnorm2 = np.zeros(size, dtype=np.float64)
        code = items_table.column("code").to_numpy().astype(np.int64)
        item_counts[code] = items_table.column("c").to_numpy()
        wnorm2[code] = items_table.column("w2").to_numpy()
        pieces = _stream_pairs(pairs, size, weighted, item_counts, scratch)
        _stream_log(baskets, size, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        baskets.unpersist()
    return PairFiles(scratch, item_ids, item_counts, int(n_baskets), wnorm2 if weighted else None, pieces)


def _state(
    parts: Sequence[SparkEvents], weighted: bool, event_types: Sequence[str] | None, progress: Progress | None
) -> PairState:
    """The local engine's ``PairState`` (every pair count, product counts, baskets), computed by Spark: what
    ``behavior update`` merges with the stored counts in memory."""
    return _stream(parts, weighted, event_types, progress).state()


def build_stats_spark(
    parts: Sequence[SparkEvents], directory: str | Path, **options: Unpack[BuildOptions]
) -> BehaviourStats:
    """``BehaviourStats.build`` with the counting done by Spark; writes the same files.

    Args:
        parts: loads from :func:`load_events_spark`.
        directory, options (min_count, top_k, weighted, event_types, progress, extra): as ``BehaviourStats.build``.

    Returns:
        The opened statistics.

    Example:
        >>> # spark = spark_session(SparkSettings("local[2]"))
        >>> # build_stats_spark(load_events_spark(spark, "s3a://lake/events/"), ".semassoc/behaviour")
    """
    return BehaviourStats.build(parts, directory, count=_stream, **options)


def update_stats_spark(
    directory: str | Path,
    parts: Sequence[SparkEvents],
    *,
    progress: Progress | None = None,
    extra: Callable[[Path], None] | None = None,
) -> BehaviourStats:
    """``BehaviourStats.update`` with the new events counted by Spark; the stored counts are read and added on the
    driver, so the result equals a rebuild on all the loads (same caveat: a basket spanning two loads counts twice).

    Raises:
        NotFound: nothing was built in ``directory``. InvalidInput: a load was already counted.
    """
    stats = BehaviourStats(directory)
    return stats.update(parts, progress=progress, extra=extra, count=_state)


# ----------------------------------------------------------------------------------------------- user histories


def _history_columns(parts: Sequence[SparkEvents]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    for part in parts:
        if not part.has_user:
            raise InvalidInput(f"{', '.join(part.sources)}: no user column, so no user histories")
    rows = _union(parts)
    last = F.max("ts") if all(p.has_timestamp for p in parts) else F.lit(None).cast("long")
    table = _collect(
        rows.where(F.col("user").isNotNull())
        .groupBy("user", "item")
        .agg(F.count(F.lit(1)).alias("count"), last.alias("last"))
    )
    users = table.column("user").to_numpy(zero_copy_only=False).astype(object)
    items = table.column("item").to_numpy(zero_copy_only=False).astype(object)
    counts = table.column("count").to_numpy().astype(np.int64)
    last_seen = pc.fill_null(table.column("last").cast("int64"), MISSING).to_numpy().astype(np.int64)
    return users, items, counts, last_seen


def build_histories_spark(parts: Sequence[SparkEvents], directory: str | Path) -> UserHistories:
    """``UserHistories.build`` with the per-(user, product) counts and latest times computed by Spark."""
    _write(Path(directory), _aggregate(_history_columns(parts)))
    return UserHistories(directory)


def spark_histories_writer(
    parts: Sequence[SparkEvents], existing: UserHistories | None = None
) -> Callable[[Path], None]:
    """Histories aggregated by Spark (plus ``existing``), saved by the returned function into the behaviour
    directory being written, so statistics and histories change together (see ``users.histories_writer``)."""
    new = _history_columns(parts)
    table = _aggregate(_concat([existing._columns(), new]) if existing is not None else new)
    return lambda directory: _save(directory, table)


def update_histories_spark(directory: str | Path, parts: Sequence[SparkEvents]) -> UserHistories:
    """``UserHistories.update`` with the new events aggregated by Spark; equals a build on all events."""
    current = UserHistories(directory)
    _write(Path(directory), _aggregate(_concat([current._columns(), _history_columns(parts)])))
    return UserHistories(directory)


# ------------------------------------------------------------------------------------------------------- rules


def mine_rules_spark(
    parts: Sequence[SparkEvents],
    min_support: float = 0.1,
    min_confidence: float = 0.8,
    min_len: int = 1,
    max_len: int = 10,
    *,
    partitions: int | None = None,
) -> list[Rule]:
    """``mine_rules`` on Spark: FP-growth itemsets from Spark ML, one-item-consequent rules with arules' semantics.

    Args:
        parts: loads from :func:`load_events_spark` (baskets with the same key merge).
        min_support, min_confidence, min_len, max_len: as :func:`semassoc.behaviour.rules.mine_rules`.
        partitions: FP-growth's ``numPartitions`` (default: Spark's input partitioning).

    Returns:
        The rules ``mine_rules`` returns on the same baskets, in the same order.
    """
    return mine_rules_and_count_spark(parts, min_support, min_confidence, min_len, max_len, partitions=partitions)[0]


def mine_rules_and_count_spark(
    parts: Sequence[SparkEvents],
    min_support: float = 0.1,
    min_confidence: float = 0.8,
    min_len: int = 1,
    max_len: int = 10,
    *,
    partitions: int | None = None,
) -> tuple[list[Rule], int]:
    """:func:`mine_rules_spark` and the number of baskets it mined (for reports)."""
    check_rule_options(min_support, min_confidence, min_len, max_len)
    from pyspark import StorageLevel
    from pyspark.ml.fpm import FPGrowth
    from pyspark.sql import functions as F

    baskets = _union(parts).groupBy("basket").agg(F.array_distinct(F.collect_list("item")).alias("items"))
    baskets = baskets.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n = baskets.count()
        if n == 0:
            return [], 0
        min_count = _min_count(min_support, n)
        growth = FPGrowth(itemsCol="items", minSupport=(min_count - 0.5) / n, minConfidence=1.0)
        if partitions is not None:
            growth = growth.setNumPartitions(partitions)
        itemsets = (
            growth.fit(baskets)
            .freqItemsets.where(F.col("freq") >= min_count)
            .where(F.size("items") <= max_len)
            .select(F.array_sort("items").alias("items"), F.col("freq"))
        )
        candidates = (
            itemsets.where(F.size("items") >= min_len)
            .select("items", "freq", F.explode("items").alias("rhs"))
            .select(F.array_remove("items", F.col("rhs")).alias("lhs"), "rhs", F.col("freq").alias("count"))
        )
        lhs_counts = itemsets.select(F.col("items").alias("lhs"), F.col("freq").alias("lhs_count"))
        joined = candidates.join(lhs_counts, "lhs", "left").withColumn(
            "lhs_count", F.coalesce(F.col("lhs_count"), F.lit(n).cast("long"))
        )
        # A looser bound in Spark; the exact local test runs below on the driver.
        loose = joined.where(
            F.col("count") >= F.lit(float(min_confidence)) * F.col("lhs_count") * F.lit(1 - 4 * _CONFIDENCE_SLACK)
        )
        single = itemsets.where(F.size("items") == 1).select(F.col("items")[0].alias("rhs"), F.col("freq").alias("rc"))
        table = _collect(loose.join(single, "rhs"))
    finally:
        baskets.unpersist()
    counted = zip(
        table.column("lhs").to_pylist(),
        table.column("rhs").to_pylist(),
        table.column("count").to_pylist(),
        table.column("lhs_count").to_pylist(),
        table.column("rc").to_pylist(),
        strict=True,
    )
    return rules_from_counts(counted, n, min_count, min_confidence), int(n)


def load(
    spark_settings: SparkSettings | None, paths: str | Sequence[str], options: LoadOptions | None
) -> list[SparkEvents]:
    """Start (or reuse) the session and read the loads: the one call the API makes before counting."""
    return load_events_spark(spark_session(spark_settings), paths, options)
