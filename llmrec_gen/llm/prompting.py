"""Verbalizing users into prompts from versioned Jinja2 templates in ``prompts/``.

A template's id is its file name without ``.j2`` (e.g. ``zeroshot-v1``); a changed template is a
new file (``-v2``), and every output records the id. Templates write chat messages with role
markers on their own line (``@@system``, ``@@user``, ``@@assistant``); the engine applies the
model's chat template. The fixed instruction (and few-shot demonstrations) come first and the
user's part last, so engines with prefix caching share the common prefix across users.

Item text is data: it is flattened to one line, stripped of control characters and role markers
and truncated, and the instructions tell the model never to follow text inside titles.
"""

from __future__ import annotations

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
from llmrec_gen.data.train_data import TrainData
from llmrec_gen.errors import EmptyHistoryError, TemplateError

Messages = list[dict[str, str]]
ROLE_MARKER = re.compile(r"^@@(system|user|assistant)\s*$", re.MULTILINE)
ITEM_FIELDS = ("title", "year", "genres", "rating")
ItemField = Literal["title", "year", "genres", "rating"]
DEFAULT_TEMPLATE = "zeroshot-v1"


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

        env = jinja2.Environment()
        return frozenset(meta.find_undeclared_variables(env.parse(self.source)))

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


@lru_cache(maxsize=64)
def _compile(template_id: str, source: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
    try:
        return env.from_string(source)
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


def clean_text(text: str, max_chars: int = 120) -> str:
    """Make item text safe to embed: one line, no control chars or role markers, bounded length."""
    text = unicodedata.normalize("NFC", str(text))
    text = _CONTROL.sub(" ", text).replace("@@", "")
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def format_title(title: str, year: Any) -> str:
    """``"Toy Story (1995)"``: the form in which the model reads and writes titles."""
    title = clean_text(title)
    return f"{title} ({int(year)})" if pd.notna(year) else title


def format_item(
    row: Any, fields: Sequence[str] = ("title", "year"), rating: float | None = None
) -> str:
    """Verbalize one catalog row with the chosen fields (title always included)."""
    text = format_title(row.title, row.year) if "year" in fields else clean_text(row.title)
    if "genres" in fields and row.genres:
        text += f" [{clean_text(row.genres.replace('|', ', '))}]"
    if "rating" in fields and rating is not None:
        text += f" - rated {rating:g}/5"
    return text


def format_answer(titles: Sequence[str]) -> str:
    """The list format the model is asked for and the parser reads: ``"1. A (1995)\\n2. B"``."""
    return "\n".join(f"{n}. {t}" for n, t in enumerate(titles, start=1))


@dataclass(frozen=True)
class Demonstration:
    """A few-shot example from another user's training data: history -> next items."""

    user_id: Any
    history: list[str]
    answer: list[str]


class PromptConfig(StrictModel):
    """How a user is verbalized (template, history window, item fields, demonstrations)."""

    template: str = DEFAULT_TEMPLATE  # template id (`llmrec-gen prompt list`) or a .j2 path
    history_len: int = Field(20, ge=1)  # most recent history items shown (recency last); 10-50
    fields: tuple[ItemField, ...] = ("title", "year")  # item fields shown in the history
    n_demos: int = Field(0, ge=0)  # few-shot demonstrations (0 = zero-shot; 1-5 typical)
    demo_history_len: int = Field(10, ge=1)  # history items in each demonstration; 5-20
    demo_answer_len: int = Field(5, ge=1)  # answer items in each demonstration; 3-10


class PromptBuilder:
    """Turns users into chat prompts with one template and fixed verbalization options.

    Args:
        config: a :class:`PromptConfig`, a mapping, or just a template id; keyword overrides
            are applied over it (``PromptBuilder("fewshot-v1", n_demos=2)``).

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

    def history_items(
        self, train: TrainData, user_id: Any, fields: Sequence[str] | None = None
    ) -> list[str]:
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
        ctx = {
            "history": self.history_items(train, user_id),
            "k": k,
            "demos": [d for d in demos if train.coerce_user(d.user_id) != own][: self.n_demos],
            "candidates": [format_item(r) for r in train.items(list(candidates)).itertuples()],
            "target": format_item(train.items([target]).iloc[0]) if target is not None else "",
        }
        return self._loaded.render(**ctx, **(extra or {}))


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
    next ``n_answer`` items (the answer), so no validation/test interaction can appear.
    """
    if n_demos <= 0:
        return []
    counts = train.interactions.groupby("user_id").size()
    eligible = np.sort(counts.index[counts >= history_len + n_answer].to_numpy())
    if len(eligible) == 0:
        raise EmptyHistoryError("no training user has enough interactions for demonstrations")
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
