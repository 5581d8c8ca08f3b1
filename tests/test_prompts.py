import pytest

from semassoc.catalog import Product
from semassoc.errors import InvalidInput
from semassoc.text.prompts import PromptSet, Template, default_prompts_dir


def test_lines_with_only_empty_placeholders_are_dropped():
    template = Template.parse("{title}\nBrand: {brand}\nCategory: {category}")
    assert template.render({"title": "Mug", "category": "kitchen"}) == "Mug\nCategory: kitchen"


def test_literal_braces_and_unknown_names_render_empty():
    template = Template.parse("{{size}} {title} {nothing}")
    assert template.render({"title": "Mug"}) == "{size} Mug"


@pytest.mark.parametrize(
    "text", ["{title.__class__}", "{title[0]}", "{title!r}", "{ title }", "{title", "a } b {title}"]
)
def test_templates_cannot_hold_expressions(text):
    with pytest.raises(InvalidInput, match="stray"):
        Template.parse(text, "t.txt")


def test_trim_shortens_only_trim_fields_to_the_budget():
    template = Template.parse("{title}\n{description|trim}")
    description = "First sentence here. " + "word " * 200
    text = template.render({"title": "Big red mug with handle", "description": description}, max_words=20)
    lines = text.split("\n")
    assert lines[0] == "Big red mug with handle"  # never cut
    assert len(text.split()) <= 20
    short = template.render({"title": "Mug", "description": "One. Two three four five six."}, max_words=3)
    assert short == "Mug\nOne."  # cut at the sentence end


def test_bundled_templates_render_a_product():
    prompts = PromptSet.load()
    product = Product("p1", "Red mug", description="Enamel.", category="kitchen")
    assert prompts.render_document(product.fields_for_prompt(), 256) == "Red mug\nCategory: kitchen\nEnamel."
    assert prompts.render_query("red mug") == "red mug"
    assert default_prompts_dir().is_dir()


def test_digest_changes_with_any_template(tmp_path):
    for name in ("document.txt", "query.txt", "history.txt"):
        (tmp_path / name).write_text((default_prompts_dir() / name).read_text())
    first = PromptSet.load(tmp_path).digest
    assert first == PromptSet.load().digest
    (tmp_path / "query.txt").write_text("query: {query}\n")
    assert PromptSet.load(tmp_path).digest != first


def test_template_must_use_title_and_query(tmp_path):
    (tmp_path / "document.txt").write_text("{description}\n")
    (tmp_path / "query.txt").write_text("{query}\n")
    (tmp_path / "history.txt").write_text("{history}\n")
    with pytest.raises(InvalidInput, match=r"must use \{title\}"):
        PromptSet.load(tmp_path)
    with pytest.raises(InvalidInput, match="cannot read document template"):
        PromptSet.load(tmp_path / "missing")


def test_history_template_trims_the_oldest_titles():
    prompts = PromptSet.load()
    titles = [f"title number {i}" for i in range(100)]
    text = prompts.render_history(titles, max_seq_length=40)
    assert text.startswith("Products bought recently: title number 0; title number 1;")
    assert "title number 99" not in text and len(text.split()) <= 30
