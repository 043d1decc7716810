"""OpenAIEngine over real HTTP against a test server that runs a real TransformersEngine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from llm_fixtures import (  # noqa: F401  (pytest fixtures)
    default_model_dir,
    tiny_adapter_dir,
    tiny_model_dir,
)
from openai_server import OpenAITestServer

from llmrec_gen.errors import EngineUnavailableError
from llmrec_gen.llm.adapters import resolve_adapter
from llmrec_gen.llm.engines.base import GenerationParams

pytest.importorskip("httpx")

TEXT_PROMPTS = [
    "Movies I liked: Toy Story (1995), Heat (1995). Next:",
    "Recommend a film",
    "The best movie of 1977 is",
    "Users who watched Fargo (1996) also watched",
    "Alien (1979), Aliens (1986),",
]
CHATS = [
    [{"role": "user", "content": "I liked Toy Story (1995). Recommend one movie."}],
    [
        {"role": "system", "content": "You recommend movies."},
        {"role": "user", "content": "Something like Heat (1995)?"},
    ],
]
TITLES = ["Star Wars (1977)", "Fargo (1996)", "Contact (1997)", "Scream (1996)", "Heat (1995)"]
GREEDY = GenerationParams(max_new_tokens=12)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):  # noqa: F811
    from llmrec_gen.llm.engines.transformers import TransformersEngine

    eng = TransformersEngine(str(tiny_model_dir), device="cpu", batch_size=4)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def server(engine, tiny_adapter_dir: Path):  # noqa: F811
    models = {"tiny": None, "tiny-lora": str(tiny_adapter_dir)}
    with OpenAITestServer(engine, models=models) as srv:
        yield srv


@pytest.fixture
def client(server):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    server.requests.clear()
    server.bodies.clear()
    eng = OpenAIEngine("tiny", base_url=server.url, timeout=60)
    yield eng
    eng.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_completions_greedy_text_equals_the_engine_directly(client, server, engine):
    got = client.generate(TEXT_PROMPTS, GREEDY)
    assert [p for p, _ in server.requests] == ["/v1/completions"]  # one batched request
    assert [g.text for g in got] == [g.text for g in engine.generate(TEXT_PROMPTS, GREEDY)]


def test_single_prompt_requests_carry_exact_token_counts(client, engine):
    got = client.generate(TEXT_PROMPTS[:1], GREEDY)
    assert got == engine.generate(TEXT_PROMPTS[:1], GREEDY)
    assert got[0].n_prompt_tokens > 0 and got[0].n_generated_tokens > 0


def test_completions_are_batched_in_lists_of_max_batch_size(server, engine):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    server.requests.clear()
    with_batches = OpenAIEngine("tiny", base_url=server.url, max_batch_size=2)
    try:
        texts = [g.text for g in with_batches.generate(TEXT_PROMPTS, GREEDY)]
    finally:
        with_batches.close()
    assert [p for p, _ in server.requests] == ["/v1/completions"] * 3  # 5 prompts, 2 per request
    assert texts == [engine.generate([p], GREEDY)[0].text for p in TEXT_PROMPTS]


def test_chat_prompts_use_the_chat_endpoint_and_match(client, server, engine):
    got = client.generate(CHATS, GREEDY)
    assert [p for p, _ in server.requests] == ["/v1/chat/completions"] * len(CHATS)
    want = [engine.generate([c], GREEDY)[0] for c in CHATS]
    assert [g.text for g in got] == [w.text for w in want]
    # one conversation per request, so the server's usage is exactly this prompt's
    assert [(g.n_prompt_tokens, g.n_generated_tokens) for g in got] == [
        (w.n_prompt_tokens, w.n_generated_tokens) for w in want
    ]


def test_mixed_batch_keeps_input_order(client, engine):
    prompts = [TEXT_PROMPTS[0], CHATS[0], TEXT_PROMPTS[1], CHATS[1]]
    got = [g.text for g in client.generate(prompts, GREEDY)]
    assert got == [engine.generate([p], GREEDY)[0].text for p in prompts]


def test_stop_strings_cut_the_text(client, engine):
    full = engine.generate([TEXT_PROMPTS[0]], GenerationParams(max_new_tokens=12))[0].text
    stop = full.strip()[:2]
    params = GenerationParams(max_new_tokens=12, stop=(stop,))
    got = client.generate([TEXT_PROMPTS[0]], params)[0].text
    assert stop not in got
    assert got == engine.generate([TEXT_PROMPTS[0]], params)[0].text


def test_n_samples_come_back_per_prompt_in_order(client, engine):
    params = GenerationParams(max_new_tokens=6, temperature=1.0, n=3, seed=5)
    prompts = [*TEXT_PROMPTS[:2], CHATS[0]]
    got = client.generate(prompts, params)
    # n > 1 sends one prompt per request, so each matches a one-prompt engine call
    want = [engine.generate([p], params)[0] for p in prompts]
    assert [g.all_texts for g in got] == [w.all_texts for w in want]
    assert all(len(g.texts) == 3 for g in got)


def test_adapter_is_sent_as_the_model_name(client, server, engine, tiny_adapter_dir):  # noqa: F811
    adapter = tiny_adapter_dir
    got = client.generate(
        TEXT_PROMPTS[:2] + CHATS[:1], GREEDY, adapter=resolve_adapter("tiny-lora", remote=True)
    )
    assert {m for _, m in server.requests} == {"tiny-lora"}
    want = [
        engine.generate([p], GREEDY, adapter=resolve_adapter(str(adapter)))[0].text
        for p in TEXT_PROMPTS[:2]
    ]
    want.append(engine.generate(CHATS[:1], GREEDY, adapter=resolve_adapter(str(adapter)))[0].text)
    assert [g.text for g in got] == want
    base = [g.text for g in client.generate(TEXT_PROMPTS[:2], GREEDY)]
    assert base != want[:2]  # the adapter really changes the outputs


def test_list_models_includes_adapters(client):
    assert client.list_models() == ["tiny", "tiny-lora"]


def test_dead_port_is_engine_unavailable_naming_the_url():
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    url = f"http://127.0.0.1:{_free_port()}/v1"
    eng = OpenAIEngine("tiny", base_url=url, timeout=5)
    with pytest.raises(EngineUnavailableError, match=url.replace(".", r"\.")) as info:
        eng.generate(["hello"], GREEDY)
    assert "\n" not in str(info.value)
    eng.close()


def test_unknown_model_is_engine_unavailable_with_the_status(server):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    eng = OpenAIEngine("nope", base_url=server.url)
    with pytest.raises(EngineUnavailableError, match=r"HTTP 404: The model `nope` does not exist"):
        eng.generate(["hello"], GREEDY)
    eng.close()


def test_constrained_titles_are_distinct_allowed_and_start_with_the_engines_pick(client, engine):
    prompts = [TEXT_PROMPTS[0], CHATS[0]]
    outs = client.generate_constrained(prompts, [TITLES, TITLES[:3]], k=4)
    assert [len(o.titles) for o in outs] == [4, 3]
    for out, allowed in zip(outs, [TITLES, TITLES[:3]], strict=True):
        assert set(out.titles) <= set(allowed)
        assert len(set(out.titles)) == len(out.titles)
        assert out.scores == sorted(out.scores, reverse=True)
    first = engine.generate_constrained(prompts, [TITLES, TITLES[:3]], k=1)
    assert {o.titles[0] for o in first} <= {t for o in outs for t in o.titles}
    assert first[0].titles[0] in outs[0].titles


@pytest.mark.parametrize("field", ["guided_choice"])
def test_constrained_falls_back_to_guided_choice(engine, field):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    with OpenAITestServer(engine, models={"tiny": None}, choice_field=field) as srv:
        eng = OpenAIEngine("tiny", base_url=srv.url)
        out = eng.generate_constrained([TEXT_PROMPTS[0]], [TITLES], k=2)[0]
        eng.close()
    assert len(out.titles) == 2 and set(out.titles) <= set(TITLES)


def test_constrained_without_server_support_is_engine_unavailable(engine):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    with OpenAITestServer(engine, models={"tiny": None}, choice_field=None) as srv:
        eng = OpenAIEngine("tiny", base_url=srv.url)
        with pytest.raises(EngineUnavailableError, match="neither 'structured_outputs' nor"):
            eng.generate_constrained([TEXT_PROMPTS[0]], [TITLES], k=2)
        eng.close()


def test_base_url_and_key_come_from_the_environment(monkeypatch):
    from llmrec_gen.llm.engines.openai import DEFAULT_BASE_URL, OpenAIEngine

    monkeypatch.delenv("LLMREC_OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("LLMREC_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert OpenAIEngine("m").base_url == DEFAULT_BASE_URL
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    assert OpenAIEngine("m").base_url == "http://127.0.0.1:9/v1"
    monkeypatch.setenv("LLMREC_OPENAI_BASE_URL", "http://127.0.0.1:7")
    assert OpenAIEngine("m").base_url == "http://127.0.0.1:7/v1"  # bare host gets /v1
    assert OpenAIEngine("m", base_url="http://127.0.0.1:5/v1").base_url.endswith(":5/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert OpenAIEngine("m")._client.headers["Authorization"] == "Bearer sk-test"


def test_closed_engine_says_so(server):
    from llmrec_gen.llm.engines.openai import OpenAIEngine

    eng = OpenAIEngine("tiny", base_url=server.url)
    eng.close()
    eng.close()
    with pytest.raises(EngineUnavailableError, match="closed"):
        eng.generate(["hello"], GREEDY)


def test_constrained_titles_keep_their_leading_space(client, server):
    # the LLM recommender sends titles as they follow "1." in its answer: with a leading space
    spaced = [f" {t}" for t in TITLES]
    outs = client.generate_constrained([TEXT_PROMPTS[0], CHATS[0]], [spaced, spaced], k=3)
    for out in outs:
        assert len(out.titles) == 3 and set(out.titles) <= set(spaced)
    bodies = [b for b in server.bodies if "structured_outputs" in b]
    assert bodies and all(set(b["structured_outputs"]["choice"]) <= set(spaced) for b in bodies)


def test_llm_recommender_constrained_through_the_server(block_data, server, tiny_model_dir):  # noqa: F811
    from llmrec_gen.llm.recommender import LLMRecommender

    train = block_data.train
    users = list(block_data.held_out)[:2]

    def llm(engine: str, model: str, **kw: object) -> LLMRecommender:
        return LLMRecommender(
            model=model,
            engine=engine,
            prompt={"history_len": 4},
            decoding={"mode": "constrained"},
            grounding={"use_embeddings": False},
            **kw,
        )

    server.requests.clear()
    remote = llm("openai", "tiny", engine_kwargs={"base_url": server.url}).fit(train)
    recs = remote.recommend(users, k=3)
    # The server decodes with a structured choice (no log-probs to sum or calibrate), so the
    # openai engine defaults to score "mean", calibration 0; the local reference does the same.
    assert remote.config.decoding.score == "mean" and remote.config.decoding.calibration == 0
    local = llm("transformers", str(tiny_model_dir))
    local.config.decoding = remote.config.decoding
    local = local.fit(train).recommend(users, k=1)
    for u, items, details, best in zip(
        users, recs.item_ids, recs.details, local.item_ids, strict=True
    ):
        assert len(set(items.tolist())) == 3 and not set(items.tolist()) & train.seen_items(u)
        assert {d.source for d in details} == {"constrained"}
        assert best[0] in items  # the local engine's best title is among the server's picks
    assert {m for _, m in server.requests} == {"tiny"}


def test_a_local_adapter_is_sent_by_its_name_never_its_path(client, server, tiny_adapter_dir):  # noqa: F811
    ref = resolve_adapter(str(tiny_adapter_dir), remote=True)
    assert ref.name == tiny_adapter_dir.name and "/" not in ref.name
    server.requests.clear()
    with pytest.raises(EngineUnavailableError, match=f"`{ref.name}` does not exist"):
        client.generate(TEXT_PROMPTS[:1], GREEDY, adapter=ref)
    assert [m for _, m in server.requests] == [ref.name]
    bundled = resolve_adapter("bundled:ml-100k", remote=True)
    assert bundled is not None and bundled.name == "ml-100k"
