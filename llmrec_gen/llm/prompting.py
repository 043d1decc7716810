"""Verbalizing users into prompts from versioned Jinja2 templates in ``prompts/``.

A template's id is its file name without ``.j2`` (e.g. ``zeroshot-v2``); a changed template is a
new file (``-v3``), and every output records the id. Templates write chat messages with role
markers on their own line (``@@system``, ``@@user``, ``@@assistant``); the engine applies the
model's chat template. The fixed instruction (and few-shot demonstrations) come first and the
user's part last, so engines with prefix caching share the common prefix across users.

Template context: ``history`` (the user's items, oldest first), ``demos``, ``candidates``,
``target`` (items as :class:`ItemText`: ``{{ item }}`` is the v1 line ``Title (Year) [Genres] -
rated 4/5``, ``{{ item.quoted }}`` the v2 form with the title as a quoted string, ``{{ item.title
}}`` the bare ``Title (Year)``), ``k``, ``domain`` (:class:`~llmrec_gen.data.dataset.Domain`:
``item``, ``items``, ``verb``, ``verb_past``, ``catalogue``) and ``count(n)`` ("1 movie",
"10 movies"); the filter ``cap`` capitalises the first letter.

Item text is data (defence in depth against prompt injection):

* :func:`clean_text` flattens it to one line, drops control characters, role markers and every
  chat-control marker of the common model families (``<|im_end|>``, ``<s>``, ``[INST]``, ...)
  and truncates it; the local engines also strip their own tokenizer's special tokens from
  message text (:func:`strip_special_tokens`).
* the v2 templates show titles as quoted strings and say that they are data, never instructions;
  item text that looks like an instruction is withheld from them (:attr:`ItemText.quoted`);
* few-shot demonstrations are never drawn from users who interacted with an item whose text
  looks like an instruction (:func:`looks_like_instruction`).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jinja2
import numpy as np
import pandas as pd
from pydantic import Field

from llmrec_gen.config import StrictModel, validate
from llmrec_gen.data.dataset import Domain
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import EmptyHistoryError, TemplateError
from llmrec_gen.prompts import DEFAULT_TEMPLATE, EXPLAIN_TEMPLATE, RATING_TEMPLATE

__all__ = ["DEFAULT_TEMPLATE", "EXPLAIN_TEMPLATE", "RATING_TEMPLATE"]  # re-exported defaults

Messages = list[dict[str, str]]
ROLE_MARKER = re.compile(r"^@@(system|user|assistant)\s*$", re.MULTILINE)
ITEM_FIELDS = ("title", "year", "genres", "rating")
ItemField = Literal["title", "year", "genres", "rating"]


def templates_dir() -> Path:
    """The directory holding the packaged templates (works from a wheel install too)."""
    return Path(str(resources.files("llmrec_gen.prompts")))


def list_templates() -> list[str]:
    """Ids of the packaged templates."""
    return sorted(p.stem for p in templates_dir().glob("*.j2"))


@dataclass(frozen=True)
class PromptTemplate:
    """A loaded template; :meth:`render` returns chat messages."""

    id: str
    source: str

    @property
    def _template(self) -> jinja2.Template:
        return _compile(self.id, self.source)

    @property
    def variables(self) -> frozenset[str]:
        """The context variables the template reads."""
        from jinja2 import meta

        return frozenset(meta.find_undeclared_variables(_environment().parse(self.source)))

    def render(self, **context: Any) -> Messages:
        """Render to ``[{"role": ..., "content": ...}, ...]``.

        Raises:
            TemplateError: the template uses an undefined variable or fails to render.
        """
        try:
            text = self._template.render(**context)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template '{self.id}': {_one_line(exc)}") from None
        return _to_messages(self.id, text)


def _cap(text: str) -> str:
    """``"movies"`` -> ``"Movies"`` (only the first letter; ``"TV shows"`` stays as is)."""
    return text[:1].upper() + text[1:]


def _environment() -> jinja2.Environment:
    """The one Jinja environment of the templates (strict undefined, the ``cap`` filter)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    env.filters["cap"] = _cap
    return env


