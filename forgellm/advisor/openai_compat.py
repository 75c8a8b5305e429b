"""Any OpenAI-compatible chat server as a ``JsonClient``: OpenAI, Ollama, vLLM, llama.cpp server, ...

One ``POST {base}/chat/completions`` with the system and user messages and a ``response_format``
carrying the answer's JSON schema. Older servers that do not know ``json_schema`` get one more try
with ``json_object`` and the schema written into the system prompt instead.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorUnavailable
from forgellm.advisor.retry import Backoff, TransientFailure, call_with_retries, is_retryable_status, parse_retry_after

if TYPE_CHECKING:
    import httpx
    from pydantic import BaseModel

AUTH_FIX = "Run `forge login --provider openai` with a valid key, or set OPENAI_API_KEY."
ANSWER_FIX = "Run the command again; if it keeps happening, set advisor.provider: rules in forge.yaml to plan offline."
CONTEXT_FIX = (
    "Send less: lower advisor.sample_rows in forge.yaml (0 sends column statistics only), or start the server "
    "with a longer context (llama.cpp: --ctx-size 8192; vLLM: --max-model-len 8192); or set advisor.provider: rules."
)
LENGTH_FIX = (
    "Raise the server's limit on answer length (llama.cpp: --n-predict; or use a model that answers more briefly), "
    "or set advisor.provider: rules in forge.yaml to plan offline."
)
# How servers say a prompt is too long: llama.cpp ("exceeds the available context size"), vLLM and OpenAI
# ("maximum context length", "context_length_exceeded").
_CONTEXT_SIGNS = ("context size", "context length", "context_length_exceeded", "context window")


class _SchemaFormatRejected(Exception):
    """The server does not support ``response_format: json_schema`` (a 400 that says so)."""


class OpenAICompatClient:
    """Asks a chat-completions server for JSON shaped by a pydantic answer model. Returns the text as is."""

    provider = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.endpoint = chat_completions_url(base_url)
        self._api_key = api_key.strip() if api_key and api_key.strip() else None
        self._backoff = backoff

    def __repr__(self) -> str:
        # Written out so the key can never reach a log line through a repr.
        return f"OpenAICompatClient(model={self.model!r}, base_url={self.base_url!r})"

    def generate_json(self, *, system: str, prompt: str, schema: type[BaseModel]) -> str:
        import httpx

        json_schema = schema.model_json_schema()
        structured = {
            "type": "json_schema",
            # strict=False: OpenAI's strict mode rejects common JSON Schema (defaults, bounds, unions);
            # the caller validates the answer with pydantic anyway.
            "json_schema": {"name": schema.__name__, "schema": json_schema, "strict": False},
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        with httpx.Client(timeout=self.timeout_seconds, headers=headers) as http:
            try:
                body = self._post_with_retries(http, self._payload(system, prompt, structured), may_reject_format=True)
            except _SchemaFormatRejected:
                # json_object carries no schema, so the schema travels in the instructions instead.
                described = (
                    f"{system}\n\nAnswer with one JSON object that matches this JSON schema:\n{json.dumps(json_schema)}"
                )
                body = self._post_with_retries(http, self._payload(described, prompt, {"type": "json_object"}))
        return answer_text(body)

    def _payload(self, system: str, prompt: str, response_format: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "response_format": response_format,
            "stream": False,
        }

    def _post_with_retries(
        self, http: httpx.Client, payload: dict[str, Any], *, may_reject_format: bool = False
    ) -> Any:
        return call_with_retries(
            lambda: self._attempt(http, payload, may_reject_format),
            max_retries=self.max_retries,
            who=f"The OpenAI-compatible server at {self.base_url}",
            fix=self._unavailable_fix(),
            backoff=self._backoff,
        )

    def _attempt(self, http: httpx.Client, payload: dict[str, Any], may_reject_format: bool) -> Any:
        """One request: the decoded body, or TransientFailure / an AdvisorError."""
        import httpx

        try:
            response = http.post(self.endpoint, json=payload)
        except httpx.TimeoutException:
            raise TransientFailure(f"no response within {self.timeout_seconds:g} s") from None
        except httpx.TransportError as error:
            raise TransientFailure(f"could not reach {self.base_url} ({type(error).__name__})") from None
        if response.status_code >= 400:
            raise self._classify(response, may_reject_format) from None
        try:
            return response.json()
        except ValueError:
            raise AdvisorAnswerError(
                f"The server at {self.base_url} answered with something that is not JSON "
                f"(HTTP {response.status_code}, {response.headers.get('content-type', 'no content type')}).",
                fix="Check advisor.base_url in forge.yaml: it should be the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1.",
            ) from None

    def _classify(self, response: httpx.Response, may_reject_format: bool) -> Exception:
        code = response.status_code
        message = self._scrub(_error_message(response))
        summary = f"HTTP {code}" + (f": {message}" if message else "")
        if code in (401, 403):
            what = "rejected the API key" if self._api_key else "requires an API key and none was given"
            return AdvisorAuthError(
                f"The OpenAI-compatible server at {self.base_url} {what} (HTTP {code}).", fix=AUTH_FIX
            )
        if is_retryable_status(code):
            return TransientFailure(
                summary, status=code, retry_after=parse_retry_after(response.headers.get("retry-after"))
            )
        lowered = message.lower()
        if may_reject_format and code in (400, 422) and ("response_format" in lowered or "json_schema" in lowered):
            return _SchemaFormatRejected()
        if code in (400, 413, 422) and any(sign in lowered for sign in _CONTEXT_SIGNS):
            # Not a wrong URL or model: the prompt (mostly the data sample) does not fit the model's window.
            return AdvisorUnavailable(
                f"The OpenAI-compatible server at {self.base_url} refused the request because it is longer than "
                f"the model's context window ({summary}).",
                fix=CONTEXT_FIX,
            )
        return AdvisorUnavailable(
            f"The OpenAI-compatible server at {self.base_url} refused the request ({summary}).",
            fix="Check advisor.model and advisor.base_url in forge.yaml (e.g. base_url: http://127.0.0.1:8000/v1).",
        )

    def _unavailable_fix(self) -> str:
        return (
            f"Check that the server at {self.base_url} is running and reachable (for Ollama: `ollama serve`), "
            "then run the command again; or set advisor.provider: rules in forge.yaml to plan offline."
        )

    def _scrub(self, text: str) -> str:
        """Server text, shortened, with the key masked in case the server echoes it back."""
        return (text.replace(self._api_key, "***") if self._api_key else text)[:300]


def chat_completions_url(base_url: str) -> str:
    """The chat endpoint for a base URL given with or without ``/v1``.

    A bare host (``http://127.0.0.1:8000``) gets the standard ``/v1``; any other path is the API base
    as the server documents it (``.../v1``, Gemini's ``.../v1beta/openai``) and is kept.
    """
    base = base_url.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if urlsplit(base).path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


def answer_text(body: Any) -> str:
    """The first choice's message text, or AdvisorAnswerError when the response holds none."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise AdvisorAnswerError("The OpenAI-compatible server returned no answer (no choices).", fix=ANSWER_FIX)
    message = choices[0].get("message")
    message = message if isinstance(message, dict) else {}
    content = message.get("content")
    if isinstance(content, list):  # some servers send content as a list of typed parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if isinstance(content, str) and content.strip():
        if choices[0].get("finish_reason") == "length" and not _is_json(content):
            # The server's token cap stopped the model mid-answer: say so, not "invalid JSON at position N".
            raise AdvisorAnswerError(
                f"The model's answer was cut off at the server's token limit after {len(content):,} characters "
                "(finish reason: length), before its JSON was complete.",
                fix=LENGTH_FIX,
            )
        return content
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal.strip():
        raise AdvisorAnswerError(f"The model declined to answer: {refusal.strip()[:300]}", fix=ANSWER_FIX)
    finish = choices[0].get("finish_reason") or "none given"
    raise AdvisorAnswerError(
        f"The OpenAI-compatible server returned an empty answer (finish reason: {finish}).", fix=ANSWER_FIX
    )


def _is_json(text: str) -> bool:
    """Whether ``text`` is one complete JSON value, also inside a Markdown code fence."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1].removesuffix("```")
    try:
        json.loads(stripped)
    except ValueError:
        return False
    return True


def _error_message(response: httpx.Response) -> str:
    """The human part of an error body: OpenAI's error.message, FastAPI's detail, or the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return error if isinstance(error, str) else json.dumps(error)
    return json.dumps(body)
