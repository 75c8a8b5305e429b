"""Gemini as a ``JsonClient``, through Google's official ``google-genai`` SDK.

The SDK sends the request (``POST {base_url}/v1beta/models/{model}:generateContent``, key in the
``x-goog-api-key`` header); this module adds what the SDK leaves to its caller: a JSON schema Gemini
accepts, one retry policy (``retry.py``, the SDK's own retries stay off), and errors a user can act on.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorUnavailable
from forgellm.advisor.retry import Backoff, TransientFailure, call_with_retries, is_retryable_status, parse_retry_after

if TYPE_CHECKING:
    from pydantic import BaseModel

DEFAULT_HOST = "generativelanguage.googleapis.com"
# Pinned: responseJsonSchema is documented on v1beta, and the SDK's default version moves between
# releases (and follows GOOGLE_GENAI_API_VERSION), which would silently change the URL.
API_VERSION = "v1beta"

AUTH_FIX = (
    "Run `forge login --provider gemini` with a valid key (https://aistudio.google.com/apikey), or set GEMINI_API_KEY."
)
UNAVAILABLE_FIX = (
    "Check your internet connection and your Gemini quota, then run the command again; "
    "or set advisor.provider: rules in forge.yaml to plan offline."
)
ANSWER_FIX = "Run the command again; if it keeps happening, set advisor.provider: rules in forge.yaml to plan offline."

# JSON Schema keywords Gemini's responseJsonSchema understands; the rest (pattern, lengths, defaults)
# is dropped here and enforced anyway when the caller validates the answer with pydantic.
_KEPT_KEYWORDS = frozenset(
    {"type", "format", "description", "enum", "items", "minItems", "maxItems", "minimum", "maximum", "required"}
)


class GeminiClient:
    """Asks a Gemini model for JSON shaped by a pydantic answer model. Returns the model's text as is."""

    provider = "gemini"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        if not api_key or not api_key.strip():
            raise AdvisorAuthError("No Gemini API key was given.", fix=AUTH_FIX)
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self._api_key = api_key.strip()
        self._backoff = backoff
        self._sdk: Any = None  # google.genai.Client, built on first use so importing this module stays cheap

    def __repr__(self) -> str:
        # Written out so the key can never reach a log line through a repr.
        return f"GeminiClient(model={self.model!r}, base_url={self.base_url!r})"

    def generate_json(self, *, system: str, prompt: str, schema: type[BaseModel]) -> str:
        from google.genai import types

        config = types.GenerateContentConfig(
            system_instruction=system,
            response_mime_type="application/json",
            response_json_schema=gemini_json_schema(schema),
        )
        response = call_with_retries(
            lambda: self._attempt(prompt, config),
            max_retries=self.max_retries,
            who="Gemini",
            fix=UNAVAILABLE_FIX,
            backoff=self._backoff,
        )
        return answer_text(response)

    def _client(self) -> Any:
        if self._sdk is None:
            from google import genai
            from google.genai import types

            options = types.HttpOptions(
                base_url=self.base_url,
                api_version=API_VERSION,
                timeout=max(1, round(self.timeout_seconds * 1000)),  # the SDK counts milliseconds
                retry_options=None,  # no SDK retries: retry.py owns the policy
            )
            self._sdk = genai.Client(api_key=self._api_key, vertexai=False, http_options=options)
        return self._sdk

    def _attempt(self, prompt: str, config: Any) -> Any:
        """One request. Raises TransientFailure for what may pass, an AdvisorError for what will not."""
        import pydantic
        from google.genai import errors

        timeouts, transport_errors = _transport_error_types()
        try:
            return self._client().models.generate_content(model=self.model, contents=prompt, config=config)
        except errors.APIError as error:
            raise self._classify(error) from None
        except timeouts:
            raise TransientFailure(f"no response within {self.timeout_seconds:g} s") from None
        except transport_errors as error:
            raise TransientFailure(
                f"could not reach {self.base_url or DEFAULT_HOST} ({type(error).__name__})"
            ) from None
        except (json.JSONDecodeError, errors.UnknownApiResponseError, pydantic.ValidationError):
            raise AdvisorAnswerError(
                f"The server at {self.base_url or DEFAULT_HOST} answered with something "
                "that is not a Gemini API response.",
                fix="Check advisor.base_url in forge.yaml (null means Google's own endpoint).",
            ) from None

    def _classify(self, error: Any) -> Exception:
        code = int(error.code or 0)
        summary = f"HTTP {code}" + (f" {error.status}" if error.status else "")
        message = self._scrub(error.message or "")
        if code in (401, 403) or _is_key_rejected(code, error.message or "", error.details):
            return AdvisorAuthError(f"Gemini rejected the API key ({summary}).", fix=AUTH_FIX)
        if is_retryable_status(code):
            return TransientFailure(
                f"{summary}" + (f" ({message})" if message else ""), status=code, retry_after=_retry_after(error)
            )
        return AdvisorUnavailable(
            f"Gemini refused the request ({summary}" + (f": {message}" if message else "") + ").",
            fix="Check advisor.model in forge.yaml (e.g. gemini-2.5-flash) and advisor.base_url.",
        )

    def _scrub(self, text: str) -> str:
        """Server text, shortened, with the key masked in case a proxy echoes it back."""
        return text.replace(self._api_key, "***")[:300]


