"""Product variants: one product sold in several colours, sizes or finishes, under ids that differ only by trailing
letters (85123A, 85123B) or texts that differ only by colour words.

The one place that decides it: ``related --collapse`` (serving) and the training pairs and batches (training) both
use :func:`base_code`, :func:`variant_group` and :func:`variant_reason`.
"""

from __future__ import annotations

import re
from typing import Any

#: Words that make two product texts differ only by colour (or finish): such pairs teach nothing about behaviour.
COLOUR_WORDS = frozenset(
    {
        "red",
        "blue",
        "green",
        "yellow",
        "pink",
        "purple",
        "orange",
        "white",
        "black",
        "grey",
        "gray",
        "brown",
        "cream",
        "ivory",
        "beige",
        "gold",
        "golden",
        "silver",
        "bronze",
        "copper",
        "turquoise",
        "teal",
        "aqua",
        "navy",
        "lilac",
        "lavender",
        "mauve",
        "violet",
        "magenta",
        "fuchsia",
        "peach",
        "coral",
        "mint",
        "lime",
        "olive",
        "khaki",
        "multicolour",
        "multicolor",
        "assorted",
        "pastel",
        "spotty",
        "polkadot",
        "striped",
        "chocolate",
    }
)

_WORD = re.compile(r"\w+", re.UNICODE)
_TRAILING_LETTERS = re.compile(r"[A-Za-z]+$")


def base_code(product_id: str) -> str:
    """The product id without trailing letters when digits come before them (85123A, 85123B -> 85123).

    Example:
        >>> base_code("85123A"), base_code("79323LP"), base_code("POST"), base_code("SKU-1")
        ('85123', '79323', 'POST', 'SKU-1')
    """
    stripped = _TRAILING_LETTERS.sub("", product_id)
    return stripped if stripped and stripped[-1].isdigit() else product_id


def variant_group(product_id: str, payload: dict[str, Any] | None, collapse: str) -> str:
    """The variant group of a product: ``base-code`` is :func:`base_code` of the id (85123A -> 85123, the Online
    Retail convention); any other value names a catalog column holding the group."""
    if collapse == "base-code":
        return base_code(product_id)
    value = (payload or {}).get(collapse)
    if value is None:
        value = ((payload or {}).get("attributes") or {}).get(collapse)
    return str(value) if value not in (None, "") else product_id


def words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def colourless(text: str) -> frozenset[str]:
    return frozenset(w for w in words(text) if w not in COLOUR_WORDS)


def variant_reason(left: str, right: str, left_text: str, right_text: str, max_text_overlap: float = 0.8) -> str | None:
    """Why a pair is two variants of one product rather than two products bought together (None: it is not).

    - ``"same base code"``: the ids differ only by trailing letters (85123A / 85123B);
    - ``"colour variant"``: the rendered texts differ only by colour words (RED ... MUG / BLUE ... MUG);
    - ``"near-identical text"``: word Jaccard of the texts >= ``max_text_overlap``.

    Example:
        >>> variant_reason("1", "2", "RED SPOTTY MUG", "BLUE SPOTTY MUG")
        'colour variant'
        >>> variant_reason("1", "2", "CAKE STAND", "CAKE CASES") is None
        True
    """
    if base_code(left) == base_code(right):
        return "same base code"
    a, b = colourless(left_text), colourless(right_text)
    if a and a == b:
        return "colour variant"
    wa, wb = words(left_text), words(right_text)
    union = len(wa | wb)
    if union and len(wa & wb) / union >= max_text_overlap:
        return "near-identical text"
    return None
