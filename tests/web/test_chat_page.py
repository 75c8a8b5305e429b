"""The chat page in a real browser (Debian's chromium through Playwright) on a real server: the models and
their modes in the pickers, a streamed answer, two models side by side, and a model that does not load
shown as its error (message and fix) while the page keeps working."""

from __future__ import annotations

import pytest

from forgellm.web.app import create_app
from forgellm.web.chat_page import chat_router
from forgellm.web.models import ModelHost
from forgellm.web.openai_api import openai_router
from forgellm.web.security import Access
from web.api_support import BROKEN, CPT_RUN_ID, model_project
from web.support import serving


@pytest.fixture
def chat_url(tmp_path, request):
    import torch

    models = [request.getfixturevalue(name) for name in ("paris_model_dir", "lyon_adapter_dir", "lyon_merged_dir")]
    project = model_project(tmp_path / "bot", *models)
    host = ModelHost.for_project(project)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with serving(create_app(Access("127.0.0.1", None), [openai_router(host), chat_router(host, project)])) as url:
            yield f"{url}/chat"
    finally:
        host.close()
        torch.set_num_threads(threads)


def send(page, text):
    page.fill("#message", text)
    page.press("#message", "Enter")


def test_a_message_gets_a_streamed_answer_and_two_models_compare(page, chat_url):
    page.goto(chat_url)
    page.wait_for_selector("#model-a option[value='base']", state="attached")
    assert page.locator("nav a.here").inner_text() == "Chat"
    page.select_option("#model-a", "base")
    assert page.locator("#lane-a .mode").inner_text() == "chat template"
    send(page, "What is the capital? <b>bold</b>")
    answer = page.locator("#lane-a .turn.assistant .text")
    answer.filter(has_text="Paris").wait_for()
    page.locator("#lane-a .turn.assistant .meta").wait_for()
    assert answer.inner_text() == "Paris" and "ended its turn" in page.locator("#lane-a .meta").inner_text()
    assert page.locator("#lane-a .turn.user").inner_text() == "What is the capital? <b>bold</b>"  # text, not markup
    page.check("#compare")
    page.select_option("#model-b", "export:lyon-bot")
    send(page, "And now?")
    page.locator("#lane-b .turn.assistant .meta").wait_for()
    page.locator("#lane-a .turn.assistant .meta").nth(1).wait_for()
    assert page.locator("#lane-a .turn.assistant .text").all_inner_texts() == ["Paris", "Paris"]
    assert page.locator("#lane-b .turn.assistant .text").all_inner_texts() == ["Lyon"]
    # A completion model gets the message as typed, as plain text: after its final newline it says "Lyon".
    page.select_option("#model-b", f"run:{CPT_RUN_ID}")
    assert page.locator("#lane-b .mode").inner_text() == "plain-text completion"
    page.fill("#message", "Capital:\n")
    page.click("#send")
    page.locator("#lane-b .turn.assistant .meta").wait_for()
    assert page.locator("#lane-b .turn.assistant .text").all_inner_texts() == ["Lyon"]


def test_a_model_that_does_not_load_shows_its_error_and_the_page_keeps_working(page, chat_url):
    page.goto(chat_url)
    page.wait_for_selector(f"#model-a option[value='export:{BROKEN}']", state="attached")
    page.select_option("#model-a", f"export:{BROKEN}")
    send(page, "Hello?")
    error = page.locator("#lane-a .turn.error")
    error.wait_for()
    assert "could not be loaded" in error.inner_text() and "Fix:" in error.inner_text()
    page.select_option("#model-a", "base")
    send(page, "Hello again")
    page.locator("#lane-a .turn.assistant .meta").wait_for()
    assert page.locator("#lane-a .turn.assistant .text").inner_text() == "Paris"
