"""OpenAI-compatible API over a `ModelHost`: GET /v1/models, POST /v1/chat/completions, POST /v1/completions,
streamed as server-sent events (`data: {...}` chunks, then `data: [DONE]`) or answered whole.

Differences from OpenAI, on purpose: `temperature` defaults to 0 (greedy, as `forge inference`), one
choice per request (`n` must be 1), and the models carry Forge's fields (`name`, `kind`, `mode`,
`mode_reason`, `loaded`, `error`). Errors have OpenAI's shape (`{"error": {message, type, code, param}}`,
plus Forge's `fix`), so the official clients raise their usual exceptions: an unknown model is a 404
`model_not_found`, a bad request a 400, a model that does not load a 503 that clients are told not to retry.
Request bodies are pydantic models: FastAPI takes only JSON, which a cross-site form cannot send.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgellm.errors import ErrorCode, ForgeError
from forgellm.web.generation import Finished, GenerationRequest

if TYPE_CHECKING:
    from forgellm.web.models import ModelHost

DEFAULT_MAX_TOKENS = 512
MAX_STOP_STRINGS = 16
# HTTP status and OpenAI error code of the ForgeErrors the API answers with; any other: 400.
_STATUS = {
    ErrorCode.MODEL_NOT_SERVED: (404, "model_not_found"),
    ErrorCode.MODEL_LOAD_FAILED: (503, "model_load_failed"),
    ErrorCode.GENERATION_FAILED: (500, "generation_failed"),
    ErrorCode.DEPENDENCY_MISSING: (503, "model_load_failed"),
    ErrorCode.MEMORY_INSUFFICIENT: (503, "model_load_failed"),
}


# ------------------------------------------------------------------------------------------------ requests


class _Body(BaseModel):
    # Fields of OpenAI's API that Forge does not use (top_p, user, seed, ...) are accepted and ignored.
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: str
    content: str | list[ContentPart] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Options(_Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] | None = None

    def request(self, **what: Any) -> GenerationRequest:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS or not all(stops):
            raise _bad(f"`stop` takes up to {MAX_STOP_STRINGS} non-empty strings.", "stop")
        return GenerationRequest(
            self.model, max_tokens=self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=self.temperature or 0.0, stop=tuple(stops), **what,
        )  # fmt: skip


class ChatRequest(_Options):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Options):
    prompt: str | list[str]


def _bad(message: str, param: str | None = None) -> ForgeError:
    return ForgeError(message, code=ErrorCode.USAGE_INVALID, data={"param": param} if param else None)


def _text_of(message: ChatMessage, number: int) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    if any(part.type != "text" or part.text is None for part in message.content):
        raise _bad(f"Message {number} holds a part that is not text; Forge's models read text only.", "messages")
    return "".join(part.text or "" for part in message.content)


def chat_messages(body: ChatRequest) -> list[dict[str, str]]:
    # "developer" is OpenAI's newer name for the system role.
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": _text_of(m, i)}
        for i, m in enumerate(body.messages)
    ]


def completion_prompt(body: CompletionRequest) -> str:
    if isinstance(body.prompt, str):
        return body.prompt
    if len(body.prompt) != 1:
        raise _bad("`prompt` takes one text per request here.", "prompt")
    return body.prompt[0]


# ------------------------------------------------------------------------------------------------ errors


def error_response(error: ForgeError) -> Any:
    from fastapi.responses import JSONResponse

    status, code = _STATUS.get(error.code, (400, error.code.value))
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"message": error.message, "type": kind, "param": error.data.get("param"), "code": code, "fix": error.fix}
    # The official clients retry 5xx answers; loading a broken model again would fail again.
    return JSONResponse({"error": body}, status_code=status, headers={"x-should-retry": "false"})


def _validation_message(errors: list[Any]) -> tuple[str, str | None]:
    parts, param = [], None
    for problem in errors[:5]:
        where = [str(p) for p in problem.get("loc", ()) if p != "body"]
        param = param or (where[0] if where else None)
        parts.append(f"{'.'.join(where) or 'body'}: {problem.get('msg')}")
    return "The request is not valid: " + "; ".join(parts) + ".", param


def _openai_route_class() -> type:
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute

    class OpenAIRoute(APIRoute):
        """Every error of these routes in OpenAI's shape: validation errors (FastAPI's 422) become 400s."""

        def get_route_handler(self) -> Callable[[Any], Coroutine[Any, Any, Any]]:
            handler = super().get_route_handler()

            async def handle(request: Any) -> Any:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    message, param = _validation_message(list(exc.errors()))
                    return error_response(_bad(message, param))
                except ForgeError as error:
                    return error_response(error)

            return handle

    return OpenAIRoute


# ------------------------------------------------------------------------------------------------ answers


def _usage(finished: Finished) -> dict[str, int]:
    prompt, completion = finished.prompt_tokens, finished.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _usage_chunk(head: dict[str, Any], kind: str, item: Any, wanted: bool) -> list[dict[str, Any]]:
    """With stream_options.include_usage, OpenAI's last chunk: no choices, the usage of the whole answer."""
    if not wanted or not isinstance(item, Finished):
        return []
    return [{**head, "object": kind, "choices": [], "usage": _usage(item)}]


