"""`lmtune serve` a LoRA chat run (adapter not merged), through the official `openai` client.

Replies equal what `lmtune.load(run)` gives in Python (greedy), streamed or not, one request or
many at once; token counts are the prompt's and the reply's; stop texts, seeds and every limit
behave as OpenAI's API does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from conftest import IDENTITY
from lmtune.eval.generation import Sampling
from lmtune.inference import load
from servers import Server

MAX_TOKENS = 48


@pytest.fixture(scope="module")
def server(chat_run):
    s = Server(chat_run, "--max-tokens", str(MAX_TOKENS), "--max-batch-size", "4", "--model-name", "zorblat")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def lm(chat_run):
    return load(chat_run, device="cpu")


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_chat_replies_equal_the_python_api_and_count_tokens(client, lm, server):
    assert httpx.get(f"{server.url}/health").json()["adapter"] is True
    assert [m.id for m in client.models.list()] == ["zorblat"]
    for question, _ in IDENTITY:
        r = client.chat.completions.create(model="zorblat", messages=ask(question), max_tokens=24)
        [want] = lm.complete([lm.prompt_text(ask(question))], Sampling(24))
        assert r.choices[0].message.content == want.text == lm.reply([ask(question)], Sampling(24))[0]
        assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == want.finish_reason
        prompt_tokens = len(lm.tokenizer(lm.prompt_text(ask(question)), add_special_tokens=False)["input_ids"])
        assert r.usage.prompt_tokens == prompt_tokens and r.usage.completion_tokens == want.completion_tokens
        assert r.usage.total_tokens == prompt_tokens + want.completion_tokens
    # the run learnt its answers: the served adapter is the trained one
    r = client.chat.completions.create(model="zorblat", messages=ask(IDENTITY[0][0]), max_tokens=24)
    assert "zorblat" in r.choices[0].message.content


def test_streamed_chat_equals_the_whole_reply(client):
    for question, _ in IDENTITY[:2]:
        whole = client.chat.completions.create(model="zorblat", messages=ask(question), max_tokens=24)
        chunks = list(client.chat.completions.create(model="zorblat", messages=ask(question), max_tokens=24, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
        assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
        assert len({c.id for c in chunks}) == 1


def test_completions_continue_raw_text_one_or_many_prompts(client, lm):
    prompts = ["who are you ?", "my name is", "the capital of france is"]
    r = client.completions.create(model="zorblat", prompt=prompts, max_tokens=12)
    want = lm.complete(prompts, Sampling(12), chat=False)
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == [w.text for w in want]
    assert r.usage.completion_tokens == sum(w.completion_tokens for w in want)
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="zorblat", prompt=prompts[0], max_tokens=12,
                                                                           stream=True) if c.choices)
    assert streamed == want[0].text


def test_stop_texts_end_the_reply_before_them(client):
    whole = client.chat.completions.create(model="zorblat", messages=ask(IDENTITY[0][0]), max_tokens=24).choices[0].message.content
    stop = whole.split()[2]  # a word in the middle of the reply
    r = client.chat.completions.create(model="zorblat", messages=ask(IDENTITY[0][0]), max_tokens=24, stop=[stop])
    assert r.choices[0].message.content == whole[: whole.index(stop)].strip() and r.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="zorblat", messages=ask(IDENTITY[0][0]), max_tokens=24, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == r.choices[0].message.content


def test_sampling_with_a_seed_repeats_and_length_is_reported(client):
    def sample(seed):
        return client.chat.completions.create(model="zorblat", messages=ask("hello"), max_tokens=16, temperature=1.5,
                                              top_p=0.95, seed=seed).choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(6)}) > 1  # the seed matters
    r = client.completions.create(model="zorblat", prompt="hello hello hello", max_tokens=2)
    assert r.usage.completion_tokens <= 2
    if r.usage.completion_tokens == 2:
        assert r.choices[0].finish_reason == "length"


def test_concurrent_chats_each_get_their_own_reply(client):
    questions = [q for q, _ in IDENTITY] * 4
    alone = {q: client.chat.completions.create(model="zorblat", messages=ask(q), max_tokens=24).choices[0].message.content
             for q, _ in IDENTITY}
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda q: client.chat.completions.create(model="zorblat", messages=ask(q), max_tokens=24), questions))
    assert [r.choices[0].message.content for r in replies] == [alone[q] for q in questions]


@pytest.mark.parametrize(("kwargs", "error", "named"), [
    ({"max_tokens": MAX_TOKENS + 1}, openai.BadRequestError, f"limit of {MAX_TOKENS}"),
    ({"messages": ask("hello " * 300)}, openai.BadRequestError, "256 tokens"),
    ({"n": 2}, openai.BadRequestError, "n=2"),
    ({"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, "stop"),
    ({"messages": [{"role": "user", "content": " "}]}, openai.BadRequestError, "message 1 (user) is empty"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, openai.UnprocessableEntityError, "messages.0.role"),
    ({"messages": []}, openai.UnprocessableEntityError, "messages"),
    ({"temperature": -1}, openai.UnprocessableEntityError, "temperature"),
    ({"model": "gpt-4o"}, openai.NotFoundError, "'gpt-4o' is not served here"),
])
def test_bad_requests_are_refused_naming_the_field(client, kwargs, error, named):
    args = {"model": "zorblat", "messages": ask("hello"), "max_tokens": 8, **kwargs}
    with pytest.raises(error) as caught:
        client.chat.completions.create(**args)
    assert named in caught.value.message
    assert client.chat.completions.create(model="zorblat", messages=ask("hello"), max_tokens=4).choices  # still serving
