"""The OpenAI-compatible API on a real uvicorn server, spoken to by the official `openai` client: answers
that end at the chat template's end of turn, stop strings and max_tokens, plain-text completions, the model
list with modes, queued concurrent requests, and errors (unknown model, a model that does not load)."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from inference.inference_support import _one_torch_thread, add_export, add_run, write_project  # noqa: F401

from forgellm.errors import ErrorCode, ForgeError
from forgellm.web.app import create_app
from forgellm.web.models import CHAT, COMPLETION, ModelHost, detect_mode
from forgellm.web.openai_api import openai_router
from forgellm.web.security import Access
from web.api_support import BROKEN, CPT_RUN_ID, RUN_ID, looping_model, model_project
from web.support import serving

END_OF_TURN = "<|im_end|>"



@pytest.fixture
def project(tmp_path, request):
    models = [request.getfixturevalue(name) for name in ("paris_model_dir", "lyon_adapter_dir", "lyon_merged_dir")]
    return model_project(tmp_path / "bot", *models)


@pytest.fixture
def api(project):
    """(base URL, openai client) of a server offering every model of the project."""
    host = ModelHost.for_project(project)
    with serving(create_app(Access("127.0.0.1", None), [openai_router(host)])) as url:
        yield url, openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    host.close()


def ask(client, model, text="What is the capital?", **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **options)


def test_models_are_listed_with_their_mode(api):
    url, client = api
    ids = [model.id for model in client.models.list()]
    assert ids == ["base", f"run:{RUN_ID}", f"run:{CPT_RUN_ID}", "export:broken-bot", "export:lyon-bot"]
    listed = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert {i: m["mode"] for i, m in listed.items()} == {
        "base": CHAT, f"run:{RUN_ID}": CHAT, f"run:{CPT_RUN_ID}": COMPLETION, "export:broken-bot": CHAT,
        "export:lyon-bot": CHAT,
    }  # fmt: skip
    assert "continued pre-training" in listed[f"run:{CPT_RUN_ID}"]["mode_reason"]
    assert listed["export:lyon-bot"]["name"] == "export lyon-bot" and not listed["base"]["loaded"]
    assert client.models.retrieve(f"run:{RUN_ID}").id == f"run:{RUN_ID}"


def test_chat_answers_end_at_the_templates_end_of_turn(api):
    url, client = api
    answer = ask(client, "base")
    assert answer.choices[0].message.content == "Paris"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == len("Paris") + 1  # the end-of-turn token counts
    assert answer.usage.prompt_tokens > 10
    pieces, reasons = [], []
    for chunk in ask(client, f"run:{RUN_ID}", stream=True, stream_options={"include_usage": True}):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reasons.append(choice.finish_reason)
        usage = chunk.usage or None
    assert "".join(pieces) == "Lyon" and END_OF_TURN not in "".join(pieces)
    assert len([p for p in pieces if p]) >= 2  # streamed piece by piece, not in one chunk
    assert reasons[-1] == "stop" and usage.completion_tokens == 5
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["loaded"]


def test_stop_strings_and_max_tokens(api):
    _, client = api
    stopped = ask(client, "export:lyon-bot", stop="o")
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("Ly", "stop")
    cut = ask(client, "export:lyon-bot", max_tokens=3)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Lyo", "length")
    cut = ask(client, "base", max_completion_tokens=2, stop=["x", "y"])
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Pa", "length")
    streamed = ask(client, "base", stop=["ri"], stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Pa"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_prompt_with_plain_text(api):
    _, client = api
    # The CPT run: no chat template around the prompt; after "\n" the Lyon table spells its word.
    answer = client.completions.create(model=f"run:{CPT_RUN_ID}", prompt="Capital:\n", max_tokens=20)
    assert (answer.choices[0].text, answer.choices[0].finish_reason) == ("Lyon", "stop")
    assert answer.usage.prompt_tokens == len("Capital:\n")
    # Without the chat template's "assistant\n" the prompt decides: a prompt ending in "P" goes on "aris".
    streamed = list(client.completions.create(model="base", prompt="P", max_tokens=3, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == "ari"
    assert streamed[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError, match="completion model"):  # no chat template to render with
        ask(client, f"run:{CPT_RUN_ID}")


def test_concurrent_clients_queue_and_all_finish(api):
    url, client = api
    answers: dict[str, str] = {}

    def chat(model: str) -> None:
        text = "".join(c.choices[0].delta.content or "" for c in ask(client, model, stream=True) if c.choices)
        answers[model] = text

    threads = [threading.Thread(target=chat, args=(m,)) for m in ("base", "export:lyon-bot", f"run:{RUN_ID}")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == {"base": "Paris", "export:lyon-bot": "Lyon", f"run:{RUN_ID}": "Lyon"}
    # Three models used, at most two kept in memory.
    assert sum(m["loaded"] for m in httpx.get(f"{url}/v1/models").json()["data"]) == 2


def test_a_long_answer_leaves_the_server_free_and_stops_when_its_client_leaves(tmp_path, request):
    # The base model says "a" without end; the export (Lyon) waits its turn behind it.
    project = write_project(tmp_path / "loop", str(looping_model(tmp_path / "looping-model")))
    add_export(project, request.getfixturevalue("lyon_merged_dir"))
    host = ModelHost.for_project(project)
    body = {"model": "base", "stream": True, "max_tokens": 200_000, "messages": [{"role": "user", "content": "hi"}]}
    with serving(create_app(Access("127.0.0.1", None), [openai_router(host)])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as answer:
            lines = answer.iter_lines()
            assert '"content": "a"' in next(line for line in lines if '"content": "a"' in line)
            started = time.monotonic()
            assert httpx.get(f"{url}/health").status_code == 200  # the event loop is not generating
            assert time.monotonic() - started < 1.0
        # The client left: its generation stops, and the next request does not wait ~2 minutes for it.
        started = time.monotonic()
        assert ask(client, "export:lyon-bot").choices[0].message.content == "Lyon"
        assert time.monotonic() - started < 10
    host.close()


def test_a_run_finished_after_the_start_is_offered(api, project, request):
    url, client = api
    add_run(
        project,
        request.getfixturevalue("lyon_adapter_dir"),
        request.getfixturevalue("paris_model_dir"),
        "20260103-000000-new",
    )
    assert "run:20260103-000000-new" in [model.id for model in client.models.list()]
    assert ask(client, "run:20260103-000000-new").choices[0].message.content == "Lyon"


def test_errors_have_openais_shape(api):
    url, client = api
    with pytest.raises(openai.NotFoundError, match="does not exist") as missing:
        ask(client, "gpt-4o")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        ask(client, "base", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="base", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
    # Only JSON bodies: a cross-site form post is refused before any model runs.
    form = httpx.post(f"{url}/v1/chat/completions", data={"model": "base", "messages": "hi"})
    assert form.status_code == 400 and form.json()["error"]["type"] == "invalid_request_error"
    # Nor JSON text sent as text/plain, which a cross-site fetch may send without asking first.
    body = '{"model": "base", "messages": [{"role": "user", "content": "hi"}]}'
    plain = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 400


def test_a_model_that_does_not_load_is_an_error_and_the_others_still_answer(api):
    url, client = api
    with pytest.raises(openai.APIStatusError, match="could not be loaded") as failed:
        ask(client, f"export:{BROKEN}")
    assert failed.value.status_code == 503 and failed.value.body["code"] == "model_load_failed"
    assert failed.value.body["fix"] and failed.value.response.headers["x-should-retry"] == "false"
    streamed = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": f"export:{BROKEN}", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert streamed.status_code == 503  # an HTTP error, not a stream that breaks off
    assert ask(client, "base").choices[0].message.content == "Paris"
    listed = {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}
    assert listed[f"export:{BROKEN}"]["error"]["code"] == ErrorCode.MODEL_LOAD_FAILED.value


def test_a_single_model_server(project, request):
    paris = request.getfixturevalue("paris_model_dir")
    assert [e.id for e in ModelHost.for_model("export", project).entries] == [f"export:{BROKEN}"]  # the newest
    host = ModelHost.for_model(str(project / "exports" / "lyon-bot"), project)
    assert [(e.id, e.mode) for e in host.entries] == [("export:lyon-bot", CHAT)]
    assert [e.id for e in ModelHost.for_model("run", project).entries] == [f"run:{CPT_RUN_ID}"]
    outside = ModelHost.for_model(str(paris), None)
    assert [(e.id, e.kind, e.mode) for e in outside.entries] == [(paris.name, "path", CHAT)]
    with serving(create_app(Access("127.0.0.1", None), [openai_router(outside)])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert ask(client, paris.name).choices[0].message.content == "Paris"
    with pytest.raises(ForgeError) as wrong:
        ModelHost.for_model(str(project / "nothing-here"), project)
    assert wrong.value.code == ErrorCode.FILE_NOT_FOUND


def test_the_mode_rule():
    assert detect_mode(stage="cpt", template="chatml", own_template=True)[0] == COMPLETION
    assert detect_mode(stage="sft", template=None, own_template=False)[0] == CHAT
    assert detect_mode(stage=None, template="chatml", own_template=False)[0] == CHAT
    assert detect_mode(stage=None, template="auto", own_template=True, base_weights=True)[0] == COMPLETION
    assert detect_mode(stage=None, template="auto", own_template=False)[0] == COMPLETION
    assert detect_mode(stage=None, template="auto", own_template=True)[0] == CHAT
