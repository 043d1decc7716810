"""The one inference-engine interface (shaped like vLLM's ``LLM.generate``).

An engine is built once (it loads the model) and then called in batches::

    engine = make_engine("transformers", model="default")
    outs = engine.generate(prompts, GenerationParams(max_new_tokens=128))

Engine arguments (how to run: model, dtype, device) are constructor arguments; generation
parameters (what to generate) travel in :class:`GenerationParams`, per call.
A prompt is either plain text or a list of chat messages ``[{"role": ..., "content": ...}]``;
engines apply the model's chat template to messages when the model has one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmrec_gen.errors import ConfigError, EngineUnavailableError
from llmrec_gen.llm.adapters import AdapterRef

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class GenerationParams:
    """What to generate (per call); validated at construction (``ConfigError`` naming the field).

    Attributes:
        max_new_tokens: cap on generated tokens per prompt (a 10-title list needs ~120).
        temperature: 0 means greedy/beam (deterministic); > 0 samples.
        top_p: nucleus sampling mass (only when sampling).
        num_beams: beam width for free generation (1 = greedy).
        seed: RNG seed for sampling, so sampled runs are reproducible.
        stop: strings that end generation early (the text is cut before them).
        repetition_penalty: > 1 discourages repeating tokens (small models loop on one title
            without it; 1.0 = off, 1.1-1.5 typical).
        n: sequences returned per prompt (``Generation.texts``): the ``n`` best beams
            (needs ``num_beams >= n``) or ``n`` seeded samples (needs ``temperature > 0``).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    num_beams: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    n: int = 1

    def __post_init__(self) -> None:
        """Reject values every backend would fail on later, with a one-line ``ConfigError``."""
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1, got {self.num_beams}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0 and self.num_beams < self.n:
            raise ConfigError(
                f"n={self.n} sequences need num_beams >= n (beam search) or temperature > 0"
            )


@dataclass(frozen=True)
class Generation:
    """One prompt's output.

    Attributes:
        text: the generated continuation (prompt excluded, cut at the first stop string).
        n_prompt_tokens: prompt length in tokens (after the chat template).
        n_generated_tokens: number of generated tokens (of the first sequence).
        texts: every returned sequence, best first (``GenerationParams.n`` of them);
            ``texts[0] == text``. Empty means just ``(text,)``.
    """

    text: str
    n_prompt_tokens: int = 0
    n_generated_tokens: int = 0
    texts: tuple[str, ...] = ()

    @classmethod
    def of(cls, texts: Sequence[str], n_prompt_tokens: int, n_generated_tokens: int) -> Generation:
        """One prompt's output from its returned sequences, best first (``[""]`` if none)."""
        texts = list(texts) or [""]
        many = tuple(texts) if len(texts) > 1 else ()
        return cls(texts[0], n_prompt_tokens, n_generated_tokens, many)

    @property
    def all_texts(self) -> tuple[str, ...]:
        """Every returned sequence, best first (at least ``text``)."""
        return self.texts or (self.text,)


@dataclass(frozen=True)
class ConstrainedGeneration:
    """Top-k catalog titles from decoding constrained to a set of allowed titles.

    Attributes:
        titles: allowed titles, best first (every entry is one of the allowed titles).
        scores: the sequence log-probability (or beam score) of each title, aligned.
    """

    titles: list[str]
    scores: list[float] = field(default_factory=list)


def render_prompt(tokenizer: Any, prompt: Prompt) -> str:
    """The exact text a local model sees for ``prompt`` (shared by the local engines).

    Plain text is used as is. Chat messages are rendered with the tokenizer's chat template and
    the assistant generation prompt; when the last message is an ``assistant`` message, it is
    left open and the model continues it (``continue_final_message``), e.g. after ``"1."``.
    Without a chat template (a base model), messages are joined by blank lines.
    """
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        raise TypeError(f"a prompt is a str or a list of messages, got {type(prompt).__name__}")
    if tokenizer.chat_template:
        if prompt and prompt[-1]["role"] == "assistant":
            return tokenizer.apply_chat_template(
                prompt, continue_final_message=True, tokenize=False
            )
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return "\n\n".join(m["content"] for m in prompt) + "\n"


class Engine(ABC):
    """Base class for inference backends (transformers, vLLM, OpenAI-compatible server)."""

    name: str = "engine"

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        adapter: AdapterRef | None = None,
    ) -> list[Generation]:
        """Generate one continuation per prompt, batched; output order = input order.

        Args:
            prompts: plain strings or chat-message lists.
            params: generation parameters (defaults when ``None``).
            adapter: optional LoRA adapter (local engines load ``adapter.path``; servers get
                ``adapter.name``).
        """

    def generate_constrained(
        self,
        prompts: Sequence[Prompt],
        allowed: Sequence[Sequence[str]],
        k: int,
        adapter: AdapterRef | None = None,
    ) -> list[ConstrainedGeneration]:
        """Decode with output restricted to ``allowed[i]`` titles for prompt ``i``; top-``k`` each.

        Engines that cannot constrain decoding raise
        :class:`~llmrec_gen.errors.EngineUnavailableError`.
        """
        raise EngineUnavailableError(f"engine '{self.name}' does not support constrained decoding")

    def close(self) -> None:
        """Release resources (processes, GPU memory). Safe to call twice."""
        return None  # optional hook: engines without resources need not override it
