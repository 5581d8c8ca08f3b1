"""One variant rule for serving (``related --collapse base-code``) and training (pairs and batches)."""

from semassoc.ranking.variants import base_code, variant_group


def test_base_code_strips_trailing_letters_only_after_digits():
    assert base_code("85123A") == base_code("85123B") == base_code("85123") == "85123"
    assert base_code("79323LP") == "79323"
    # no digit before the letters: the id is its own group (it used to become "SKU-" when serving)
    assert base_code("SKU-AB") == "SKU-AB" != base_code("SKU-CD")
    assert base_code("BANK CHARGES") == "BANK CHARGES" and base_code("POST") == "POST"


def test_serving_collapses_with_the_training_rule():
    for product_id in ("85123A", "85123B", "SKU-AB", "SKU-CD", "POST", "22423", "X1Y"):
        assert variant_group(product_id, None, "base-code") == base_code(product_id)
    assert variant_group("a", {"attributes": {"model": "m1"}}, "model") == "m1"
    assert variant_group("a", {"model": ""}, "model") == "a"
