"""Shared fixtures: small real files, the deterministic hashing encoder, and the path to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semassoc.text.encoder import HashingEncoder

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "online_retail"


#: Set to 1 (CI does) to make a test whose shared data is missing fail instead of skip.
REQUIRE_SHARED_DATA = "SEMASSOC_REQUIRE_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$SEMASSOC_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("SEMASSOC_SHARED_DATA") or REPO.parent / "shared" / "data")


def require_shared(relative: str) -> Path:
    """The path ``relative`` under the shared data folder, for a test that needs it.

    Missing: the test is skipped with the path it looked for (a user's clone without the data), or fails when
    ``SEMASSOC_REQUIRE_SHARED_DATA=1`` (CI, where a silent skip would hide the test).
    """
    path = shared_data_dir() / relative
    if not path.exists():
        reason = f"shared data not found at {path} (set SEMASSOC_SHARED_DATA to the shared/data folder)"
        if os.environ.get(REQUIRE_SHARED_DATA) == "1":
            pytest.fail(f"{reason}; {REQUIRE_SHARED_DATA}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
def encoder() -> HashingEncoder:
    return HashingEncoder(64)


CATALOG_CSV = """product_id,title,description,category,brand,price,in_stock
m1,Red enamel mug,"A <b>red</b> enamel mug &amp; saucer, 350&nbsp;ml.",kitchen,Acme,4.50,yes
m2,Blue enamel mug,A blue enamel mug for camping.,kitchen,Acme,4.75,yes
m3,Green ceramic mug,A green stoneware mug.,kitchen,Potter,9.00,no
t1,Cotton tea towel,Striped cotton tea towel.,kitchen,Weaver,3.20,yes
c1,Scented candle vanilla,Vanilla candle in a glass jar.,home,Glow,6.00,yes
c2,Scented candle lavender,Lavender candle in a glass jar.,home,Glow,6.00,no
l1,Hanging heart t-light holder,White metal heart t-light holder.,home,Glow,2.95,yes
l2,Red hanging heart t-light holder,Red metal heart t-light holder.,home,Glow,2.95,yes
"""


@pytest.fixture
def catalog_csv(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.csv"
    path.write_text(CATALOG_CSV, encoding="utf-8")
    return path
