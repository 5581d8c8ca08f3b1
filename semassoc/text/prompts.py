"""Plain-text prompt templates that turn products and queries into encoder input.

Templates are data: ``{name}`` placeholders, ``{name|trim}`` for fields that may be shortened, ``{{``/``}}`` for
literal braces. Nothing in a template can run code. See ``prompts/README.md`` for the format.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from semassoc.errors import InvalidInput

#: The templates a prompt directory must hold, by role.
TEMPLATE_FILES = {"document": "document.txt", "query": "query.txt", "history": "history.txt"}

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)(\|trim)?\}|\{|\}")
_SENTENCE_END = re.compile(r"[.!?。！？]\s")

# Words -> word pieces: English product text averages about 1.3 word pieces per word for BERT-style tokenizers,
# so a budget of 0.75 words per token keeps rendered text inside the encoder's window without loading a tokenizer
# (rendering must stay cheap: it decides what needs encoding before any model is loaded).
WORDS_PER_TOKEN = 0.75


def default_prompts_dir() -> Path:
    """The bundled ``prompts/`` directory (inside the installed package, or at the root of a source checkout)."""
    package = Path(__file__).resolve().parent.parent  # semassoc/
    for candidate in (package / "_prompts", package.parent / "prompts"):
        if (candidate / TEMPLATE_FILES["document"]).is_file():
            return candidate
    raise InvalidInput(f"bundled prompts not found next to {package}; pass --prompts DIR")


@dataclass(frozen=True)
class _Field:
    name: str
    trim: bool


_Line = tuple[str | _Field, ...]


@dataclass(frozen=True)
class Template:
    """A parsed template. Render it with :meth:`render`."""

    name: str
    text: str
    lines: tuple[_Line, ...]

    @classmethod
    def parse(cls, text: str, name: str = "<template>") -> Template:
        """Parse template text; raise InvalidInput on a stray brace or an expression in a placeholder."""
        lines: list[_Line] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            parts: list[str | _Field] = []
            position = 0
            for match in _TOKEN.finditer(raw):
                if match.start() > position:
                    parts.append(raw[position : match.start()])
                token = match.group(0)
                if token in ("{{", "}}"):
                    parts.append(token[0])
                elif match.group(1):
                    parts.append(_Field(match.group(1), bool(match.group(2))))
                else:
                    raise InvalidInput(
                        f"{name}, line {number}: stray '{token}' at column {match.start() + 1}; placeholders are "
                        "{name} or {name|trim}, literal braces are {{ and }}"
                    )
                position = match.end()
            if position < len(raw):
                parts.append(raw[position:])
            lines.append(tuple(parts))
        if not any(isinstance(p, _Field) for line in lines for p in line):
            raise InvalidInput(f"{name}: the template has no placeholder")
        return cls(name=name, text=text, lines=tuple(lines))

    @property
    def fields(self) -> set[str]:
        """Names of the placeholders used."""
        return {p.name for line in self.lines for p in line if isinstance(p, _Field)}

    def render(self, values: dict[str, str], max_words: int | None = None) -> str:
        """Render with ``values`` (missing names render empty).

        Lines whose placeholders are all empty are dropped. When ``max_words`` is given and the text is longer,
        ``|trim`` fields are shortened (whole sentences where possible) to fit; other fields are never cut.
        """
        kept = [line for line in self.lines if self._line_has_value(line, values)]
        trimmed = dict(values)
        if max_words is not None:
            fixed_words = sum(_fixed_words(p, values) for line in kept for p in line)
            trim_names = [p.name for line in kept for p in line if isinstance(p, _Field) and p.trim]
            budget = max(0, max_words - fixed_words)
            for name in trim_names:
                trimmed[name] = _shorten(values.get(name, ""), budget)
                budget = max(0, budget - len(trimmed[name].split()))
        out = []
        for line in kept:
            text = "".join(trimmed.get(p.name, "") if isinstance(p, _Field) else p for p in line)
            text = text.strip()
            if text:
                out.append(text)
        return "\n".join(out)

    @staticmethod
    def _line_has_value(line: _Line, values: dict[str, str]) -> bool:
        placeholders = [p for p in line if isinstance(p, _Field)]
        return not placeholders or any(values.get(p.name, "").strip() for p in placeholders)


def _fixed_words(part: str | _Field, values: dict[str, str]) -> int:
    """Words of a template part that trimming cannot remove."""
    if isinstance(part, _Field):
        return 0 if part.trim else len(values.get(part.name, "").split())
    return len(part.split())


def _shorten(text: str, max_words: int) -> str:
    words = text.split()
    if len(words) <= max_words:
        return text
    if max_words == 0:
        return ""
    cut = " ".join(words[:max_words])
    # Prefer ending on a sentence boundary when that keeps most of the allowance.
    ends = [m.end() for m in _SENTENCE_END.finditer(cut + " ")]
    if ends and ends[-1] >= 0.6 * len(cut):
        return cut[: ends[-1]].strip()
    return cut


@dataclass(frozen=True)
class PromptSet:
    """The templates of one prompt directory, with a digest that changes whenever any of them changes."""

    directory: Path
    document: Template
    query: Template
    history: Template
    digest: str

    @classmethod
    def load(cls, directory: str | Path | None = None) -> PromptSet:
        """Load ``document.txt``, ``query.txt`` and ``history.txt`` from ``directory`` (default: the bundled ones)."""
        # Absolute, so that the path stored in a workspace manifest means the same from any working directory.
        directory = Path(directory).expanduser().resolve() if directory is not None else default_prompts_dir()
        texts: dict[str, str] = {}
        for role, filename in TEMPLATE_FILES.items():
            path = directory / filename
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise InvalidInput(f"{path}: cannot read {role} template: {exc.strerror or exc}") from None
            try:
                texts[role] = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = data.count(b"\n", 0, exc.start) + 1
                raise InvalidInput(
                    f"{path}: row {line}: the {role} template is not UTF-8 text (byte 0x{data[exc.start]:02x})"
                ) from None
        digest = hashlib.sha256(
            "\0".join(f"{role}\0{texts[role]}" for role in sorted(texts)).encode("utf-8")
        ).hexdigest()[:16]
        document = Template.parse(texts["document"], str(directory / TEMPLATE_FILES["document"]))
        query = Template.parse(texts["query"], str(directory / TEMPLATE_FILES["query"]))
        history = Template.parse(texts["history"], str(directory / TEMPLATE_FILES["history"]))
        if "query" not in query.fields:
            raise InvalidInput(f"{directory / TEMPLATE_FILES['query']}: the query template must use {{query}}")
        if "title" not in document.fields:
            raise InvalidInput(f"{directory / TEMPLATE_FILES['document']}: the document template must use {{title}}")
        if "history" not in history.fields:
            raise InvalidInput(f"{directory / TEMPLATE_FILES['history']}: the history template must use {{history}}")
        return cls(directory=directory, document=document, query=query, history=history, digest=digest)

    def render_document(self, values: dict[str, str], max_seq_length: int | None = None) -> str:
        """Render one product's fields for an encoder whose window is ``max_seq_length`` tokens."""
        return self.document.render(values, _word_budget(max_seq_length))

    def render_query(self, query: str, max_seq_length: int | None = None) -> str:
        """Render free text typed by a person."""
        return self.query.render({"query": query}, _word_budget(max_seq_length))

    def render_history(self, titles: list[str], max_seq_length: int | None = None) -> str:
        """Render a user's history (titles, most recent first); the oldest titles are trimmed first."""
        return self.history.render({"history": "; ".join(titles)}, _word_budget(max_seq_length))


def _word_budget(max_seq_length: int | None) -> int | None:
    return None if not max_seq_length else max(8, int(max_seq_length * WORDS_PER_TOKEN))


def text_hash(text: str) -> str:
    """The content hash used to decide whether a text needs (re-)encoding."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
