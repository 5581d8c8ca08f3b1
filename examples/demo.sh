#!/usr/bin/env bash
# The main job on the bundled example data (3,000 Online Retail II products, CC BY 4.0), embedded Qdrant store:
# index the catalog, learn behaviour and the ranker of `related`, then show related products for a few items. Sets up ./.venv on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh
export SEMASSOC_WORKSPACE="${SEMASSOC_WORKSPACE:-.semassoc-demo}"
data=examples/online_retail

semassoc index "$data/catalog.csv"
semassoc index "$data/catalog.csv"   # the daily re-run: nothing changed, nothing is encoded
for product in 85123A 22423 84879; do
  semassoc similar "$product" -k 5
done
semassoc search "christmas tree decoration" -k 5 --max-price 2
semassoc behavior build "$data/invoices.parquet" --preset online-retail
semassoc complements 85123A -k 5 --min-count 20
semassoc fit                         # learn how to rank `related` from these baskets (self-simulation, LightGBM)
semassoc related 85123A -k 5 --collapse base-code
semassoc recommend --history 85123A,22423 -k 5
semassoc batch related --all --out "$SEMASSOC_WORKSPACE/related.parquet"
semassoc rules "$data/invoices.parquet" --preset online-retail --min-support 0.02 --min-confidence 0.5 --top 5
semassoc info
