"""OpenAI's `POST /v1/chat/completions` and `POST /v1/completions`, for the served language model.

Chat messages go through the model's chat template (or lmtune's plain template) with the run's
system prompt, as in training; completion prompts are continued as they are. Replies are greedy
unless `temperature` > 0 (as `lmtune generate`; OpenAI itself samples at 1 by default). Requests
with the same settings and no `seed` are generated in one batch; streamed and seeded ones run
alone. `stream: true` sends OpenAI's chunks as server-sent events, ending with `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lmtune.data.chat import check_messages
from lmtune.errors import DataError
from lmtune.eval.generation import Completion, Sampling
from lmtune.serve.errors import ApiError, error_body
from lmtune.serve.served import Served, split_back
from lmtune.tasks.generator import Generator

MAX_STOP = 4  # stop texts per request, as OpenAI allows


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI clients may send fields lmtune does not use (user, metadata)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None


@dataclass
class Generation:
    """What the model thread is asked for: prompts continued with one sampling setting."""

    prompts: list[str]
    sampling: Sampling
    chat: bool  # rendered conversations (their special tokens are in the text) or raw prompts
    on_text: Callable[[str], None] | None = None  # streamed: each piece of the reply as it comes


def add_openai_routes(app: FastAPI, served: Served) -> None:
    lm = served.predictor
    assert isinstance(lm, Generator)

    def run(payloads: list[Generation], should_stop: Callable[[], bool]) -> list[list[Completion]]:
        first = payloads[0]
        prompts = [p for g in payloads for p in g.prompts]
        done = lm.complete(prompts, first.sampling, chat=first.chat, should_stop=should_stop, on_text=first.on_text)
        return split_back(done, [len(g.prompts) for g in payloads])

    served.runners["generate"] = run

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat completion")
    async def chat_completions(body: ChatRequest) -> Any:
        served.check_model(body.model)
        prompt = lm.prompt_text(_messages(body.messages))
        gen = Generation([prompt], _sampling(served, body, body.max_completion_tokens or body.max_tokens), chat=True)
        _check_length(served, gen, "messages", special=lm.special_tokens())
        if body.stream:
            return _stream(served, gen, "chat.completion.chunk", _include_usage(body))
        [c] = await _generate(served, gen)
        return _response(served, "chat.completion", [c], chat=True)

    @app.post("/v1/completions", summary="OpenAI-compatible text completion")
    async def completions(body: CompletionRequest) -> Any:
        served.check_model(body.model)
        for name, unsupported in (("echo", body.echo), ("suffix", body.suffix), ("logprobs", body.logprobs)):
            if unsupported:
                raise ApiError(400, f"{name} is not supported by lmtune serve", param=name)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        limit = served.options.max_batch_size
        if not prompts or len(prompts) > limit:
            raise ApiError(400, f"prompt holds {len(prompts)} prompts; give 1 to {limit} (--max-batch-size)", param="prompt")
        if body.stream and len(prompts) > 1:
            raise ApiError(400, "stream: true takes a single prompt", param="prompt")
        gen = Generation(prompts, _sampling(served, body, body.max_tokens), chat=False)
        _check_length(served, gen, "prompt", special=True)
        if body.stream:
            return _stream(served, gen, "text_completion", _include_usage(body))
        return _response(served, "text_completion", await _generate(served, gen), chat=False)


def _messages(messages: list[Message]) -> list[dict[str, str]]:
    out = []
    for m in messages:
        text = m.content if isinstance(m.content, str) else "\n".join(part.text for part in m.content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    try:  # the checks training makes; the placeholder reply stands for the one the model writes
        return check_messages(out + [{"role": "assistant", "content": "-"}], "messages")[:-1]
    except DataError as err:
        raise ApiError(400, str(err), param="messages") from None


def _sampling(served: Served, body: GenerationRequest, max_tokens: int | None) -> Sampling:
    o = served.options
    if body.n != 1:
        raise ApiError(400, f"n={body.n}: lmtune serve writes one choice per prompt (n=1)", param="n")
    if max_tokens is not None and max_tokens > o.max_tokens:
        raise ApiError(400, f"max_tokens={max_tokens} is over this server's limit of {o.max_tokens} (--max-tokens)",
                       param="max_tokens", code="max_tokens_too_large")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > MAX_STOP or any(not s for s in stop):
        raise ApiError(400, f"stop takes up to {MAX_STOP} non-empty texts", param="stop")
    return Sampling(max_tokens or min(o.default_max_tokens, o.max_tokens), body.temperature or 0.0,
                    1.0 if body.top_p is None else body.top_p, tuple(stop), body.seed)


def _check_length(served: Served, gen: Generation, param: str, special: bool) -> None:
    """A prompt the model cannot take with the reply asked for gets 400 before it waits for the model."""
    lm = served.predictor
    assert isinstance(lm, Generator)
    context = lm.context_length()
    if context is None:
        return
    reply = 0 if lm.meta.get("seq2seq") else gen.sampling.max_new_tokens  # an encoder-decoder writes its reply apart
    for i, prompt in enumerate(gen.prompts):
        n = len(lm.tokenizer(prompt, add_special_tokens=special)["input_ids"])
        if n + reply > context:
            where = param if len(gen.prompts) == 1 else f"{param}[{i}]"
            raise ApiError(400, f"{where} is {n} tokens and max_tokens asks for {reply} more, over the {context} tokens "
                           f"this model takes in all; shorten the prompt or lower max_tokens", param=where,
                           code="context_length_exceeded")


def _group(gen: Generation) -> Any:
    """Generations that may share a batch: same settings, no seed (a seeded sample must not depend on its neighbours)."""
    s = gen.sampling
    return None if s.seed is not None else (gen.chat, s.max_new_tokens, s.temperature, s.top_p, s.stop)


async def _generate(served: Served, gen: Generation) -> list[Completion]:
    done: list[Completion] = await served.call("generate", _group(gen), len(gen.prompts), gen)
    _count_tokens(served, done)
    return done


def _count_tokens(served: Served, done: list[Completion]) -> None:
    served.metrics.tokens.labels("in").inc(sum(c.prompt_tokens for c in done))
    served.metrics.tokens.labels("out").inc(sum(c.completion_tokens for c in done))


def _usage(done: list[Completion]) -> dict[str, int]:
    prompt, completion = sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _head(served: Served, kind: str) -> dict[str, Any]:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()), "model": served.name,
            "system_fingerprint": None}


def _response(served: Served, kind: str, done: list[Completion], chat: bool) -> dict[str, Any]:
    if chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "logprobs": None,
                    "finish_reason": c.finish_reason} for i, c in enumerate(done)]
    else:
        choices = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(done)]
    return {**_head(served, kind), "choices": choices, "usage": _usage(done)}


def _include_usage(body: GenerationRequest) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _stream(served: Served, gen: Generation, kind: str, include_usage: bool) -> StreamingResponse:
    """Queue the generation now (a full queue answers 503 before any event), then relay its text as it comes."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def relay(text: str) -> None:  # called in the model thread
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    gen.on_text = relay
    job = served.batcher.submit("generate", None, 1, gen)
    job.future.add_done_callback(lambda _: pieces.put_nowait(None))
    head = _head(served, kind)
    chat = kind.startswith("chat")
    deadline = loop.time() + served.options.timeout

    def chunk(text: str | None, finish: str | None = None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [choice], "usage": None})

    async def events() -> AsyncIterator[str]:
        text = StreamText(gen.sampling.stop, strip=chat)
        try:
            if chat:
                yield chunk(None, role=True)
            while True:
                try:
                    piece = await asyncio.wait_for(pieces.get(), max(deadline - loop.time(), 0))
                except asyncio.TimeoutError:
                    job.cancelled.set()
                    timeout = served.options.timeout
                    yield _event(error_body(504, f"the reply took longer than --timeout {timeout:g} seconds and was cut off",
                                            code="timeout"))
                    return
                if piece is None:
                    break
                if shown := text.feed(piece):
                    yield chunk(shown)
            if (err := job.future.exception()) is not None:
                status, message = (err.status, err.message) if isinstance(err, ApiError) else (500, f"generation failed: {err}")
                yield _event(error_body(status, message))
                return
            [done] = job.future.result()
            if rest := text.flush():
                yield chunk(rest)
            _count_tokens(served, [done])
            yield chunk(None, finish=done.finish_reason)
            if include_usage:
                yield _event({**head, "choices": [], "usage": _usage([done])})
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that went away stops the generation; a finished one has nothing left to stop

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class StreamText:
    """Streamed pieces as the client may see them: nothing past a stop text, nothing that may begin one;
    for chat, no leading or trailing spaces (as the whole reply is stripped)."""

    def __init__(self, stop: tuple[str, ...], strip: bool):
        self.stop = stop
        self.strip = strip
        self.held = ""
        self.started = False
        self.ended = False

    def feed(self, piece: str) -> str:
        if self.ended:
            return ""
        text = self.held + piece
        if self.strip and not self.started:
            text = text.lstrip()
        cuts = [i for s in self.stop if (i := text.find(s)) >= 0]
        if cuts:
            self.ended = True
            self.held = ""
            return self._start(text[: min(cuts)].rstrip() if self.strip else text[: min(cuts)])
        keep = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        if self.strip:
            keep = max(keep, len(text) - len(text.rstrip()))
        self.held = text[len(text) - keep:] if keep else ""
        return self._start(text[: len(text) - keep])

    def flush(self) -> str:
        rest, self.held = ("" if self.ended else self.held), ""
        return self._start(rest.rstrip() if self.strip else rest)

    def _start(self, shown: str) -> str:
        self.started = self.started or bool(shown)
        return shown
