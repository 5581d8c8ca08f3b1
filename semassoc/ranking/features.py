"""Candidates and features of the learned ranker: one code path for fitting (at simulated moments inside the basket
log) and for serving (at the log's end), so a model sees the same features in both.

A :class:`View` is what is known at one moment "now": per product code its baskets and first basket time before now,
the pair rows of the baskets before now, and catalog attributes. For each query product, :func:`build` gathers
candidates from every signal and turns each (query, candidate) pair into one feature row:

- ``text``: the nearest products by text (the caller's list, best first): cosine and rank;
- ``recent``: the nearest by text among recent products (first bought within ``recent_span`` before now, or never);
- ``behaviour``: the query's own bought-together products (shared baskets, only above chance): count, lift, rank;
- ``transfer``: behaviour borrowed from the query's 10 nearest text neighbours that have behaviour;
- ``popularity``: the most bought products;
and for every candidate: evidence (baskets) of both products, ages (days since the first basket), whether both are
new, catalog attribute matches. A signal that does not score a candidate gives a fixed "not ranked" value
(``NOT_RANKED``), never anything that depends on the catalog's row order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from semassoc.behaviour.baskets import MISSING

#: Rank given to a candidate by a signal that does not rank it.
NOT_RANKED = 1000.0
DAY_US = 86_400 * 1_000_000
#: Text neighbours whose behaviour a new product borrows.
DONORS = 10

BASE_FEATURES = (
    "text_sim",
    "text_rank",
    "recent_rank",
    "pair_count",
    "pair_lift",
    "behaviour_share",
    "behaviour_rank",
    "transfer",
    "transfer_rank",
    "popularity_rank",
    "candidate_baskets",
    "query_baskets",
    "candidate_age_days",
    "query_age_days",
    "candidate_new",
    "both_new",
    "first_seen_gap_days",
    "candidate_recent",
    "signals",
)
#: Optional features, kept when the catalog has the attribute (see :func:`attribute_features`).
ATTRIBUTE_FEATURES = ("price_ratio", "same_category", "same_brand", "date_age_days", "date_gap_days")

#: Catalog columns read as the product's launch date (the first one present).
DATE_COLUMNS = ("created_at", "launch_date", "release_date", "first_available")

Row = tuple[np.ndarray, np.ndarray]  # (neighbour codes, pair counts), pairs >= min_count


@dataclass
class View:
    """What is known at one moment, over a product code space.

    Attributes:
        ids: product id per code (sorted ids for the part known to behaviour; codes are positions).
        counts: baskets before now per code.
        first_seen: first basket time before now per code (``MISSING``: none).
        now: the moment (int64 microseconds).
        baskets: baskets before now.
        row: the pair row of a code (neighbour codes and shared baskets, pairs >= the statistics' min_count).
        recent_span: how far back "recent" reaches (microseconds).
        candidate_ok: codes that may be candidates (the catalog at that moment); None: all.
        price / category / brand / date: catalog attributes per code (NaN / -1 / ``MISSING`` when absent).
    """

    ids: np.ndarray
    counts: np.ndarray
    first_seen: np.ndarray
    now: int
    baskets: int
    row: Callable[[int], Row]
    recent_span: int
    candidate_ok: np.ndarray | None = None
    price: np.ndarray | None = None
    category: np.ndarray | None = None
    brand: np.ndarray | None = None
    date: np.ndarray | None = None
    _scores: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    _popular: np.ndarray | None = None
    _buffers: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    #: called with every code a batch touches before attributes are read (serving fills them from payloads)
    load_attributes: Callable[[np.ndarray], None] | None = None

    def recent(self, codes: np.ndarray) -> np.ndarray:
        """Whether each product is recent: first bought within ``recent_span`` before now, or never."""
        first = self.first_seen[codes]
        return (first == MISSING) | (first >= self.now - self.recent_span)

    def scores(self, code: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(codes, association, pair count, lift) of a product's above-chance pairs (count where lift > 1)."""
        cached = self._scores.get(code)
        if cached is None:
            if int(self.counts[code]) == 0:
                empty = np.zeros(0, np.int64)
                cached = (empty, np.zeros(0), empty, np.zeros(0))
            else:
                codes, pair = self.row(code)
                lift = pair * float(self.baskets) / (float(self.counts[code]) * self.counts[codes])
                keep = lift > 1
                if self.candidate_ok is not None:
                    keep &= self.candidate_ok[codes]
                cached = (codes[keep], pair[keep].astype(np.float64), pair[keep], lift[keep])
            if len(self._scores) > 8192:
                self._scores.clear()
            self._scores[code] = cached
        return cached

    def popular(self, k: int) -> np.ndarray:
        """The ``k`` most bought candidate products, best first (ties by id)."""
        if self._popular is None or self._popular.shape[0] < k:
            ok = self.counts > 0
            if self.candidate_ok is not None:
                ok &= self.candidate_ok
            codes = np.flatnonzero(ok)
            order = np.lexsort((self.ids[codes], -self.counts[codes]))
            self._popular = codes[order[:k]]
        return self._popular[:k]


@dataclass
class Table:
    """Feature rows of a batch of queries: rows ``offsets[i]:offsets[i+1]`` are query ``i``'s candidates."""

    offsets: np.ndarray
    candidates: np.ndarray
    features: np.ndarray
    names: tuple[str, ...]
    via: np.ndarray  # per row, the donor code giving the strongest borrowed share (-1: none)
    via_sim: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.features[:, self.names.index(name)]


def parse_date(value: Any) -> int:
    """A catalog date value as int64 microseconds (``MISSING`` when absent or unreadable)."""
    if value in (None, ""):
        return MISSING
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return MISSING
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


def unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (a sort and a mask: faster than ``np.unique`` on the short arrays of one query)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


def _ranks(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.float64)


def _place(union: np.ndarray, codes: np.ndarray, values: np.ndarray, out: np.ndarray) -> None:
    out[np.searchsorted(union, codes)] = values


def _top(codes: np.ndarray, score: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best codes by score (ties by id), best first, and their scores."""
    if codes.size > k:
        keep = np.argpartition(-score, k - 1)[:k]
        threshold = score[keep].min()
        keep = np.flatnonzero(score >= threshold)  # ties at the cut: the id order decides, below
        codes, score = codes[keep], score[keep]
    order = np.lexsort((ids[codes], -score))[:k]
    return codes[order], score[order]


#: The single-signal lists the ranker boosts from (see :func:`baseline_scores`), in the order ties are settled.
BASELINES = ("text", "behaviour", "popularity")


def rank_score(rank: np.ndarray) -> np.ndarray:
    """A decreasing score of a 1-based rank: ``-log2(1 + rank)``; ``NOT_RANKED`` (and beyond) gets the lowest."""
    return -np.log2(1.0 + np.minimum(rank, NOT_RANKED))


def baseline_scores(name: str, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Per feature row, the score that orders a query's candidates as the single-signal list ``name`` does (the
    ranker starts from it: LightGBM's ``init_score`` at fit, added to the trees' output at serving). Worked out from
    the row's own features only, so fit and serving agree, and no score depends on the catalog's row order (ties are
    settled by product id where the list is ordered):

    - ``text``: the text neighbours by rank;
    - ``popularity``: the most bought products by rank;
    - ``behaviour``: the query's own bought-together products by rank, then the rest by popularity (a product
      without behaviour gets the popularity list).
    """
    column = {n: i for i, n in enumerate(names)}
    if name == "text":
        return rank_score(x[:, column["text_rank"]])
    if name == "popularity":
        return rank_score(x[:, column["popularity_rank"]])
    if name == "behaviour":
        own = x[:, column["behaviour_rank"]]
        fallback = rank_score(x[:, column["popularity_rank"]]) - np.log2(1.0 + NOT_RANKED)  # below every own row
        return np.where(own < NOT_RANKED, rank_score(own), fallback)
    raise ValueError(f"unknown baseline {name!r} (one of {', '.join(BASELINES)})")


def attribute_features(view: View) -> tuple[str, ...]:
    """The attribute features this view's catalog supports."""
    out = []
    if view.price is not None and np.isfinite(view.price).any():
        out.append("price_ratio")
    if view.category is not None and (view.category >= 0).any():
        out.append("same_category")
    if view.brand is not None and (view.brand >= 0).any():
        out.append("same_brand")
    if view.date is not None and (view.date != MISSING).any():
        out += ["date_age_days", "date_gap_days"]
    return tuple(out)


def build(
    view: View,
    queries: np.ndarray,
    text: list[tuple[np.ndarray, np.ndarray]],
    *,
    k: int = 100,
    names: tuple[str, ...] | None = None,
) -> Table:
    """Candidates and feature rows for ``queries`` (codes) given each query's text neighbours (codes, cosines, best
    first, the query itself and non-candidates already left out)."""
    names = names or (*BASE_FEATURES, *attribute_features(view))
    column = {name: i for i, name in enumerate(names)}
    popular = view.popular(k)
    blocks: list[np.ndarray] = []
    cand_blocks: list[np.ndarray] = []
    via_blocks: list[np.ndarray] = []
    via_sim_blocks: list[np.ndarray] = []
    offsets = [0]
    for q, (t_codes, t_sims) in zip(queries.tolist(), text, strict=True):
        t_codes = np.asarray(t_codes, dtype=np.int64)
        t_sims = np.asarray(t_sims, dtype=np.float64)
        recent_mask = view.recent(t_codes) if t_codes.size else np.zeros(0, bool)
        r_codes = t_codes[recent_mask][:k]
        b_codes, b_assoc, b_pair, b_lift = view.scores(q)
        b_top, _ = _top(b_codes, b_assoc, view.ids, k)
        tr_codes, tr_values, via, via_sim = _transfer(view, q, t_codes, t_sims)
        tr_top, _ = _top(tr_codes, tr_values, view.ids, k)
        union = unique(np.concatenate([t_codes[:k], r_codes, b_top, tr_top, popular[popular != q]]))
        n = union.shape[0]
        x = np.full((n, len(names)), np.nan)
        col = np.full(n, -1.0)
        _place(union, t_codes[:k], t_sims[:k], col)
        # text of candidates found beyond the first k (recent ones) is known too
        in_list = union[np.minimum(np.searchsorted(union, t_codes), n - 1)] == t_codes if n else t_codes < 0
        _place(union, t_codes[in_list], t_sims[in_list], col)
        x[:, column["text_sim"]] = col
        for name, codes in (("text_rank", t_codes[:k]), ("recent_rank", r_codes), ("behaviour_rank", b_top)):
            col = np.full(n, NOT_RANKED)
            _place(union, codes, _ranks(codes.shape[0]), col)
            x[:, column[name]] = col
        col = np.full(n, NOT_RANKED)
        _place(union, tr_top, _ranks(tr_top.shape[0]), col)
        x[:, column["transfer_rank"]] = col
        p = popular[popular != q]
        col = np.full(n, NOT_RANKED)
        _place(union, p, _ranks(p.shape[0]), col)
        x[:, column["popularity_rank"]] = col
        # values over every candidate of the union
        pair, lift, share = np.zeros(n), np.zeros(n), np.zeros(n)
        if b_codes.size:
            order = np.argsort(b_codes)
            sorted_codes = b_codes[order]
            pos = np.minimum(np.searchsorted(sorted_codes, union), sorted_codes.size - 1)
            hit = sorted_codes[pos] == union
            src = order[pos][hit]
            pair[hit] = b_pair[src]
            lift[hit] = b_lift[src]
            share[hit] = b_assoc[src] / b_assoc.max()
        x[:, column["pair_count"]] = pair
        x[:, column["pair_lift"]] = lift
        x[:, column["behaviour_share"]] = share
        tpos = np.minimum(np.searchsorted(tr_codes, union), max(tr_codes.size - 1, 0))
        thit = tr_codes[tpos] == union if tr_codes.size else np.zeros(n, bool)
        x[:, column["transfer"]] = np.where(thit, tr_values[tpos] if tr_values.size else 0, 0.0)
        row_via = np.where(thit, via[tpos] if via.size else -1, -1)
        row_via_sim = np.where(thit, via_sim[tpos] if via_sim.size else 0.0, 0.0)
        c_count = view.counts[union].astype(np.float64)
        q_count = float(view.counts[q])
        x[:, column["candidate_baskets"]] = np.log1p(c_count)
        x[:, column["query_baskets"]] = np.log1p(q_count)
        c_first = view.first_seen[union]
        q_first = int(view.first_seen[q])
        x[:, column["candidate_age_days"]] = np.where(c_first == MISSING, -1.0, (view.now - c_first) / DAY_US)
        x[:, column["query_age_days"]] = -1.0 if q_first == MISSING else (view.now - q_first) / DAY_US
        x[:, column["candidate_new"]] = (c_count == 0).astype(np.float64)
        x[:, column["both_new"]] = ((c_count == 0) & (q_count == 0)).astype(np.float64)
        gap = np.abs(c_first - q_first) / DAY_US
        x[:, column["first_seen_gap_days"]] = np.where((c_first == MISSING) | (q_first == MISSING), -1.0, gap)
        x[:, column["candidate_recent"]] = view.recent(union).astype(np.float64)
        ranked = x[:, [column[c] for c in ("text_rank", "recent_rank", "behaviour_rank", "transfer_rank")]]
        x[:, column["signals"]] = (ranked < NOT_RANKED).sum(axis=1) + (x[:, column["popularity_rank"]] < NOT_RANKED)
        blocks.append(x)
        cand_blocks.append(union)
        via_blocks.append(row_via)
        via_sim_blocks.append(row_via_sim)
        offsets.append(offsets[-1] + n)
    # Attributes last: loaded once for every query and candidate, then written into each query's rows.
    if view.load_attributes is not None and cand_blocks:
        view.load_attributes(unique(np.concatenate([queries, *cand_blocks])))
    for q, union, x in zip(queries.tolist(), cand_blocks, blocks, strict=True):
        _attributes(view, q, union, x, column)
    width = len(names)
    return Table(
        np.asarray(offsets, dtype=np.int64),
        np.concatenate(cand_blocks) if cand_blocks else np.zeros(0, np.int64),
        np.concatenate(blocks) if blocks else np.zeros((0, width)),
        names,
        np.concatenate(via_blocks) if via_blocks else np.zeros(0, np.int64),
        np.concatenate(via_sim_blocks) if via_sim_blocks else np.zeros(0),
    )


def _transfer(
    view: View, q: int, t_codes: np.ndarray, t_sims: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Borrowed behaviour: ``sum_w sim(q,w) * assoc(w,c) / max assoc(w,.)`` over q's nearest text neighbours w with
    behaviour, divided by ``sum_w sim(q,w)``; sorted codes, values, and per code the donor with the largest share."""
    pick = np.flatnonzero((t_sims > 0) & (view.counts[t_codes] != 0))[:DONORS]
    donors = list(zip(t_codes[pick].tolist(), t_sims[pick].tolist(), strict=True))
    total = sum(s for _, s in donors)
    empty = np.zeros(0, np.int64)
    if total <= 0:
        return empty, np.zeros(0), empty, np.zeros(0)
    size = view.ids.shape[0]
    if view._buffers is None or view._buffers[0].shape[0] != size:
        view._buffers = (np.zeros(size), np.zeros(size), np.full(size, -1, np.int64), np.zeros(size))
    summed, strongest, donor_of, sim_of = view._buffers
    touched = []
    for w, s in donors:
        codes, assoc, _, _ = view.scores(w)
        if codes.size == 0:
            continue
        share = (s / total / assoc.max()) * assoc
        summed[codes] += share  # codes are distinct within one row
        better = share > strongest[codes]
        won = codes[better]
        strongest[won] = share[better]
        donor_of[won] = w
        sim_of[won] = s
        touched.append(codes)
    if not touched:
        return empty, np.zeros(0), empty, np.zeros(0)
    codes = unique(np.concatenate(touched))
    codes = codes[codes != q]
    out = (codes, summed[codes].copy(), donor_of[codes].copy(), sim_of[codes].copy())
    for codes in touched:  # reset only what this query touched
        summed[codes] = 0.0
        strongest[codes] = 0.0
        donor_of[codes] = -1
        sim_of[codes] = 0.0
    return out


def _attributes(view: View, q: int, union: np.ndarray, x: np.ndarray, column: dict[str, int]) -> None:
    if "price_ratio" in column and view.price is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.log(view.price[union] / view.price[q])
        x[:, column["price_ratio"]] = np.where(np.isfinite(ratio), ratio, np.nan)
    for name, values in (("same_category", view.category), ("same_brand", view.brand)):
        if name in column and values is not None:
            known = (values[union] >= 0) & (values[q] >= 0)
            x[:, column[name]] = np.where(known, (values[union] == values[q]).astype(np.float64), np.nan)
    if "date_age_days" in column and view.date is not None:
        dates = view.date[union]
        known = dates != MISSING
        x[:, column["date_age_days"]] = np.where(known, (view.now - dates) / DAY_US, np.nan)
        qd = int(view.date[q])
        gap = np.abs(dates - qd) / DAY_US
        x[:, column["date_gap_days"]] = np.where(known & (qd != MISSING), gap, np.nan)
