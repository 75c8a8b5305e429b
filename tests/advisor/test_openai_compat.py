"""OpenAICompatClient against a real local server speaking the OpenAI chat-completions protocol."""

from __future__ import annotations

import email.utils
import json
import subprocess
import sys
import time
import traceback

import pytest

from advisor.servers import INJECTED_INSTRUCTIONS, Reply, closed_port_url, openai_server
from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorError, AdvisorUnavailable
from forgellm.advisor.openai_compat import OpenAICompatClient, chat_completions_url
from forgellm.advisor.retry import Backoff, parse_retry_after
from forgellm.advisor.schemas import Fix

KEY = "sk-test-SECRET-key-0123456789"
MODEL = "qwen2.5:7b"
FAST = Backoff(base_seconds=0.001, cap_seconds=0.005)
SLOW = Backoff(base_seconds=5.0, cap_seconds=10.0)  # would make a test take seconds if a wait were not skipped
FIX_ANSWER = {"problem": "oom", "explanation": "Out of memory.", "changes": [], "retry": True}


def make_client(url: str, **overrides) -> OpenAICompatClient:
    settings = {
        "base_url": url,
        "model": MODEL,
        "api_key": KEY,
        "timeout_seconds": 5.0,
        "max_retries": 3,
        "backoff": FAST,
    }
    return OpenAICompatClient(**{**settings, **overrides})


def ask(client: OpenAICompatClient) -> str:
    return client.generate_json(system="You plan fine-tuning runs.", prompt="Why did training fail?", schema=Fix)


def test_good_answer_returns_the_text_and_sends_messages_schema_and_bearer_key():
    text = json.dumps(FIX_ANSWER)
    with openai_server([Reply.json(text)]) as server:
        assert server.url.endswith("/v1")
        assert ask(make_client(server.url)) == text

    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    body = request.json
    assert body["model"] == MODEL
    assert body["messages"] == [
        {"role": "system", "content": "You plan fine-tuning runs."},
        {"role": "user", "content": "Why did training fail?"},
    ]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Fix", "schema": Fix.model_json_schema(), "strict": False},
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY.encode() not in request.raw_body and request.query == {}


def test_without_a_key_no_authorization_header_is_sent():
    with openai_server([Reply.json("{}")]) as server:
        assert ask(make_client(server.url, api_key=None)) == "{}"
    assert "authorization" not in server.requests[0].headers


def test_a_base_url_without_v1_reaches_the_same_endpoint():
    with openai_server([Reply.json("{}")]) as server:
        assert ask(make_client(server.root)) == "{}"
    assert server.requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("base_url", "endpoint"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions"),
        ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1/chat/completions"),
        ("https://api.example.com/v1/chat/completions", "https://api.example.com/v1/chat/completions"),
        (
            "https://generativelanguage.googleapis.com/v1beta/openai/",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
        ),
    ],
)
def test_chat_completions_url(base_url, endpoint):
    assert chat_completions_url(base_url) == endpoint


def test_model_text_comes_back_as_is_even_when_malformed_or_hostile():
    hostile = json.dumps({**FIX_ANSWER, "advice": INJECTED_INSTRUCTIONS})
    with openai_server([Reply.json('{"problem": 42'), Reply.json(hostile)]) as server:
        client = make_client(server.url)
        assert ask(client) == '{"problem": 42'
        assert ask(client) == hostile


def test_a_rejected_json_schema_falls_back_to_json_object_with_the_schema_in_the_instructions():
    with openai_server([Reply.schema_unsupported(), Reply.json("{}")]) as server:
        assert ask(make_client(server.url)) == "{}"
    first, second = server.requests
    assert first.json["response_format"]["type"] == "json_schema"
    assert second.json["response_format"] == {"type": "json_object"}
    system = second.json["messages"][0]["content"]
    assert system.startswith("You plan fine-tuning runs.")
    assert "JSON" in system and json.dumps(Fix.model_json_schema()) in system


def test_the_json_object_fallback_is_tried_once_only():
    with openai_server([Reply.schema_unsupported()]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url))
    assert len(server.requests) == 2
    assert "response_format" in caught.value.message


def test_an_unrelated_400_does_not_fall_back_nor_retry():
    with openai_server([Reply.status(404, message="model 'qwen2.5:7b' not found, try pulling it first")]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url))
    assert len(server.requests) == 1
    assert "not found" in caught.value.message and "advisor.model" in caught.value.fix


def test_429_is_retried_at_once_when_retry_after_is_zero():
    with openai_server([Reply.status(429, retry_after=0), Reply.json("{}")]) as server:
        started = time.monotonic()
        assert ask(make_client(server.url, backoff=SLOW)) == "{}"
        elapsed = time.monotonic() - started
    assert len(server.requests) == 2
    assert elapsed < 2.0


def test_retry_after_sets_the_wait():
    with openai_server([Reply.status(503, retry_after=1), Reply.json("{}")]) as server:
        started = time.monotonic()
        assert ask(make_client(server.url)) == "{}"
    assert time.monotonic() - started >= 0.9


@pytest.mark.parametrize(
    ("header", "seconds"), [("0", 0.0), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("soon", None), ("", None), (None, None)]
)
def test_retry_after_header_values(header, seconds):
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date():
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 <= parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # already past


