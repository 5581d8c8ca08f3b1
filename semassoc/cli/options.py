"""Options shared by several commands (``Annotated`` types) and every fixed choice as a Typer enum.

Only parsing lives here: turning option values into library values (filters, load options) is done by library
functions (:class:`ProductFilter`, :func:`semassoc.behaviour.presets.load_options`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_type_hints

import typer

from semassoc.behaviour.event_options import LoadOptions
from semassoc.errors import InvalidInput
from semassoc.store.base import ProductFilter
from semassoc.workspace import ENV_QDRANT_URL, ENV_WORKSPACE

if TYPE_CHECKING:
    from semassoc.behaviour.spark_input import SparkSettings

F = TypeVar("F", bound=Callable[..., Any])


# -- choices ----------------------------------------------------------------------------------------------------
class OnErrorChoice(str, Enum):
    strict = "strict"
    skip = "skip"

    @property
    def mode(self) -> Literal["strict", "skip"]:
        return "strict" if self is OnErrorChoice.strict else "skip"


class ModeChoice(str, Enum):
    auto = "auto"
    substitutes = "substitutes"
    complements = "complements"


class ProfileChoice(str, Enum):
    vectors = "vectors"
    text = "text"
    mix = "mix"


class MetricChoice(str, Enum):
    """The weightings of :data:`semassoc.behaviour.weightings.METRICS` (a test keeps the two equal)."""

    pair_count = "count"  # (a member named ``count`` would shadow str.count)
    support = "support"
    confidence = "confidence"
    reverse_confidence = "reverse_confidence"
    lift = "lift"
    npmi = "npmi"
    cosine = "cosine"
    jaccard = "jaccard"


class RuleSortChoice(str, Enum):
    lift = "lift"
    confidence = "confidence"
    support = "support"
    rule_count = "count"
    coverage = "coverage"


class EngineChoice(str, Enum):
    local = "local"
    spark = "spark"


class PresetChoice(str, Enum):
    online_retail = "online-retail"


class TruthChoice(str, Enum):
    lift = "lift"
    raw = "raw"

    @property
    def kind(self) -> Literal["lift", "raw"]:
        return "lift" if self is TruthChoice.lift else "raw"


class EarlyStoppingChoice(str, Enum):
    recall_at_10 = "recall@10"
    loss = "loss"

    @property
    def metric(self) -> Literal["recall@10", "loss"]:
        return "recall@10" if self is EarlyStoppingChoice.recall_at_10 else "loss"


# -- workspace, output, store -----------------------------------------------------------------------------------
Workspace = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", envvar=ENV_WORKSPACE, help="Workspace directory [default: ./.semassoc]."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object per line instead of a table.")]
TopK = Annotated[int, typer.Option("--k", "-k", min=1, max=100_000, help="How many products to return.")]
QdrantUrl = Annotated[
    str | None,
    typer.Option("--qdrant-url", envvar=ENV_QDRANT_URL, help="Qdrant server/cluster URL [default: embedded store]."),
]
Exact = Annotated[bool, typer.Option("--exact", help="Exact search even when an HNSW index was built.")]
Model = Annotated[
    str | None,
    typer.Option("--model", "-m", help="sentence-transformers model name or directory [default: the workspace's]."),
]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1... [default: auto].")]

# -- product filters --------------------------------------------------------------------------------------------
Category = Annotated[list[str] | None, typer.Option("--category", help="Only this category (repeatable).")]
Brand = Annotated[list[str] | None, typer.Option("--brand", help="Only this brand (repeatable).")]
MinPrice = Annotated[float | None, typer.Option("--min-price", min=0, help="Lowest price.")]
MaxPrice = Annotated[float | None, typer.Option("--max-price", min=0, help="Highest price.")]
InStock = Annotated[bool, typer.Option("--in-stock", help="Only products in stock.")]
Exclude = Annotated[
    list[str] | None, typer.Option("--exclude", help="Leave out these product ids (repeatable, or comma-separated).")
]
Collapse = Annotated[
    str | None,
    typer.Option("--collapse", help="Collapse variants: 'base-code' (85123A ~ 85123B) or a catalog column name."),
]


def split_ids(values: list[str] | None) -> list[str]:
    """Repeatable, comma-separated ids as one list (blanks dropped)."""
    return [p.strip() for value in values or [] for p in value.split(",") if p.strip()]


def product_filter(
    category: list[str] | None,
    brand: list[str] | None,
    min_price: float | None,
    max_price: float | None,
    in_stock: bool,
    exclude: list[str] | None,
) -> ProductFilter:
    return ProductFilter(
        categories=tuple(category or ()),
        brands=tuple(brand or ()),
        min_price=min_price,
        max_price=max_price,
        in_stock=True if in_stock else None,
        exclude=tuple(split_ids(exclude)),
    )


# -- reading events ---------------------------------------------------------------------------------------------
EventsFiles = Annotated[list[Path], typer.Argument(help="Events file(s): .csv, .tsv, .jsonl or .parquet.")]
ItemColumn = Annotated[str | None, typer.Option("--item-column", help="Product id column [default: detected].")]
BasketColumn = Annotated[
    str | None, typer.Option("--basket-column", help="Order/basket/session id column [default: detected].")
]
UserColumn = Annotated[str | None, typer.Option("--user-column", help="User id column [default: detected].")]
TimeColumn = Annotated[str | None, typer.Option("--timestamp-column", help="Event time column [default: detected].")]
TypeColumn = Annotated[str | None, typer.Option("--event-type-column", help="Event type column [default: detected].")]
QuantityColumn = Annotated[str | None, typer.Option("--quantity-column", help="Quantity column [default: detected].")]
SessionGap = Annotated[
    float, typer.Option("--session-gap", min=0.001, help="Minutes of inactivity that end a session (no basket id).")
]
Weights = Annotated[
    list[str] | None,
    typer.Option("--weight", help="Event type weight, TYPE=W (repeatable) [default: view=1 cart=3 purchase=5]."),
]
HalfLife = Annotated[float | None, typer.Option("--half-life", min=0.001, help="Time-decay half-life in days.")]
Preset = Annotated[
    PresetChoice | None,
    typer.Option("--preset", help="Cleaning preset: 'online-retail' (cancellations, non-product codes)."),
]
CancelPrefix = Annotated[
    str | None, typer.Option("--cancellation-prefix", help="Drop baskets whose id starts with this (e.g. C).")
]
ExcludeItems = Annotated[
    list[str] | None, typer.Option("--exclude-items", help="Product ids that are not products (repeatable, commas).")
]
ExcludePattern = Annotated[str | None, typer.Option("--exclude-pattern", help="Regex of product ids to drop.")]
KeepNonPositive = Annotated[bool, typer.Option("--keep-nonpositive", help="Keep rows with quantity <= 0.")]
Pseudonymise = Annotated[
    bool,
    typer.Option(
        "--pseudonymise-users",
        help="Replace user ids by a keyed hash (HMAC-SHA256, key from $SEMASSOC_USER_KEY) as they are read.",
    ),
]
Delimiter = Annotated[
    str | None, typer.Option("--delimiter", help="CSV delimiter [default: detected among , ; tab |].")
]
OnError = Annotated[
    OnErrorChoice, typer.Option("--on-error", help="strict: any bad row stops the run; skip: drop bad rows, list them.")
]


def load_options(
    *,
    item_column: str | None,
    basket_column: str | None,
    user_column: str | None,
    timestamp_column: str | None,
    event_type_column: str | None,
    quantity_column: str | None,
    session_gap: float,
    weight: list[str] | None = None,
    half_life: float | None = None,
    preset: PresetChoice | None,
    cancellation_prefix: str | None,
    exclude_items: list[str] | None,
    exclude_pattern: str | None,
    keep_nonpositive: bool,
    on_error: OnErrorChoice,
    delimiter: str | None = None,
    pseudonymise_users: bool = False,
) -> LoadOptions:
    """The events options as given on the command line, handed to the library (which parses and checks them)."""
    from semassoc.behaviour import presets

    options = presets.load_options(
        columns=(item_column, basket_column, user_column, timestamp_column, event_type_column, quantity_column),
        session_gap_minutes=session_gap,
        weights=weight,
        half_life_days=half_life,
        preset=None if preset is None else preset.value,
        cancellation_prefix=cancellation_prefix,
        exclude_items=split_ids(exclude_items),
        exclude_pattern=exclude_pattern,
        keep_nonpositive=keep_nonpositive,
        on_error=on_error.mode,
        delimiter=delimiter,
    )
    return dataclasses.replace(options, pseudonymise_users=True) if pseudonymise_users else options


# -- where events are counted ----------------------------------------------------------------------------------
EngineOption = Annotated[
    EngineChoice,
    typer.Option("--engine", help="local (this process) or spark (Apache Spark, same results; see docs/spark.md)."),
]
SparkMaster = Annotated[
    str,
    typer.Option(
        "--spark-master", help="With --engine spark: local[*], local[2], yarn, k8s://https://..., spark://host:7077."
    ),
]
SparkConf = Annotated[
    list[str] | None,
    typer.Option("--spark-conf", help="With --engine spark: a Spark property KEY=VALUE, passed through (repeatable)."),
]


@dataclasses.dataclass(frozen=True)
class Engine:
    """What ``--engine``, ``--spark-master`` and ``--spark-conf`` chose: the ``engine`` and ``spark`` arguments of
    the ``api`` functions that read events."""

    name: str
    spark: SparkSettings | None = None


def spark_settings(engine: EngineChoice, spark_master: str, spark_conf: list[str] | None) -> Engine:
    """The engine of ``--engine`` and, for Spark, its settings (for the local engine Spark options are refused)."""
    if engine is EngineChoice.local:
        if spark_master != "local[*]" or spark_conf:
            raise InvalidInput("--spark-master and --spark-conf need --engine spark")
        return LOCAL_ENGINE
    from semassoc.behaviour.spark_input import SparkSettings

    pairs = {}
    for item in spark_conf or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"--spark-conf wants KEY=VALUE (e.g. spark.executor.memory=8g), not {item!r}")
        pairs[key.strip()] = value
    return Engine(engine.value, SparkSettings(master=spark_master, conf=pairs))


# -- option groups ----------------------------------------------------------------------------------------------
#: Placeholders for the parameters an option group replaces (a command never receives them).
ANY_PRODUCT = ProductFilter()
READ_EVENTS = LoadOptions()
LOCAL_ENGINE = Engine("local")


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)


def option_group(target: str, group: Sequence[inspect.Parameter], build: Callable[..., Any]) -> Callable[[F], F]:
    """A decorator: the command's parameter ``target`` becomes the options ``group`` on the command line (at the same
    place in ``--help``), and the command receives ``build(**their values)`` as ``target``.

    One definition of a set of options that many commands share; Typer reads the rewritten signature.
    """

    def decorate(fn: F) -> F:
        hints = get_type_hints(fn, include_extras=True)
        parameters: list[inspect.Parameter] = []
        for parameter in inspect.signature(fn).parameters.values():
            if parameter.name == target:
                parameters.extend(group)
            else:
                parameters.append(parameter.replace(annotation=hints.get(parameter.name, parameter.annotation)))
        names = [p.name for p in group]

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            built = build(**{name: values.pop(name) for name in names})
            return fn(**values, **{target: built})

        command.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command  # type: ignore[return-value]

    return decorate


#: ``filter: ProductFilter`` becomes --category, --brand, --min-price, --max-price, --in-stock and --exclude.
filter_options = option_group(
    "filter",
    [
        _option("category", Category, None),
        _option("brand", Brand, None),
        _option("min_price", MinPrice, None),
        _option("max_price", MaxPrice, None),
        _option("in_stock", InStock, False),
        _option("exclude", Exclude, None),
    ],
    product_filter,
)

_COLUMNS = [
    _option("item_column", ItemColumn, None),
    _option("basket_column", BasketColumn, None),
    _option("user_column", UserColumn, None),
    _option("timestamp_column", TimeColumn, None),
    _option("event_type_column", TypeColumn, None),
    _option("quantity_column", QuantityColumn, None),
    _option("session_gap", SessionGap, 30.0),
]
_CLEANING = [
    _option("preset", Preset, None),
    _option("cancellation_prefix", CancelPrefix, None),
    _option("exclude_items", ExcludeItems, None),
    _option("exclude_pattern", ExcludePattern, None),
    _option("keep_nonpositive", KeepNonPositive, False),
    _option("on_error", OnError, OnErrorChoice.strict),
]
_WEIGHTS = [_option("weight", Weights, None), _option("half_life", HalfLife, None)]

_DELIMITER = [_option("delimiter", Delimiter, None)]

#: ``options: LoadOptions`` becomes the column, session, cleaning and --on-error options of reading events.
events_options = option_group("options", [*_COLUMNS, *_CLEANING], load_options)
#: The same with --delimiter (``rules``).
delimited_events_options = option_group("options", [*_COLUMNS, *_CLEANING, *_DELIMITER], load_options)
#: The same with --weight, --half-life and --pseudonymise-users too (``behavior build``: event weights matter where
#: behaviour is counted, and user ids are stored there).
weighted_events_options = option_group(
    "options",
    [*_COLUMNS, *_WEIGHTS, *_CLEANING, *_DELIMITER, _option("pseudonymise_users", Pseudonymise, False)],
    load_options,
)

#: ``engine: Engine`` becomes --engine, --spark-master and --spark-conf (commands that count events).
engine_options = option_group(
    "engine",
    [
        _option("engine", EngineOption, EngineChoice.local),
        _option("spark_master", SparkMaster, "local[*]"),
        _option("spark_conf", SparkConf, None),
    ],
    spark_settings,
)