@lru_cache(maxsize=64)
def _compile(template_id: str, source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template '{template_id}' line {exc.lineno}: {exc.message}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _to_messages(template_id: str, text: str) -> Messages:
    parts = ROLE_MARKER.split(text)
    if parts[0].strip():
        raise TemplateError(f"template '{template_id}': text before the first @@role marker")
    messages = [
        {"role": role, "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if not messages or messages[-1]["role"] != "user":
        raise TemplateError(f"template '{template_id}': must end with an @@user message")
    return messages


def load_template(name: str | Path = DEFAULT_TEMPLATE) -> PromptTemplate:
    """Load a packaged template by id, or a ``.j2`` file by path.

    Raises:
        TemplateError: unknown id, unreadable file or a syntax error (with the line number).
    """
    path = Path(name)
    if path.suffix != ".j2" or not path.exists():
        path = templates_dir() / f"{name}.j2"
    if not path.exists():
        raise TemplateError(
            f"unknown template {str(name)!r}; available: {', '.join(list_templates())}"
        )
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"template {str(name)!r}: cannot read ({_one_line(exc)})") from None
    template = PromptTemplate(id=path.stem, source=source)
    _compile(template.id, source)  # fail early on syntax errors
    return template


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 and C1 control characters
_SPECIAL_MARKERS = re.compile(
    r"<\s*[|\uff5c][^<>]{0,64}?[|\uff5c]\s*>"  # <|im_end|>, <|eot_id|>, <｜end▁of▁sentence｜>
    r"|<</?SYS>>"  # Llama 2 system block
    r"|\[/?(?:INST|SYS|SYSTEM_PROMPT|TOOL_CALLS|AVAILABLE_TOOLS|TOOL_RESULTS)\]"  # Llama 2, Mistral
    r"|</?[A-Za-z][A-Za-z0-9_.:-]{0,40}>",  # <s>, </s>, <unk>, <start_of_turn>, <repo_name>, ...
    re.IGNORECASE,
)
"""Chat-control markers of common model families (a tokenizer-independent, conservative rule:
it also drops HTML-like tags, which catalogue titles do not need)."""


def _strip_markers(text: str) -> str:
    # Repeat until stable: removing one marker may join the pieces of another ("<|im_<s>end|>").
    while True:
        cleaned = _SPECIAL_MARKERS.sub(" ", text).replace("@@", " ")
        if cleaned == text:
            return text
        text = cleaned


def clean_text(text: str, max_chars: int = 120) -> str:
    """Make item text safe to embed: one line, no control characters, role markers or
    chat-control markers (``<|im_end|>``, ``<s>``, ``[INST]``, ...), bounded length."""
    text = unicodedata.normalize("NFC", str(text))
    text = _strip_markers(_CONTROL.sub(" ", text))
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special-token string of a Hugging Face tokenizer: ``all_special_tokens`` plus the
    added tokens flagged special (SmolLM2 has 17: ``<|im_start|>``, ``<repo_name>``, ...)."""
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            found.add(str(token.content))
    return sorted(t for t in found if t)


def strip_messages(messages: Messages, special_tokens: Sequence[str]) -> Messages:
    """Messages with :func:`strip_special_tokens` applied to every content (roles untouched).

    Engines call it with :func:`special_token_strings` of their tokenizer just before
    ``apply_chat_template`` (and the OpenAI engine before sending), so that no text, from item
    titles to a user's custom template, can smuggle a control token into the prompt.
    """
    return [{**m, "content": strip_special_tokens(m["content"], special_tokens)} for m in messages]


def strip_special_tokens(text: str, special_tokens: Sequence[str]) -> str:
    """``text`` with every occurrence of the given special-token strings removed (repeatedly,
    so that removing one cannot join the pieces of another). The local engines apply it, with
    their tokenizer's special tokens, to message text before the chat template is applied."""
    tokens = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    while True:
        cleaned = text
        for token in tokens:
            cleaned = cleaned.replace(token, " ")
        if cleaned == text:
            return text
        text = cleaned


_INSTRUCTION = re.compile(
    r"\byou\s+(?:must|should|have\s+to|need\s+to|are\s+now|will\s+now|shall)\b"
    r"|\b(?:ignore|disregard|forget)\s+(?:(?:all|any|the|your|these|those|my)\s+)?"
    r"(?:previous|prior|earlier|above|instructions?|rules|prompts?|everything)\b"
    r"|\b(?:answer|respond|reply|output|print|write|say)\s+(?:only|exactly|just|with)\b"
    r"|\b(?:answer|respond|reply|output)\s*:"
    r"|\b(?:only\s+recommend|recommend\s+only)\b"
    r"|\b(?:system|assistant|user|human)\s*[:>\]]"
    r"|\b(?:system\s+prompt|new\s+instructions?|previous\s+instructions?|as\s+an\s+ai)\b"
    r"|(?:^|[:>\-\u2013])\s*1[.)]\s+\w"  # a numbered answer ("...: 1. Sponsored Pick")
    r"|https?://|\bwww\.",
    re.IGNORECASE,
)
MAX_TITLE_CHARS = 100
"""Longer item text fails :func:`looks_like_instruction` (the longest MovieLens title has 75)."""


WITHHELD_TITLE = "[title withheld: it reads like an instruction]"
"""What the v2 templates show instead of an item title that :func:`looks_like_instruction`."""


def looks_like_instruction(text: str) -> bool:
    """Whether item text looks like an instruction rather than a title.

    A conservative text check (no MovieLens-100k or -1M title fails it): imperative phrases
    aimed at the model ("you must", "ignore previous", "answer exactly", "recommend only"),
    role words followed by ``:``/``>``, a numbered answer, URLs, chat-control markers, or more
    than :data:`MAX_TITLE_CHARS` characters. Used to keep few-shot demonstrations away from
    users who interacted with such items, so one poisoned item cannot reach every prompt.
    """
    text = unicodedata.normalize("NFC", str(text))
    if len(text) > MAX_TITLE_CHARS or _SPECIAL_MARKERS.search(text) or "@@" in text:
        return True
    return bool(_INSTRUCTION.search(" ".join(_CONTROL.sub(" ", text).split())))


def format_title(title: str, year: Any) -> str:
    """``"Toy Story (1995)"``: the form in which the model reads and writes titles."""
    title = clean_text(title)
    return f"{title} ({int(year)})" if pd.notna(year) else title


class ItemText(str):
    """One item as a prompt shows it.

    ``str(item)`` is the v1 line ``"Toy Story (1995) [Animation, Comedy] - rated 4/5"`` (the
    fields chosen); :attr:`quoted` is the v2 form, the title as a quoted (JSON) string so that
    item text is visibly delimited as data: ``"\"Toy Story (1995)\" (genres: Animation,
    Comedy; rated 4/5)"``; :attr:`title` is the bare ``"Toy Story (1995)"``.
    """

    title: str
    genres: str
    rating: float | None

    def __new__(cls, title: str, genres: str = "", rating: float | None = None) -> ItemText:
        """Build from the cleaned title (with year), cleaned genres and an optional rating."""
        text = title + (f" [{genres}]" if genres else "")
        text += f" - rated {rating:g}/5" if rating is not None else ""
        obj = super().__new__(cls, text)
        obj.title, obj.genres, obj.rating = title, genres, rating
        return obj

    def __getnewargs__(self) -> tuple[Any, ...]:  # type: ignore[override]
        return self.title, self.genres, self.rating

    @property
    def quoted(self) -> str:
        """The v2 form: quoted title, then genres and rating in brackets.

        Text that :func:`looks_like_instruction` is withheld (:data:`WITHHELD_TITLE` for the
        title, genres left out): quoting alone does not stop a small model from obeying or
        copying it (``benchmarks/bench_injection.py``).
        """
        genres = "" if looks_like_instruction(self.genres) else self.genres
        extra = [f"genres: {genres}"] if genres else []
        extra += [f"rated {self.rating:g}/5"] if self.rating is not None else []
        title = WITHHELD_TITLE if looks_like_instruction(self.title) else self.title
        out = json.dumps(title, ensure_ascii=False)
        return out + (f" ({'; '.join(extra)})" if extra else "")


def format_item(
    row: Any, fields: Sequence[str] = ("title", "year"), rating: float | None = None
) -> ItemText:
    """Verbalize one catalog row with the chosen fields (title always included)."""
    title = format_title(row.title, row.year) if "year" in fields else clean_text(row.title)
    genres = clean_text(row.genres.replace("|", ", ")) if "genres" in fields and row.genres else ""
    return ItemText(title, genres, rating if "rating" in fields else None)


def format_answer(titles: Sequence[str]) -> str:
    """The list format the model is asked for and the parser reads: ``"1. A (1995)\\n2. B"``."""
    return "\n".join(f"{n}. {t}" for n, t in enumerate(titles, start=1))


def clean_domain(domain: Domain) -> Domain:
    """The domain wording with :func:`clean_text` applied (it is user-supplied text too)."""
    return Domain(**{k: clean_text(v, 60) or "item" for k, v in domain.model_dump().items()})


@dataclass(frozen=True)
class Demonstration:
    """A few-shot example from another user's training data: history -> next items."""

    user_id: Any
    history: list[ItemText]
    answer: list[ItemText]

    def __post_init__(self) -> None:
        """Plain strings are taken as already-formatted item text (cleaned here)."""
        for name in ("history", "answer"):
            items = getattr(self, name)
            items = [t if isinstance(t, ItemText) else ItemText(clean_text(t)) for t in items]
            object.__setattr__(self, name, items)


class PromptConfig(StrictModel):
    """How a user is verbalized (template, history window, item fields, demonstrations)."""

    template: str = DEFAULT_TEMPLATE  # template id (`llmrec-gen prompt list`) or a .j2 path
    history_len: int = Field(20, ge=1)  # most recent history items shown (recency last); 10-50
    fields: tuple[ItemField, ...] = ("title", "year")  # item fields shown in the history
    n_demos: int = Field(0, ge=0)  # few-shot demonstrations (0 = zero-shot; 1-5 typical)
    demo_history_len: int = Field(10, ge=1)  # history items in each demonstration; 5-20
    demo_answer_len: int = Field(5, ge=1)  # answer items in each demonstration; 3-10
    domain: Domain | None = None  # item noun/verb/catalogue wording; None = the dataset's own


class PromptBuilder:
    """Turns users into chat prompts with one template and fixed verbalization options.

    Args:
        config: a :class:`PromptConfig`, a mapping, or just a template id; keyword overrides
            are applied over it (``PromptBuilder("fewshot-v2", n_demos=2)``).

    Raises:
        ConfigError: an invalid config field.
        TemplateError: the template is unknown or has a syntax error.
    """

    def __init__(
        self, config: PromptConfig | Mapping[str, Any] | str | None = None, **overrides: Any
    ):
        if isinstance(config, PromptConfig):
            config = config.model_dump()
        elif isinstance(config, str):
            config = {"template": config}
        self.config = validate(PromptConfig, {**(config or {}), **overrides}, "prompt")
        self.history_len = self.config.history_len
        self.fields = tuple(self.config.fields)
        self.n_demos = self.config.n_demos
        self._loaded: PromptTemplate | None = load_template(self.config.template)

    @property
    def template_id(self) -> str:
        """Id of the loaded template (recorded with every output)."""
        assert self._loaded is not None
        return self._loaded.id

    def uses(self, variable: str) -> bool:
        """Whether the template reads ``variable`` (e.g. ``candidates``, ``target``)."""
        assert self._loaded is not None
        return variable in self._loaded.variables

    def demonstrations(self, train: TrainData, seed: int = 0) -> list[Demonstration]:
        """Few-shot demonstrations for this builder's config, from ``train`` only (seeded)."""
        c = self.config
        return draw_demonstrations(
            train,
            c.n_demos,
            history_len=c.demo_history_len,
            n_answer=c.demo_answer_len,
            fields=c.fields,
            seed=seed,
        )

    def domain(self, train: TrainData) -> Domain:
        """The wording used for ``train``: the config's ``domain``, else the dataset's (cleaned)."""
        return clean_domain(self.config.domain or train.domain)

    def history_items(
        self, train: TrainData, user_id: Any, fields: Sequence[str] | None = None
    ) -> list[ItemText]:
        """The user's most recent ``history_len`` training items, verbalized, oldest first."""
        items = train.history(user_id)
        if len(items) == 0:
            raise EmptyHistoryError(f"user {user_id!r} has no training interactions")
        ratings = train.history_ratings(user_id)[-self.history_len :]
        rows = train.items(items[-self.history_len :].tolist())
        use = fields or self.fields
        return [
            format_item(r, use, float(x)) for r, x in zip(rows.itertuples(), ratings, strict=True)
        ]

    def build(
        self,
        train: TrainData,
        user_id: Any,
        *,
        demos: Sequence[Demonstration] = (),
        candidates: Sequence[Any] = (),
        target: Any = None,
        k: int = 10,
        extra: Mapping[str, Any] | None = None,
    ) -> Messages:
        """Render the prompt for one user.

        Args:
            train: training data (the only source of history).
            user_id: the user.
            demos: few-shot demonstrations (from other users; this user's are skipped).
            candidates: item IDs for the re-ranking template.
            target: item ID for the rating/explanation templates.
            k: items to request.
            extra: further template variables (e.g. the ranker's candidate ``labels``).
        """
        assert self._loaded is not None
        own = train.coerce_user(user_id)  # "42", 42 and np.int64(42) are one user
        domain = self.domain(train)
        ctx = {
            "history": self.history_items(train, user_id),
            "k": k,
            "demos": [d for d in demos if train.coerce_user(d.user_id) != own][: self.n_demos],
            "candidates": [format_item(r) for r in train.items(list(candidates)).itertuples()],
            "target": (
                format_item(train.items([target]).iloc[0]) if target is not None else ItemText("")
            ),
            "domain": domain,
            "count": domain.count,
        }
        return self._loaded.render(**ctx, **(extra or {}))

    def content_free(self, train: TrainData, k: int = 10) -> Messages:
        """The prompt with no user content (empty history, no demonstrations): the same
        instructions and domain wording, for calibrating title scores against what the model
        writes for anyone (domain-conditional PMI, Holtzman et al. 2021)."""
        assert self._loaded is not None
        domain = self.domain(train)
        ctx = {
            "history": [],
            "k": k,
            "demos": [],
            "candidates": [],
            "target": ItemText(""),
            "domain": domain,
            "count": domain.count,
        }
        return self._loaded.render(**ctx)


def draw_demonstrations(
    train: TrainData,
    n_demos: int,
    *,
    history_len: int = 10,
    n_answer: int = 5,
    fields: Sequence[str] = ("title", "year"),
    seed: int = 0,
) -> list[Demonstration]:
    """Draw ``n_demos + 1`` demonstrations from training data only (seeded).

    One spare is drawn so that each user still gets ``n_demos`` after their own is skipped.
    Each demonstration splits a sampled user's *training* history into a prefix (shown) and the
    next ``n_answer`` items (the answer), so no validation/test interaction can appear. Users
    who interacted with an item whose text :func:`looks_like_instruction` are never drawn.
    """
    if n_demos <= 0:
        return []
    inter = train.interactions
    counts = inter.groupby("user_id").size()
    suspicious = suspicious_items(train.catalog)
    tainted = set(inter.loc[inter["item_id"].isin(suspicious), "user_id"].tolist())
    long_enough = counts.index[counts >= history_len + n_answer]
    eligible = np.sort(np.asarray([u for u in long_enough.tolist() if u not in tainted]))
    if len(eligible) == 0:
        raise EmptyHistoryError(
            "no training user has enough interactions (with item text that passes the "
            "instruction check) for demonstrations"
        )
    rng = np.random.default_rng(seed)
    users = rng.choice(eligible, size=min(n_demos + 1, len(eligible)), replace=False)
    demos = []
    for u in users.tolist():
        hist = train.history(u)
        cut = int(rng.integers(history_len, len(hist) - n_answer + 1))
        rows = train.items(hist[cut - history_len : cut + n_answer].tolist())
        text = [format_item(r, fields) for r in rows.itertuples()]
        demos.append(Demonstration(u, text[:history_len], text[history_len:]))
    return demos


def suspicious_items(catalog: pd.DataFrame) -> set[Any]:
    """IDs of catalogue items whose title or genres :func:`looks_like_instruction`."""
    return {
        i
        for i, t, g in zip(catalog["item_id"], catalog["title"], catalog["genres"], strict=True)
        if looks_like_instruction(t) or (g and looks_like_instruction(g))
    }
