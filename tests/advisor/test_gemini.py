"""GeminiClient against a real local server speaking the Gemini API (through the real google-genai SDK)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback

import pytest

from advisor.servers import INJECTED_INSTRUCTIONS, Reply, closed_port_url, fast_retries, gemini_server  # noqa: F401
from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorError, AdvisorUnavailable
from forgellm.advisor.gemini import GeminiClient, gemini_json_schema
from forgellm.advisor.retry import Backoff
from forgellm.advisor.schemas import Fix, PlanProposal, RecipeProposal

KEY = "AIzaSy-test-SECRET-key-0123456789"
MODEL = "gemini-test"
FAST = Backoff(base_seconds=0.001, cap_seconds=0.005)
SLOW = Backoff(base_seconds=5.0, cap_seconds=10.0)  # would make a test take seconds if a wait were not skipped
FIX_ANSWER = {"problem": "oom", "explanation": "Out of memory.", "changes": [], "retry": True}
GEMINI_KEYWORDS = {
    "type", "format", "description", "enum", "items", "minItems", "maxItems", "minimum", "maximum",
    "required", "properties", "additionalProperties", "anyOf",
}  # fmt: skip


def make_client(url: str, **overrides) -> GeminiClient:
    settings = {
        "api_key": KEY,
        "model": MODEL,
        "base_url": url,
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "backoff": FAST,
    }
    return GeminiClient(**{**settings, **overrides})


def ask(client: GeminiClient) -> str:
    return client.generate_json(system="You plan fine-tuning runs.", prompt="Why did training fail?", schema=Fix)


def test_good_answer_returns_the_text_and_sends_system_prompt_schema_and_key_header():
    text = json.dumps(FIX_ANSWER)
    with gemini_server([Reply.json(text)]) as server:
        assert ask(make_client(server.url)) == text

    [request] = server.requests
    assert request.path == f"/v1beta/models/{MODEL}:generateContent"
    body = request.json
    assert body["systemInstruction"]["parts"][0]["text"] == "You plan fine-tuning runs."
    assert body["contents"][0]["parts"][0]["text"] == "Why did training fail?"
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"] == gemini_json_schema(Fix)
    # The key travels in the header only: not in the body, not in the URL.
    assert request.headers["x-goog-api-key"] == KEY
    assert KEY.encode() not in request.raw_body
    assert request.query == {}


@pytest.mark.parametrize("model", [Fix, PlanProposal, RecipeProposal])
def test_sent_schema_uses_only_keywords_gemini_accepts_and_stays_strict(model):
    schema = gemini_json_schema(model)

    def walk(node):
        assert set(node) <= GEMINI_KEYWORDS, set(node) - GEMINI_KEYWORDS
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
        for child in node.get("properties", {}).values():
            walk(child)
        for child in node.get("anyOf", []):
            walk(child)
        if "items" in node:
            walk(node["items"])

    walk(schema)
    assert set(schema["required"]) == {name for name, f in model.model_fields.items() if f.is_required()}


def test_schema_keeps_enums_unions_and_bounds():
    plan = gemini_json_schema(PlanProposal)["properties"]
    assert plan["method"] == {"type": "string", "enum": ["lora", "qlora", "full"]}
    assert plan["epochs"]["anyOf"] == [{"type": "number", "minimum": 0, "maximum": 100}, {"type": "null"}]
    change = gemini_json_schema(Fix)["properties"]["changes"]["items"]  # was a $ref into $defs
    assert change["properties"]["value"]["anyOf"][0] == {"type": "boolean"}
    assert change["properties"]["key"]["description"] == "Dotted forge.yaml key."


def test_model_text_comes_back_as_is_even_when_malformed_or_hostile():
    # Judging the text (JSON, schema, rules) is the caller's job, for every provider alike.
    hostile = json.dumps({**FIX_ANSWER, "advice": INJECTED_INSTRUCTIONS})
    with gemini_server([Reply.json("{not json"), Reply.json(hostile)]) as server:
        client = make_client(server.url)
        assert ask(client) == "{not json"
        assert ask(client) == hostile


def test_429_is_retried_at_once_when_retry_after_is_zero():
    with gemini_server([Reply.status(429, retry_after=0), Reply.json("{}")]) as server:
        started = time.monotonic()
        assert ask(make_client(server.url, backoff=SLOW)) == "{}"
        elapsed = time.monotonic() - started
    assert len(server.requests) == 2
    assert elapsed < 2.0  # the 5 s exponential wait was replaced by the server's 0


def test_retry_after_and_gemini_retry_info_set_the_wait():
    script = [Reply.status(503, retry_after=1), Reply.status(429, retry_delay="0.5s"), Reply.json("{}")]
    with gemini_server(script) as server:
        started = time.monotonic()
        assert ask(make_client(server.url)) == "{}"
        elapsed = time.monotonic() - started
    assert len(server.requests) == 3
    assert elapsed >= 1.4


def test_a_long_retry_after_is_capped():
    capped = Backoff(base_seconds=0.001, cap_seconds=0.005, retry_after_cap_seconds=0.05)
    with gemini_server([Reply.status(429, retry_after=3600), Reply.json("{}")]) as server:
        started = time.monotonic()
        assert ask(make_client(server.url, backoff=capped)) == "{}"
    assert time.monotonic() - started < 2.0


def test_server_errors_give_up_after_max_retries_plus_one_attempts():
    with gemini_server([Reply.status(500)]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url, max_retries=2))
    assert len(server.requests) == 3
    assert "3 attempts" in caught.value.message and "500" in caught.value.message
    assert "Gemini" in caught.value.message and caught.value.fix


@pytest.mark.usefixtures("fast_retries")
def test_default_backoff_can_be_made_fast_for_whole_test_suites():
    with gemini_server([Reply.status(503)]) as server:
        started = time.monotonic()
        with pytest.raises(AdvisorUnavailable):
            ask(GeminiClient(api_key=KEY, model=MODEL, base_url=server.url, max_retries=3))
    assert len(server.requests) == 4
    assert time.monotonic() - started < 2.0


def test_a_slow_server_times_out_quickly():
    with gemini_server([Reply.sleep(10)]) as server:
        started = time.monotonic()
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url, timeout_seconds=0.3, max_retries=1))
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert len(server.requests) == 2
    assert "no response within 0.3 s" in caught.value.message


def test_connection_refused_is_unavailable_after_retries():
    with pytest.raises(AdvisorUnavailable) as caught:
        ask(make_client(closed_port_url(), max_retries=1))
    assert "2 attempts" in caught.value.message and "could not reach" in caught.value.message


@pytest.mark.parametrize(
    "reply", [Reply.status(401), Reply.status(403), Reply.key_invalid()], ids=["401", "403", "400-key"]
)
def test_a_rejected_key_is_an_auth_error_without_retry(reply):
    with gemini_server([reply]) as server:
        with pytest.raises(AdvisorAuthError) as caught:
            ask(make_client(server.url))
    assert len(server.requests) == 1
    assert "Gemini rejected the API key" in caught.value.message
    assert "forge login --provider gemini" in caught.value.fix and "GEMINI_API_KEY" in caught.value.fix


def test_an_empty_key_is_refused_before_any_request():
    with pytest.raises(AdvisorAuthError):
        GeminiClient(api_key="  ", model=MODEL)


def test_another_client_error_is_not_retried_and_names_the_server_message():
    with gemini_server([Reply.status(404, message="models/gemini-test is not found")]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url))
    assert len(server.requests) == 1
    assert "models/gemini-test is not found" in caught.value.message
    assert "advisor.model" in caught.value.fix


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply.raw("<html>proxy says hello</html>", content_type="text/html"), "not a Gemini API response"),
        (Reply.empty(), "no answer"),
        (Reply.blocked(), "blocked the request (SAFETY)"),
        (Reply.json(""), "empty answer"),
    ],
    ids=["not-json", "no-candidates", "blocked", "empty-text"],
)
def test_a_response_without_an_answer_is_an_answer_error(reply, words):
    with gemini_server([reply]) as server:
        with pytest.raises(AdvisorAnswerError) as caught:
            ask(make_client(server.url))
    assert words in caught.value.message
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "script",
    [
        [Reply.status(401, message=f"key {KEY} is wrong")],
        [Reply.status(404, message=f"unknown key {KEY}")],
        [Reply.status(500, message=f"upstream saw {KEY}")],
        [Reply.key_invalid()],
        [Reply.raw(f"not json {KEY}")],
        [Reply.blocked()],
        [Reply.sleep(10)],
    ],
    ids=["401-echo", "404-echo", "500-echo", "400-key", "raw-echo", "blocked", "timeout"],
)
def test_the_key_never_appears_in_errors_or_reprs(script):
    with gemini_server(script) as server:
        client = make_client(server.url, timeout_seconds=0.3, max_retries=1)
        with pytest.raises(AdvisorError) as caught:
            ask(client)
    error = caught.value
    shown = [str(error), repr(error), error.fix or "", repr(client), "".join(traceback.format_exception(error))]
    assert all(KEY not in text for text in shown)


def test_importing_the_client_does_not_import_the_sdk():
    code = "import sys, forgellm.advisor.gemini; print('google.genai' in sys.modules, 'httpx' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