async def _collect(first: Any, rest: AsyncIterator[Any]) -> tuple[str, Finished]:
    pieces: list[str] = []
    item = first
    while not isinstance(item, Finished):
        pieces.append(item)
        item = await anext(rest)
    return "".join(pieces), item


async def _first(host: ModelHost, request: GenerationRequest) -> tuple[Any, AsyncIterator[Any]]:
    """Start the generation and wait for its first piece, so that a model that does not load or a prompt
    it refuses is an HTTP error, not a broken stream."""
    stream = host.stream(request)
    try:
        return await anext(stream), stream
    except BaseException:
        await stream.aclose()
        raise


def _sse(first: Any, rest: AsyncIterator[Any], chunks: Callable[[Any], list[dict[str, Any]]]) -> Any:
    """`data:` events of `chunks(item)` for each item (text piece, then Finished), then `data: [DONE]`."""
    from fastapi.responses import StreamingResponse

    async def events() -> AsyncIterator[str]:
        try:
            item = first
            while True:
                for chunk in chunks(item):
                    yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
                if isinstance(item, Finished):
                    break
                item = await anext(rest)
            yield "data: [DONE]\n\n"
        except ForgeError as error:  # after the first piece: the stream carries the error, as OpenAI's does
            problem = {"message": error.message, "fix": error.fix, "code": error.code.value, "type": "server_error"}
            yield f"data: {json.dumps({'error': problem}, ensure_ascii=False)}\n\n"
        finally:
            await rest.aclose()  # a client that left stops the generation

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


# ------------------------------------------------------------------------------------------------ the router


def models_body(host: ModelHost) -> dict[str, Any]:
    """GET /v1/models: OpenAI's list, each model with Forge's fields."""
    data = []
    for status in host.status():
        entry, error = status.entry, status.error
        data.append(
            {
                "id": entry.id, "object": "model", "created": entry.created, "owned_by": "forge",
                "name": entry.name, "kind": entry.kind, "mode": entry.mode, "mode_reason": entry.mode_reason,
                "loaded": status.loaded,
                "error": {"message": error.message, "fix": error.fix, "code": error.code.value} if error else None,
            }
        )  # fmt: skip
    return {"object": "list", "data": data}


def openai_router(host: ModelHost) -> Any:
    """The /v1 routes of an OpenAI-compatible server over `host`'s models."""
    from fastapi import APIRouter

    router = APIRouter(prefix="/v1", route_class=_openai_route_class())

    @router.get("/models")
    async def list_models() -> dict[str, Any]:
        return models_body(host)

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        host.entry(model_id)  # 404 when unknown
        return next(m for m in models_body(host)["data"] if m["id"] == model_id)

    @router.post("/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        request = body.request(messages=chat_messages(body))
        first, rest = await _first(host, request)
        answer_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": answer_id, "created": created, "model": body.model}
        if not body.stream:
            text, finished = await _collect(first, rest)
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": finished.finish_reason, "logprobs": None}
            return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(finished)}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        started = [False]

        def chunks(item: Any) -> list[dict[str, Any]]:
            done = isinstance(item, Finished)
            delta: dict[str, Any] = {} if done else {"content": item}
            if not started[0]:  # the first chunk names the role, as OpenAI's do
                started[0] = True
                delta = {"role": "assistant", "content": "" if done else item}
            choice = {
                "index": 0,
                "delta": delta,
                "finish_reason": item.finish_reason if done else None,
                "logprobs": None,
            }
            return [
                {**head, "object": "chat.completion.chunk", "choices": [choice]},
                *_usage_chunk(head, "chat.completion.chunk", item, include_usage),
            ]

        return _sse(first, rest, chunks)

    @router.post("/completions")
    async def completions(body: CompletionRequest) -> Any:
        request = body.request(prompt=completion_prompt(body))
        first, rest = await _first(host, request)
        head = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
        }
        if not body.stream:
            text, finished = await _collect(first, rest)
            choice = {"index": 0, "text": text, "finish_reason": finished.finish_reason, "logprobs": None}
            return {**head, "choices": [choice], "usage": _usage(finished)}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunks(item: Any) -> list[dict[str, Any]]:
            done = isinstance(item, Finished)
            choice = {
                "index": 0,
                "text": "" if done else item,
                "finish_reason": item.finish_reason if done else None,
                "logprobs": None,
            }
            return [{**head, "choices": [choice]}, *_usage_chunk(head, "text_completion", item, include_usage)]

        return _sse(first, rest, chunks)

    return router
