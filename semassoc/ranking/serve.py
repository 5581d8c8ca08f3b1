"""Serving a fitted ranker inside :class:`~semassoc.ranking.engine.RelatedEngine`: the same candidates and features as
:mod:`semassoc.ranking.simulate` built at fit time, now at the end of the basket log, then the model's order.

Per engine, the arrays of the behaviour statistics (ids, basket counts, first basket times) and every looked-up pair
row are kept, so a batch pays only for its own candidates: one batched text search, feature rows built per query with
numpy, one model call per query group.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from semassoc.behaviour.baskets import MISSING, BasketLog
from semassoc.ranking import features as F
from semassoc.ranking.features import DATE_COLUMNS, parse_date
from semassoc.ranking.ranker import Ranker
from semassoc.results import DeferredItem, ScoredItem, public_attributes
from semassoc.store.base import ProductFilter

if TYPE_CHECKING:
    from semassoc.behaviour.stats import BehaviourStats
    from semassoc.ranking.engine import RelatedEngine


def cut_ties(ids: list[str], sims: list[float], limit: int) -> tuple[list[str], list[float]]:
    """A full list of nearest products (best first) without the ones tied with its last: which of several equally
    similar products a store returns at its limit depends on the order they were stored in, and the lists must
    not."""
    if len(ids) < limit or not ids:
        return ids, sims
    last = sims[-1]
    keep = [i for i, s in enumerate(sims) if s != last]
    return [ids[i] for i in keep], [sims[i] for i in keep]


#: (signal, its rank feature) in the order that breaks ties when explaining a row (the first of equals wins).
RANK_FEATURES = (
    ("behaviour", "behaviour_rank"),
    ("transfer", "transfer_rank"),
    ("recent", "recent_rank"),
    ("text", "text_rank"),
    ("popularity", "popularity_rank"),
)


class Server:
    """Per-engine state for ranked ``related`` lists."""

    def __init__(self, engine: RelatedEngine, stats: BehaviourStats, ranker: Ranker) -> None:
        self.engine = engine
        self.stats = stats
        self.ranker = ranker
        ids, counts = stats.item_ids_and_counts()
        self.ids = np.asarray(ids).astype(str)
        self.counts = np.asarray(counts, dtype=np.int64)
        directory = stats.directory
        if BasketLog.exists(directory):
            self.first_seen = np.asarray(BasketLog.load_first_seen(directory), dtype=np.int64)
            times = np.load(directory / "log_time.npy", mmap_mode="r")
            timed = np.asarray(times)[np.asarray(times) != MISSING]
            self.now = int(timed.max()) + 1 if timed.size else 0
        else:
            self.first_seen = np.full(self.ids.shape[0], MISSING, dtype=np.int64)
            self.now = 0
        self.baskets = stats.info().baskets
        self.scores_cache: dict[int, Any] = {}
        self.attributes = [f for f in ranker.features if f in F.ATTRIBUTE_FEATURES]
        self.payloads: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, int] = {}
        self.absent: set[str] = set()
        self.attribute_cache: dict[str, tuple[float, int, int, int]] = {}
        self.public: dict[str, dict[str, Any]] = {}
        self.columns: dict[tuple[str, ...], dict[str, int]] = {}
        base = self._view(self.ids, self.counts, self.first_seen)
        self.popular = base.popular(ranker.candidates)

    def _row(self, code: int) -> F.Row:
        codes, pair, _ = self.stats.neighbour_codes(str(self.ids[code]))
        return codes, pair

    def _view(self, ids: np.ndarray, counts: np.ndarray, first_seen: np.ndarray) -> F.View:
        view = F.View(
            ids=ids,
            counts=counts,
            first_seen=first_seen,
            now=self.now,
            baskets=self.baskets,
            row=self._row,
            recent_span=self.ranker.recent_span,
        )
        view._scores = self.scores_cache  # shared across batches: behaviour codes are stable
        return view

    def _fetch(self, names: Sequence[str]) -> None:
        """Look up the payloads of ``names`` not yet known, in one store call, remembering which are absent (not in
        the catalog), so no product is looked up twice by one engine."""
        missing = [p for p in names if p not in self.payloads and p not in self.absent]
        if missing:
            found = self.engine.payloads(missing)
            self.payloads.update(found)
            self.absent.update(p for p in missing if p not in found)

    def _attributes(self, pid: str) -> tuple[float, int, int, int] | None:
        """(price, category label, brand label, catalog date) of a product from its payload, worked out once per
        engine; None when it has no payload (not in the catalog)."""
        cached = self.attribute_cache.get(pid)
        if cached is None:
            payload = self.payloads.get(pid)
            if payload is None:
                return None
            try:
                price = float(payload.get("price"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                price = float("nan")
            date = MISSING
            flat = public_attributes(payload)
            for name in DATE_COLUMNS:
                if flat.get(name) not in (None, ""):
                    date = parse_date(flat[name])
                    break
            cached = self.attribute_cache[pid] = (
                price if np.isfinite(price) and price > 0 else np.nan,
                self._label(payload.get("category")),
                self._label(payload.get("brand")),
                date,
            )
        return cached

    def _label(self, value: Any) -> int:
        text = str(value or "")
        if not text:
            return -1
        return self.labels.setdefault(text, len(self.labels))

    def ranked(
        self,
        product_ids: Sequence[str],
        text_rows: dict[str, tuple[list[str], list[float]]],
        k: int,
        base: ProductFilter,
        collapse: str | None,
        limit: int,
    ) -> list[list[DeferredItem]]:
        """Ranked lists for ``product_ids`` (each must have a model for its group); ``text_rows`` are the text
        searches (ids and cosines, best first, ties by id), ``limit`` their length."""
        n = self.ids.shape[0]
        wanted = set(product_ids).union(*(ids for ids, _ in text_rows.values()))
        wanted_arr = np.asarray(sorted(wanted), dtype=str)
        pos = np.minimum(np.searchsorted(self.ids, wanted_arr), max(n - 1, 0))
        known = (self.ids[pos] == wanted_arr) if n else np.zeros(wanted_arr.shape[0], bool)
        extras = wanted_arr[~known]
        ids = np.concatenate([self.ids, extras]) if extras.size else self.ids
        code_of = dict(zip(wanted_arr[known].tolist(), pos[known].tolist(), strict=True))
        code_of.update({pid: n + i for i, pid in enumerate(extras.tolist())})
        counts = np.r_[self.counts, np.zeros(extras.size, np.int64)]
        first = np.r_[self.first_seen, np.full(extras.size, MISSING, np.int64)]
        view = self._view(ids, counts, first)
        view._popular = self.popular
        if self.attributes:
            size = ids.shape[0]
            view.price = np.full(size, np.nan)
            view.category = np.full(size, -1, dtype=np.int64)
            view.brand = np.full(size, -1, dtype=np.int64)
            view.date = np.full(size, MISSING, dtype=np.int64)

            def load(codes: np.ndarray) -> None:
                names = [str(i) for i in ids[codes].tolist()]
                self._fetch(names)
                known = [(code, self._attributes(pid)) for code, pid in zip(codes.tolist(), names, strict=True)]
                known = [(code, a) for code, a in known if a is not None]
                if known:
                    at = np.array([code for code, _ in known], dtype=np.int64)
                    view.price[at] = [a[0] for _, a in known]  # type: ignore[index]
                    view.category[at] = [a[1] for _, a in known]  # type: ignore[index]
                    view.brand[at] = [a[2] for _, a in known]  # type: ignore[index]
                    view.date[at] = [a[3] for _, a in known]  # type: ignore[index]

            view.load_attributes = load
        queries = np.array([code_of[p] for p in product_ids], dtype=np.int64)
        text = []
        for pid in product_ids:
            names, sims = cut_ties(*text_rows.get(pid, ([], [])), limit)
            text.append((np.array([code_of[n] for n in names], dtype=np.int64), np.array(sims, dtype=np.float64)))
        table = F.build(view, queries, text, k=self.ranker.candidates, names=self.ranker.features)
        scores = np.zeros(table.candidates.shape[0])
        groups = [self.ranker.group_of(int(counts[q])) for q in queries.tolist()]
        for group in set(groups):
            rows = np.concatenate(
                [np.arange(table.offsets[i], table.offsets[i + 1]) for i, g in enumerate(groups) if g == group]
            )
            if rows.size:
                scores[rows] = self.ranker.predict(group, table.features[rows])
        orders = []
        head: set[str] = set()
        for i in range(len(product_ids)):
            lo, hi = int(table.offsets[i]), int(table.offsets[i + 1])
            cands = table.candidates[lo:hi]
            order = np.lexsort((ids[cands], -scores[lo:hi]))
            orders.append(order)
            head.update(str(p) for p in ids[cands[order[: max(4 * k, 32)]]].tolist())
        self._fetch(sorted(head))  # one store call for the heads of every list (the rest when filters reach further)
        out = []
        block = max(4 * k, 32)
        for i, pid in enumerate(product_ids):
            lo, hi = int(table.offsets[i]), int(table.offsets[i + 1])
            cands = table.candidates[lo:hi]
            flt = base.with_excluded([pid])
            # the head of the ranking first: filters and products missing from the catalog rarely reach further
            # (the walk down a list gives the same first k from any prefix that holds them)
            cap = 2 * block + len(flt.exclude)
            while True:
                order = orders[i][:cap]
                names = ids[cands[order]].tolist()
                ranked = list(zip(names, scores[lo + order].tolist(), strict=True))
                payloads: dict[str, Any] = {}
                for name in names:  # every payload known so far (None: not in the catalog, skipped without a look-up)
                    if name in self.payloads:
                        payloads[name] = self.payloads[name]
                    elif name in self.absent:
                        payloads[name] = None
                known = len(payloads)
                kept = self.engine._admissible(ranked, payloads, flt, collapse, pid, k)
                if len(payloads) > known:  # looked up further down this list: keep them for the next lists
                    self.payloads.update((n, v) for n, v in payloads.items() if v is not None)
                if len(kept) == k or cap >= hi - lo:
                    break
                cap = hi - lo
            row_of = dict(zip(names, (lo + order).tolist(), strict=True))
            evidence = float(counts[queries[i]])
            out.append(
                [
                    DeferredItem(
                        name,
                        score,
                        partial(self._item, name, score, table, row_of[name], view, payloads.get(name), evidence),
                    )
                    for name, score in kept
                ]
            )
        return out

    def _item(
        self,
        item: str,
        score: float,
        table: F.Table,
        row: int,
        view: F.View,
        payload: dict[str, Any] | None,
        evidence: float,
    ) -> ScoredItem:
        column = self._columns(table.names)
        values = table.features[row].tolist()

        def value(name: str) -> float:
            return float(values[column[name]])

        sim = max(value("text_sim"), 0.0)
        signals = {
            "text": sim,
            "behaviour": value("behaviour_share"),
            "transfer": value("transfer"),
            "popularity": float(view.counts[table.candidates[row]]),
            "evidence": evidence,
            "ranker": score,
        }
        strongest, best = "text", F.NOT_RANKED  # the signal ranking it highest (the first of equals), else text
        for name, feature in RANK_FEATURES:
            rank = values[column[feature]]
            if rank < best:
                strongest, best = name, rank
        if strongest == "behaviour" and value("pair_count") > 0:
            reason = f"bought together in {value('pair_count'):.0f} baskets (lift {value('pair_lift'):.1f})"
        elif strongest == "transfer" and int(table.via[row]) >= 0:
            donor = str(view.ids[int(table.via[row])])
            self._fetch([donor])
            title = self.payloads.get(donor) or {}
            reason = f"via {title.get('title', donor)} (text {float(table.via_sim[row]):.2f})"
        elif strongest == "recent":
            reason = f"new product, text similarity {sim:.2f}"
        elif strongest == "popularity":
            reason = f"popular: in {view.counts[table.candidates[row]]} baskets"
        else:
            reason = f"text similarity {sim:.2f}"
        return ScoredItem(
            product_id=item,
            title=str((payload or {}).get("title", "")),
            score=score,
            signals=signals,
            explanation=reason,
            attributes=self._public(item, payload),
        )

    def _columns(self, names: tuple[str, ...]) -> dict[str, int]:
        """Column of each feature name (one lookup table per feature list)."""
        cached = self.columns.get(names)
        if cached is None:
            cached = self.columns[names] = {name: i for i, name in enumerate(names)}
        return cached

    def _public(self, item: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        cached = self.public.get(item)
        if cached is None:
            cached = self.public[item] = public_attributes(payload or {})
        return dict(cached)
