"""Test helper: a real OpenAI-compatible HTTP server backed by a real in-process engine.

:class:`OpenAITestServer` serves ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions`` from a stdlib ``ThreadingHTTPServer`` bound to ``127.0.0.1`` on a
free port, answering with an in-process engine (normally
:class:`~llmrec_gen.llm.engines.transformers.TransformersEngine`), so
:class:`~llmrec_gen.llm.engines.openai.OpenAIEngine` can be tested over real HTTP against known
outputs. Like ``vllm serve``, it serves LoRA adapters under their own model names and (optionally)
understands vLLM's choice constraint (``structured_outputs={"choice": [...]}`` or the older
``guided_choice``), answered with the engine's constrained decoding (``k=1``). Not shipped::

    with OpenAITestServer(engine, models={"tiny": None, "tiny-lora": "/path/adapter"}) as srv:
        client = OpenAIEngine("tiny", base_url=srv.url)

Requests are bounded (body size, prompts per request, ``max_tokens``) and engine calls are
serialized (engines are not thread-safe); the server records ``(path, model)`` of each request.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmrec_gen.llm.adapters import AdapterRef, resolve_adapter
from llmrec_gen.llm.engines.base import Engine, GenerationParams

MAX_BODY_BYTES = 1 << 20  # 1 MiB: prompts are a few KB; anything bigger is a test bug
MAX_PROMPTS = 64  # per /v1/completions request
MAX_TOKENS = 512  # per generation


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OpenAITestServer:
    """An OpenAI-compatible server on ``127.0.0.1:<free port>`` answering with ``engine``.

    Args:
        engine: the engine that generates (its ``adapter`` argument gets the adapter path).
        models: served model name -> adapter path (``None`` for the base model).
        choice_field: ``"structured_outputs"`` (vLLM >= 0.12), ``"guided_choice"`` (older vLLM)
            or ``None`` (reject both with HTTP 400, like the OpenAI API).

    Attributes:
        requests: ``(path, model)`` of every POST received, in order.
        bodies: the JSON body of every POST received, in order.
    """

    def __init__(
        self,
        engine: Engine,
        models: Mapping[str, str | None],
        choice_field: str | None = "structured_outputs",
    ) -> None:
        self.engine = engine
        self.models = dict(models)
        self.choice_field = choice_field
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:<port>/v1``."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> OpenAITestServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket. Safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ endpoints
    def _adapter(self, body: dict[str, Any]) -> AdapterRef | None:
        model = body.get("model")
        if model not in self.models:
            raise _BadRequest(404, f"The model `{model}` does not exist.")
        path = self.models[model]
        return resolve_adapter(path) if path is not None else None

    def _params(self, body: dict[str, Any]) -> GenerationParams:
        max_tokens = int(body.get("max_tokens") or 16)
        if not 1 <= max_tokens <= MAX_TOKENS:
            raise _BadRequest(400, f"max_tokens must be in [1, {MAX_TOKENS}]")
        if body.get("use_beam_search"):
            raise _BadRequest(400, "use_beam_search is not supported by the test server")
        stop = body.get("stop") or ()
        return GenerationParams(
            max_new_tokens=max_tokens,
            temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            seed=int(body.get("seed") or 0),
            stop=(stop,) if isinstance(stop, str) else tuple(stop),
            n=int(body.get("n") or 1),
        )

    def _choices(self, body: dict[str, Any]) -> list[str] | None:
        """The choice constraint, or ``None``; 400 for a spelling this server does not speak."""
        for name in ("structured_outputs", "guided_choice"):
            if name not in body:
                continue
            if name != self.choice_field:
                raise _BadRequest(400, f"Unrecognized request argument supplied: {name}")
            value = body[name]
            choices = value.get("choice") if isinstance(value, dict) else value
            if not isinstance(choices, list) or not choices:
                raise _BadRequest(400, f"{name} needs a non-empty choice list")
            return [str(c) for c in choices]
        return None

    def _constrained(
        self, prompt: Any, choices: list[str], adapter: AdapterRef | None
    ) -> tuple[str, float]:
        out = self.engine.generate_constrained([prompt], [choices], k=1, adapter=adapter)[0]
        return out.titles[0], out.scores[0]

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/completions``: a string or a list of strings."""
        adapter = self._adapter(body)
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
            raise _BadRequest(400, f"prompt must be a string or a list of 1-{MAX_PROMPTS} strings")
        if not all(isinstance(p, str) for p in prompts):
            raise _BadRequest(400, "token-id prompts are not supported by the test server")
        params = self._params(body)
        choices = self._choices(body)
        with self._lock:
            if choices is not None:
                picks = [self._constrained(p, choices, adapter) for p in prompts]
                out = [
                    {"index": i, "text": t, "finish_reason": "stop", "logprobs": _lp(t, s, body)}
                    for i, (t, s) in enumerate(picks)
                ]
                usage = {"prompt_tokens": 0, "completion_tokens": len(picks)}
            else:
                gens = self.engine.generate(prompts, params, adapter=adapter)
                texts = [t for g in gens for t in g.all_texts]  # n choices per prompt, in order
                out = [
                    {"index": i, "text": t, "finish_reason": "stop", "logprobs": None}
                    for i, t in enumerate(texts)
                ]
                usage = {
                    "prompt_tokens": sum(g.n_prompt_tokens for g in gens),
                    "completion_tokens": sum(g.n_generated_tokens for g in gens),
                }
        return _envelope("text_completion", body["model"], out, usage)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/chat/completions``: one conversation."""
        adapter = self._adapter(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(400, "messages must be a non-empty list")
        params = self._params(body)
        choices = self._choices(body)
        with self._lock:
            if choices is not None:
                title, score = self._constrained(messages, choices, adapter)
                logprobs = {"content": [{"token": title, "logprob": score}]}
                message = {"role": "assistant", "content": title}
                usage = {"prompt_tokens": 0, "completion_tokens": 1}
            else:
                gen = self.engine.generate([messages], params, adapter=adapter)[0]
                logprobs = None
                messages_out = [{"role": "assistant", "content": t} for t in gen.all_texts]
                usage = {
                    "prompt_tokens": gen.n_prompt_tokens,
                    "completion_tokens": gen.n_generated_tokens,
                }
        if choices is not None:
            messages_out = [message]
        out = [
            {"index": i, "message": m, "finish_reason": "stop", "logprobs": logprobs}
            for i, m in enumerate(messages_out)
        ]
        return _envelope("chat.completion", body["model"], out, usage)

    def list_models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        data = [{"id": m, "object": "model", "owned_by": "llmrec-gen-tests"} for m in self.models]
        return {"object": "list", "data": data}


def _lp(title: str, score: float, body: dict[str, Any]) -> dict[str, Any] | None:
    """Completions-style logprobs: the whole title as one 'token' carrying the engine's score."""
    if body.get("logprobs") is None:
        return None
    return {"tokens": [title], "token_logprobs": [score], "top_logprobs": None, "text_offset": [0]}


def _envelope(obj: str, model: str, choices: list[dict], usage: dict[str, int]) -> dict[str, Any]:
    usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    return {
        "id": f"test-{time.monotonic_ns()}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAITestServer
    timeout = 60  # seconds a connection may stay idle
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers (httpx pools connections)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(
            status, {"error": {"message": message, "type": "BadRequestError", "code": status}}
        )

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, self.owner.list_models())
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        routes = {
            "/v1/completions": self.owner.completions,
            "/v1/chat/completions": self.owner.chat,
        }
        route = routes.get(self.path.rstrip("/"))
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._error(413, f"request body over {MAX_BODY_BYTES} bytes")
            return
        raw = self.rfile.read(length)
        if route is None:
            self._error(404, f"no route {self.path}")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise _BadRequest(400, "the body must be a JSON object")
            self.owner.requests.append((self.path, str(body.get("model"))))
            self.owner.bodies.append(body)
            self._send(200, route(body))
        except json.JSONDecodeError:
            self._error(400, "the body is not JSON")
        except _BadRequest as err:
            self._error(err.status, str(err))
        except Exception as err:  # an engine failure is the server's fault: 500, like vLLM
            self._error(500, f"{type(err).__name__}: {err}")
