"""Rebuild examples/online_retail/ from the full UCI Online Retail II file (CC BY 4.0).

    python examples/make_online_retail_subset.py ../shared/data/online_retail/online_retail_II_2009-2010.parquet

Products: the 3,000 stock codes with the most valid invoices in 2009-12 .. 2010-12, titled by their most frequent
description, priced by their median unit price, grouped by base code (the stock code without its variant letter).
Invoices: every line of those products from 2010-06-01 on, cancellations included (semassoc's filters remove them).
"""

from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

NON_PRODUCT = {"POST", "D", "M", "DOT", "BANK CHARGES", "AMAZONFEE", "C2", "CRUK", "PADS", "S", "B", "m"}
N_PRODUCTS = 3000
EVENTS_FROM = "2010-06-01"


def is_product(code: str) -> bool:
    return code not in NON_PRODUCT and not code.startswith(("DCGS", "gift_0001_"))


def main(source: str) -> None:
    out = Path(__file__).resolve().parent / "online_retail"
    table = pq.read_table(source)
    rows = table.to_pylist()
    invoices: dict[str, set[str]] = defaultdict(set)
    titles: dict[str, Counter] = defaultdict(Counter)
    prices: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        code, desc = r["StockCode"], (r["Description"] or "").strip()
        if not is_product(code) or r["Invoice"].startswith("C") or r["Quantity"] <= 0:
            continue
        invoices[code].add(r["Invoice"])
        if desc and desc != "nan" and r["Price"] > 0:
            titles[code][desc] += 1
            prices[code].append(r["Price"])
    ranked = sorted((c for c in invoices if titles[c]), key=lambda c: (-len(invoices[c]), c))[:N_PRODUCTS]
    keep = set(ranked)
    catalog = pa.table(
        {
            "product_id": ranked,
            "title": [titles[c].most_common(1)[0][0] for c in ranked],
            "price": [round(median(prices[c]), 2) for c in ranked],
            "group": [re.sub(r"[A-Za-z]+$", "", c) or c for c in ranked],
        }
    )
    pacsv.write_csv(catalog.sort_by("product_id"), out / "catalog.csv")
    mask = pc.and_(
        pc.is_in(table["StockCode"], pa.array(sorted(keep))), pc.greater_equal(table["InvoiceDate"], EVENTS_FROM)
    )
    events = table.filter(mask).drop_columns(["Description"])
    pq.write_table(events, out / "invoices.parquet", compression="zstd")
    print(f"{catalog.num_rows} products, {events.num_rows} invoice lines -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/online_retail/online_retail_II_2009-2010.parquet")
