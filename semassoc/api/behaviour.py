"""``behavior build``/``update``, ``forget-user``, ``rules``: reading events and counting what is bought together."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semassoc import privacy
from semassoc.behaviour.stats import BehaviourStats
from semassoc.behaviour.users import UserHistories
from semassoc.catalog import OnError
from semassoc.errors import InvalidInput, NotFound, RowProblem
from semassoc.workspace import Workspace

if TYPE_CHECKING:  # the events reader and the rule miner load pyarrow/pyfim: imported where they are used
    from semassoc.behaviour.events import Events, LoadOptions
    from semassoc.behaviour.rules import Rule
    from semassoc.behaviour.spark import SparkSettings


@dataclass
class BehaviorReport:
    """What ``behavior build`` / ``behavior update`` did."""

    workspace: str
    sources: list[str]
    rows_read: int
    rows_used: int
    skipped_rows: int
    skipped: list[RowProblem]
    filtered: dict[str, int]
    baskets: int
    items: int
    pairs: int
    seconds: float
    notes: list[str] = field(default_factory=list)  # things the user should know (histories kept or dropped)

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["skipped"] = [str(p) for p in self.skipped]
        return data


def _load_all(
    paths: Sequence[str | Path], options: LoadOptions, engine: str = "local", spark: SparkSettings | None = None
) -> list[Events]:
    """Read every events file with ``options``: in this process (``engine="local"``) or with Spark, whose loads
    stay in Spark (``SparkEvents``: the same counts for reports, the rows as a DataFrame)."""
    if engine not in ("local", "spark"):
        raise InvalidInput(f"unknown engine {engine!r}; use local or spark")
    if not paths:
        raise InvalidInput("no events file given")
    if engine == "spark":
        from semassoc.behaviour import spark as spark_engine

        if options.pseudonymise_users:
            raise InvalidInput("--pseudonymise-users is not supported with --engine spark yet; use --engine local")
        return spark_engine.load(spark, [str(p) for p in paths], options)  # type: ignore[return-value]
    return [options.load(p) for p in paths]


def _behavior_report(
    ws: Workspace, parts: list[Events], stats: BehaviourStats, started: float, notes: list[str] | None = None
) -> BehaviorReport:
    b = stats.info()
    return BehaviorReport(
        workspace=str(ws.path),
        sources=[s for p in parts for s in p.sources],
        rows_read=sum(p.rows_read for p in parts),
        rows_used=sum(len(p) for p in parts),
        skipped_rows=sum(p.skipped.rows for p in parts),
        skipped=[problem for p in parts for problem in p.skipped.problems],
        filtered={k: sum(p.filtered.get(k, 0) for p in parts) for p in parts for k in p.filtered},
        baskets=b.baskets,
        items=b.items,
        pairs=b.pairs,
        seconds=time.perf_counter() - started,
        notes=list(notes or []),
    )


def build_behavior(
    events: str | Path | Sequence[str | Path],
    *,
    workspace: str | Path | None = None,
    options: LoadOptions | None = None,
    min_count: int = 2,
    top_k: int | None = None,
    weighted: bool = False,
    event_types: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    engine: str = "local",
    spark: SparkSettings | None = None,
) -> BehaviorReport:
    """Count every product pair in one or more events files and store the statistics in the workspace.

    Replaces earlier statistics. All files are validated before anything is written (strict mode).

    Args:
        events: events file(s): CSV, JSONL or Parquet with a product id and a basket/order/session id (or a user id
            and a timestamp, cut into sessions by inactivity).
        workspace: workspace directory (created when missing).
        options: how to read the files (columns, filters, weights, session gap); stored for ``update_behavior``.
        min_count: default minimum number of shared baskets for a pair to count.
        top_k: keep only each product's top-k neighbours (very large catalogs); None keeps every pair.
        weighted: cosine uses event weights instead of presence.
        event_types: count only these event types (e.g. ``["purchase"]``).
        progress: called as ``progress(stage, step, steps)``.
        engine: ``local`` (this process) or ``spark`` (Apache Spark: events may also be directories, Hive-style
            partitions and globs; the statistics written are the same, see docs/spark.md).
        spark: where Spark runs (``SparkSettings``: master, conf); only with ``engine="spark"``.
    """
    from semassoc.behaviour.events import LoadOptions

    started = time.perf_counter()
    options = options or LoadOptions()
    parts = _load_all([events] if isinstance(events, (str, Path)) else list(events), options, engine, spark)
    notes: list[str] = []
    with Workspace.create_or_open(workspace) as ws:
        build = BehaviourStats.build
        if engine == "spark":
            from semassoc.behaviour.spark import build_stats_spark as build  # type: ignore[assignment]
        stats = build(
            parts,
            ws.behaviour_dir,
            min_count=min_count,
            top_k=top_k,
            weighted=weighted,
            event_types=event_types,
            progress=progress,
            extra=_behaviour_extras(ws, parts, options, notes, replace=True, engine=engine),
        )
        _after_behaviour_write(ws)
        ws.manifest.behaviour = {"load_options": options.to_dict()}
        if options.pseudonymise_users:
            ws.manifest.behaviour["user_key_check"] = privacy.key_check(privacy.user_key())
        ws.save()
        _release(parts)
        return _behavior_report(ws, parts, stats, started, notes)


def _release(parts: Sequence[object]) -> None:
    """Let Spark drop what it cached for its loads (no-op for local ``Events``)."""
    for part in parts:
        release = getattr(part, "release", None)
        if release is not None:
            release()


_LOAD_OPTIONS = "load_options.json"


def _behaviour_extras(
    ws: Workspace,
    parts: Sequence[Any],
    options: LoadOptions,
    notes: list[str],
    *,
    replace: bool,
    engine: str = "local",
) -> Callable[[Path], None]:
    """What goes into the behaviour directory with the statistics, in the same atomic write: the per-user histories
    (when the events name users) and the options the events were read with. Statistics and histories therefore
    change together or not at all."""
    from semassoc.behaviour.users import copy_histories, histories_writer

    current = ws.users_dir if UserHistories.exists(ws.users_dir) else None
    without_users = [s for p in parts if not _has_users(p) for s in p.sources]
    histories: Callable[[Path], None] | None
    if without_users:
        histories = None
        if current is not None and not replace:
            histories = copy_histories(current)
            notes.append(f"{', '.join(without_users)}: no user column; the stored user histories are kept unchanged")
        elif current is not None:
            notes.append(
                f"{', '.join(without_users)}: no user column; the new statistics have no user histories "
                "(the previous ones described other events)"
            )
    elif engine == "spark":
        from semassoc.behaviour.spark import spark_histories_writer

        histories = spark_histories_writer(parts, None if replace or current is None else UserHistories(current))
    elif replace or current is None:
        histories = histories_writer(list(parts))
    else:
        histories = histories_writer(list(parts), UserHistories(current))

    def write(tmp: Path) -> None:
        if histories is not None:
            histories(tmp / "users")
        (tmp / _LOAD_OPTIONS).write_text(json.dumps(options.to_dict(), indent=2) + "\n", encoding="utf-8")

    return write


def _has_users(part: Any) -> bool:
    has = getattr(part, "has_user", None)  # Spark loads say so; local Events carry the column or None
    return bool(has) if has is not None else part.user is not None


def _after_behaviour_write(ws: Workspace) -> None:
    """Histories now live inside the behaviour directory: drop the copy an older release kept beside it."""
    legacy = ws.path / "users"
    if legacy.exists() and ws.users_dir != legacy:
        shutil.rmtree(legacy, ignore_errors=True)


def _stored_load_options(ws: Workspace) -> dict[str, Any] | None:
    path = ws.behaviour_dir / _LOAD_OPTIONS
    if path.is_file():
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
    return ws.manifest.behaviour.get("load_options")


def update_behavior(
    events: str | Path | Sequence[str | Path],
    *,
    workspace: str | Path | None = None,
    options: LoadOptions | None = None,
    on_error: OnError | None = None,
    pseudonymise_users: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    engine: str = "local",
    spark: SparkSettings | None = None,
) -> BehaviorReport:
    """Add new events files to the statistics; the result equals a build on all files together.

    Args:
        events: the new file(s). A file already counted (same content) is refused.
        options: how to read them; default: the options the statistics were built with.
        on_error: ``strict`` or ``skip`` instead of the stored setting.
        engine, spark: as in :func:`build_behavior` (statistics built by either engine can be updated by either).
        pseudonymise_users: None follows the build; True/False must match it (mixing raw and hashed ids is refused).
    """
    from dataclasses import replace

    from semassoc.behaviour.events import LoadOptions

    started = time.perf_counter()
    with Workspace.open(workspace, writer=True) as ws:
        stats = BehaviourStats.open(ws.behaviour_dir)
        stored = _stored_load_options(ws)
        options = options or (LoadOptions.from_dict(stored) if stored else LoadOptions())
        if on_error is not None:
            options = replace(options, on_error=on_error)
        if pseudonymise_users is not None:
            options = replace(options, pseudonymise_users=pseudonymise_users)
        pseudonymised = bool((stored or {}).get("pseudonymise_users"))
        if options.pseudonymise_users != pseudonymised:
            state = "pseudonymised" if pseudonymised else "raw"
            raise InvalidInput(
                f"the user ids of {ws.path} are {state}; update with the same --pseudonymise-users setting as the "
                "build (or rebuild)"
            )
        privacy.stored_key(ws.manifest.behaviour, ws.path)  # the same key as the build, or a one-line refusal
        parts = _load_all([events] if isinstance(events, (str, Path)) else list(events), options, engine, spark)
        notes: list[str] = []
        extras = _behaviour_extras(ws, parts, options, notes, replace=False, engine=engine)
        if engine == "spark":
            from semassoc.behaviour.spark import update_stats_spark

            stats = update_stats_spark(
                ws.behaviour_dir,
                parts,  # type: ignore[arg-type]
                progress=progress,
                extra=extras,
            )
        else:
            stats = stats.update(parts, progress=progress, extra=extras)
        _after_behaviour_write(ws)
        ws.save()
        _release(parts)
        return _behavior_report(ws, parts, stats, started, notes)


@dataclass
class ForgetReport:
    """What ``forget_user`` removed, and what still holds data derived from the user."""

    user_id: str
    stored_as: str
    products: int
    events: int
    remaining: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def forget_user(user_id: str, *, workspace: str | Path | None = None) -> ForgetReport:
    """Remove a user's history from the workspace (``semassoc forget-user``).

    The history (which products, how often, when) is deleted at once. The pair counts of the behaviour statistics
    were summed over every basket, this user's included: they cannot be taken apart, so they still count the user's
    baskets until the next ``behavior build`` from events files without the user. The report says so, with the
    number of events concerned.

    Args:
        user_id: the id as in the events file (hashed with ``$SEMASSOC_USER_KEY`` when the workspace pseudonymises).

    Raises:
        NotFound: no history is stored for this user.
    """
    with Workspace.open(workspace, writer=True) as ws:
        key = privacy.stored_key(ws.manifest.behaviour, ws.path)
        stored = privacy.pseudonymise(user_id, key) if key is not None else user_id
        if not UserHistories.exists(ws.users_dir):
            raise NotFound(f"no user histories in {ws.path} (the events had no user column)")
        products, events = UserHistories(ws.users_dir).forget(stored)
        if products == 0:
            raise NotFound(f"no history for user {user_id!r} in {ws.path}")
        remaining = [
            f"the behaviour statistics (pair counts, basket log) still count this user's {events} event(s) until "
            "the next `semassoc behavior build` from events files without them",
            "the events files the workspace was built from still hold them",
        ]
        return ForgetReport(user_id, stored, products, events, remaining)


@dataclass
class RulesReport:
    """Rules mined by ``rules``, and where they were written."""

    rules: list[Rule]
    baskets: int
    out: str | None
    seconds: float


def rules(
    events: str | Path | Sequence[str | Path],
    *,
    options: LoadOptions | None = None,
    min_support: float = 0.01,
    min_confidence: float = 0.5,
    min_len: int = 2,
    max_len: int = 10,
    out: str | Path | None = None,
    sort_by: str = "lift",
    engine: str = "local",
    spark: SparkSettings | None = None,
    force: bool = False,
) -> RulesReport:
    """Association rules of any length (arules semantics) from events files, optionally written to a file.

    Args:
        events: events file(s), read with ``options``.
        min_support, min_confidence, min_len, max_len: as in arules' ``apriori`` (min_len counts lhs and rhs).
        out: write the rules here (.csv, .parquet or .jsonl); None writes nothing.
        sort_by: ``lift``, ``confidence``, ``support``, ``count`` or ``coverage`` (descending).
        engine, spark: as in :func:`build_behavior`; with ``spark``, itemsets come from Spark ML's FP-growth and the
            rules are the same.
        force: mine even when the rules are estimated not to fit in memory (see ``rules.estimate_mining``).
    """
    from semassoc.behaviour.events import Events, LoadOptions
    from semassoc.behaviour.rules import mine_rules, write_rules

    started = time.perf_counter()
    if sort_by not in ("lift", "confidence", "support", "count", "coverage"):
        raise InvalidInput(f"cannot sort rules by {sort_by!r}; use lift, confidence, support, count or coverage")
    paths = [events] if isinstance(events, (str, Path)) else list(events)
    parts = _load_all(paths, options or LoadOptions(), engine, spark)
    if engine == "spark":
        from semassoc.behaviour.spark import mine_rules_and_count_spark

        found, baskets = mine_rules_and_count_spark(parts, min_support, min_confidence, min_len, max_len)  # type: ignore[arg-type]
        _release(parts)
    else:
        joined = Events.concat(parts)
        found, baskets = (
            mine_rules(joined, min_support, min_confidence, min_len, max_len, force=force),
            joined.n_baskets,
        )
    found.sort(key=lambda r: (-getattr(r, sort_by), -r.lift, r.lhs, r.rhs))
    written = str(write_rules(found, out)) if out is not None else None
    return RulesReport(rules=found, baskets=baskets, out=written, seconds=time.perf_counter() - started)
