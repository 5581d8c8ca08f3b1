"""Pair statistics, user histories and association rules computed on Apache Spark, with the local engine's answers.

The heavy steps run in Spark: grouping rows into baskets, generating every product pair of every basket and summing
them (this is where Spark spills to disk instead of needing the whole basket matrix in memory), counting products,
and mining frequent itemsets (Spark ML's FP-growth). What comes back to the driver is the result: one row per
distinct pair, per product and per (user, product). The driver then writes it with the local engine's own writer, so
the workspace holds exactly the files ``BehaviourStats.build`` writes and every query command works unchanged.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semassoc.behaviour.baskets import BasketLog
from semassoc.behaviour.events import LoadOptions
from semassoc.behaviour.pair_state import PairState
from semassoc.behaviour.rules import _CONFIDENCE_SLACK, Rule, _min_count, check_rule_options, rules_from_counts
from semassoc.behaviour.spark_events import SparkEvents, SparkSettings, load_events_spark, spark_session
from semassoc.behaviour.stats import BehaviourStats, BuildOptions
from semassoc.behaviour.users import MISSING, UserHistories, _aggregate, _concat, _save, _write
from semassoc.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa
    import scipy.sparse as sp
    from pyspark.sql import DataFrame
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


def _state(
    parts: Sequence[SparkEvents], weighted: bool, event_types: Sequence[str] | None, progress: Progress | None
) -> PairState:
    """The local engine's ``PairState`` (every pair count, product counts, baskets), computed by Spark."""
    import pyarrow as pa
    import pyarrow.compute as pc
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
        pairs_table = _collect(pairs)
        log_table = _collect(baskets.select(F.col("b.code").alias("codes"), "t"))
    finally:
        baskets.unpersist()
    item_counts = np.zeros(size, dtype=np.int64)
    wnorm2 = np.zeros(size, dtype=np.float64)
    code = items_table.column("code").to_numpy().astype(np.int64)
    item_counts[code] = items_table.column("c").to_numpy()
    wnorm2[code] = items_table.column("w2").to_numpy()
    key = pairs_table.column("key").to_numpy().astype(np.int64)
    i, j = key // max(size, 1), key % max(size, 1)
    c = pairs_table.column("c").to_numpy().astype(np.int64)
    ww = pairs_table.column("ww").to_numpy().astype(np.float64) if weighted else None
    counts_matrix, weighted_matrix = _symmetric(size, i, j, c, ww)
    codes_column = log_table.column("codes")
    lengths = pc.list_value_length(codes_column).to_numpy(zero_copy_only=False).astype(np.int64)
    log = BasketLog(
        np.r_[0, np.cumsum(lengths)].astype(np.int64),
        pc.list_flatten(codes_column).to_numpy(zero_copy_only=False).astype(np.int64),
        pc.fill_null(log_table.column("t"), MISSING).to_numpy(zero_copy_only=False).astype(np.int64),
        size,
    ).canonical()
    return PairState(
        item_ids, item_counts, counts_matrix, int(n_baskets), weighted_matrix, wnorm2 if weighted else None, log
    )


def _symmetric(
    size: int, i: np.ndarray, j: np.ndarray, counts: np.ndarray, weights: np.ndarray | None
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Symmetric CSR matrices (sorted indices, no diagonal) from the upper-triangle pair list."""
    import scipy.sparse as sp

    rows = np.concatenate([i, j])
    cols = np.concatenate([j, i])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=size), out=indptr[1:])
    indices = cols[order].astype(np.int32)
    pairs = sp.csr_matrix((np.concatenate([counts, counts])[order], indices, indptr), shape=(size, size))
    pairs.has_sorted_indices = True
    weighted = None
    if weights is not None:
        weighted = sp.csr_matrix((np.concatenate([weights, weights])[order], indices, indptr), shape=(size, size))
        weighted.has_sorted_indices = True
    return pairs, weighted


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
    return BehaviourStats.build(parts, directory, count=_state, **options)


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