def test_server_errors_give_up_after_max_retries_plus_one_attempts():
    with openai_server([Reply.status(500)]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url, max_retries=2))
    assert len(server.requests) == 3
    assert "3 attempts" in caught.value.message and "HTTP 500" in caught.value.message
    assert server.url in caught.value.fix


def test_no_retries_means_one_attempt():
    with openai_server([Reply.status(502)]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url, max_retries=0))
    assert len(server.requests) == 1 and "after 1 attempt:" in caught.value.message


def test_a_slow_server_times_out_quickly():
    with openai_server([Reply.sleep(10)]) as server:
        started = time.monotonic()
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url, timeout_seconds=0.3, max_retries=1))
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert len(server.requests) == 2
    assert "no response within 0.3 s" in caught.value.message


def test_connection_refused_is_unavailable_after_retries():
    url = closed_port_url() + "/v1"
    with pytest.raises(AdvisorUnavailable) as caught:
        ask(make_client(url, max_retries=1))
    assert "2 attempts" in caught.value.message and "could not reach" in caught.value.message
    assert "is running" in caught.value.fix


@pytest.mark.parametrize("reply", [Reply.key_invalid(), Reply.status(403)], ids=["401", "403"])
def test_a_rejected_key_is_an_auth_error_without_retry(reply):
    with openai_server([reply]) as server:
        with pytest.raises(AdvisorAuthError) as caught:
            ask(make_client(server.url))
    assert len(server.requests) == 1
    assert "rejected the API key" in caught.value.message
    assert "forge login --provider openai" in caught.value.fix and "OPENAI_API_KEY" in caught.value.fix


def test_a_missing_key_says_so():
    with openai_server([Reply.status(401)]) as server:
        with pytest.raises(AdvisorAuthError) as caught:
            ask(make_client(server.url, api_key=None))
    assert "requires an API key" in caught.value.message


def test_content_sent_as_a_list_of_parts_is_joined():
    parts = [{"type": "text", "text": '{"a":'}, {"type": "text", "text": " 1}"}]
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": parts}, "finish_reason": "stop"}]}
    with openai_server([Reply.raw(json.dumps(body))]) as server:
        assert ask(make_client(server.url)) == '{"a": 1}'


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (Reply.raw("<html>It works!</html>", content_type="text/html"), "not JSON"),
        (Reply.raw('{"object": "list", "data": []}'), "no choices"),
        (Reply.empty(), "no choices"),
        (Reply.blocked(), "declined to answer: I can't help with that."),
        (Reply.json(""), "empty answer"),
    ],
    ids=["html", "other-json", "no-choices", "refusal", "empty-text"],
)
def test_a_response_without_an_answer_is_an_answer_error(reply, words):
    with openai_server([reply]) as server:
        with pytest.raises(AdvisorAnswerError) as caught:
            ask(make_client(server.url))
    assert words in caught.value.message
    assert len(server.requests) == 1


def _finished(content: str, reason: str) -> Reply:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": reason}
    return Reply.raw(json.dumps({"choices": [choice]}))


def test_an_answer_cut_at_the_token_limit_says_so_and_a_complete_one_at_the_limit_passes():
    fenced = "```json\n" + json.dumps(FIX_ANSWER) + "\n```"
    with openai_server([_finished('{"problem": "oom", "expl', "length"), _finished(fenced, "length")]) as server:
        with pytest.raises(AdvisorAnswerError) as caught:
            ask(make_client(server.url))
        assert ask(make_client(server.url)) == fenced  # complete JSON that happened to end at the limit
    assert "cut off at the server's token limit" in caught.value.message and "--n-predict" in caught.value.fix


@pytest.mark.parametrize(
    "message",
    [
        "request (2900 tokens) exceeds the available context size (2048 tokens), try increasing it",  # llama.cpp
        "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",  # vLLM, OpenAI
    ],
    ids=["llama.cpp", "vllm-openai"],
)
def test_a_prompt_longer_than_the_context_is_named_with_the_fix_to_send_less(message):
    with openai_server([Reply.status(400, message=message)]) as server:
        with pytest.raises(AdvisorUnavailable) as caught:
            ask(make_client(server.url))
    assert "longer than the model's context window" in caught.value.message and message[:40] in caught.value.message
    assert "advisor.sample_rows" in caught.value.fix and len(server.requests) == 1  # not retried


@pytest.mark.parametrize(
    "script",
    [
        [Reply.status(401, message=f"key {KEY} is wrong")],
        [Reply.status(400, message=f"bad request with key {KEY}")],
        [Reply.status(500, message=f"upstream saw {KEY}")],
        [Reply.raw(f"not json {KEY}")],
        [Reply.blocked()],
        [Reply.sleep(10)],
    ],
    ids=["401-echo", "400-echo", "500-echo", "raw-echo", "refusal", "timeout"],
)
def test_the_key_never_appears_in_errors_or_reprs(script):
    with openai_server(script) as server:
        client = make_client(server.url, timeout_seconds=0.3, max_retries=1)
        with pytest.raises(AdvisorError) as caught:
            ask(client)
    error = caught.value
    shown = [str(error), repr(error), error.fix or "", repr(client), "".join(traceback.format_exception(error))]
    assert all(KEY not in text for text in shown)


def test_importing_the_client_does_not_import_httpx():
    code = "import sys, forgellm.advisor.openai_compat; print('httpx' in sys.modules, 'tenacity' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