def gemini_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The pydantic model's JSON schema, reduced to what Gemini's responseJsonSchema accepts.

    References are inlined (Gemini allows no keyword beside a ``$ref``, and pydantic puts descriptions
    there), ``const`` becomes a one-value ``enum``, ``oneOf`` becomes ``anyOf`` and exclusive bounds
    become inclusive ones; ``additionalProperties: false`` is kept, so strict models stay strict.
    """
    full = model.model_json_schema()
    return _clean(full, full.get("$defs", {}), depth=0)


def _clean(node: dict[str, Any], definitions: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > 32:
        raise ValueError("answer schema nests too deeply or refers to itself; Gemini cannot take it")
    if "$ref" in node:
        target = definitions[node["$ref"].rsplit("/", 1)[-1]]
        inlined = _clean(target, definitions, depth + 1)
        return {**inlined, **({"description": node["description"]} if "description" in node else {})}
    cleaned = {key: value for key, value in node.items() if key in _KEPT_KEYWORDS}
    if "const" in node:
        cleaned["enum"] = [node["const"]]
    if "exclusiveMinimum" in node and "minimum" not in node:
        cleaned["minimum"] = node["exclusiveMinimum"]
    if "exclusiveMaximum" in node and "maximum" not in node:
        cleaned["maximum"] = node["exclusiveMaximum"]
    if "properties" in node:
        cleaned["properties"] = {
            name: _clean(child, definitions, depth + 1) for name, child in node["properties"].items()
        }
    if isinstance(node.get("items"), dict):
        cleaned["items"] = _clean(node["items"], definitions, depth + 1)
    if isinstance(node.get("additionalProperties"), bool):
        cleaned["additionalProperties"] = node["additionalProperties"]
    alternatives = node.get("anyOf") or node.get("oneOf")
    if alternatives:
        cleaned["anyOf"] = [_clean(option, definitions, depth + 1) for option in alternatives]
    return cleaned


def answer_text(response: Any) -> str:
    """The text of the first candidate, or AdvisorAnswerError when Gemini gave none (blocked, empty)."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise AdvisorAnswerError(
            f"Gemini blocked the request ({_enum_name(feedback.block_reason)}) and gave no answer.",
            fix="Check the goal and the data sample for content Gemini refuses, or set advisor.provider: rules.",
        )
    candidates = response.candidates or []
    if not candidates:
        raise AdvisorAnswerError("Gemini returned no answer.", fix=ANSWER_FIX)
    candidate = candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    # Thinking models may send their reasoning as extra parts; only the answer parts are the JSON.
    text = "".join(part.text for part in parts if part.text and not part.thought)
    if not text.strip():
        reason = _enum_name(candidate.finish_reason) if candidate.finish_reason else "none given"
        raise AdvisorAnswerError(f"Gemini returned an empty answer (finish reason: {reason}).", fix=ANSWER_FIX)
    return text


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value))


def _is_key_rejected(code: int, message: str, details: Any) -> bool:
    """Gemini answers a wrong or expired key with 400, not 401: recognise it by its reason."""
    if code != 400:
        return False
    detail_text = json.dumps(details, default=str)
    return "API_KEY_" in detail_text or "API key not valid" in message or "API key expired" in message


def _retry_after(error: Any) -> float | None:
    """The wait the server asked for: a Retry-After header, else Gemini's RetryInfo ("37s")."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is not None:
        from_header = parse_retry_after(headers.get("retry-after"))
        if from_header is not None:
            return from_header
    body = error.details if isinstance(error.details, dict) else {}
    inner = body.get("error", body)
    for detail in inner.get("details") or []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            return parse_retry_after(delay[:-1])
    return None


def _transport_error_types() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(timeouts, other transport errors) of every HTTP stack the SDK may use: httpx, or its fork httpx2."""
    timeouts: list[type[Exception]] = []
    transport: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        transport.append(module.TransportError)
    return tuple(timeouts), tuple(transport)
