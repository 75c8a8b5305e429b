"""`forge plan` with a remote advisor, end to end through the CLI against real local HTTP servers that
speak the Gemini and OpenAI protocols: what is sent, what is written, caching, fallbacks, guards."""

from __future__ import annotations

import json

import pytest
from advisor.servers import INJECTED_INSTRUCTIONS, Reply, closed_port_url, fast_retries, gemini_server, openai_server  # noqa: F401
from typer.testing import CliRunner

from forgellm.advisor import rules_plan
from forgellm.cli.main import app
from forgellm.config.io import load_config

runner = CliRunner()
GOAL = "Make a customer support bot"
KEY = "AIzaTEST-not-a-real-key-5f3a9c"
SYSTEM = "You are Ada, the friendly support agent of our shop."

RECIPE = {
    "format": "qa",
    "task_type": "chat",
    "columns": [
        {"field": "user", "column": "instruction"},
        {"field": "assistant", "column": "response"},
        {"field": "label", "column": "category"},
    ],
    "system_prompt": SYSTEM,
    "reasons": "instruction/response pairs of a support desk, labelled by category",
}
PLAN = {
    "model": "smollm2-135m",
    "method": "lora",
    "lora_r": 8,
    "lora_alpha": 16,
    "learning_rate": 1e-5,
    "micro_batch_size": 2,
    "gradient_accumulation": 8,
    "max_length": 512,
    "epochs": 2,
    "why_model": "small enough for this CPU",
    "why_method": "LoRA keeps memory low",
    "why_hyperparameters": "gentle learning rate for a small model",
}


@pytest.fixture
def bitext(shared_data):
    return shared_data / "bitext_customer_support.csv"


def _project(tmp_path, provider: str, url: str):
    root = tmp_path / "bot"
    result = runner.invoke(app, ["init", str(root), "--advisor", provider, "--base-url", url])
    assert result.exit_code == 0, result.output
    return root


def _plan(root, data, *extra: str):
    args = ["plan", GOAL, "--data", str(data), "--project", str(root), *extra]
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.mark.usefixtures("fast_retries")
def test_gemini_plan_end_to_end_then_reproducible_from_cache(tmp_path, monkeypatch, bitext):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with gemini_server([Reply.json(RECIPE), Reply.json(PLAN)]) as server:
        root = _project(tmp_path, "gemini", server.url)
        result = _plan(root, bitext, "--advisor", "gemini")
        requests = list(server.requests)
    assert result.exit_code == 0, result.output
    config = load_config(root).config
    assert (config.model.ref, config.training.lora.r, config.training.micro_batch_size) == ("smollm2-135m", 8, 2)
    assert config.data.format == "qa" and config.data.recipe.columns["user"] == "instruction"
    assert config.data.recipe.system_prompt == SYSTEM
    assert "gemini" in (config.training.rationale or "") or "gemini" in result.output

    # What left the machine: two requests, the key only in its header, at most 5 data rows, and said so.
    assert len(requests) == 2 and all(r.headers.get("x-goog-api-key") == KEY for r in requests)
    assert all(KEY not in r.raw_body.decode() for r in requests)
    assert "Sent to gemini" in result.output and "5 of" in result.output
    prompt = json.dumps(requests[0].json)
    assert prompt.count("cancel") < 40  # a sample of rows, not the file (which mentions it hundreds of times)

    cached = list((root / ".forge" / "advisor-cache").glob("*.json"))
    assert len(cached) == 2 and all(KEY not in p.read_text() for p in cached)
    assert KEY not in (root / "forge.yaml").read_text() and KEY not in result.output

    # The same plan again with the server gone: answered from the cache, same result.
    first = (root / "forge.yaml").read_text()
    monkeypatch.setenv("FORGE_ADVISOR__BASE_URL", closed_port_url())
    again = _plan(root, bitext, "--advisor", "gemini")
    assert again.exit_code == 0, again.output
    assert "from cache" in again.output, again.output
    assert load_config(root, environ={}).config.training == load_config(root, environ={}).config.training
    assert load_config(root, environ={}).config.model.ref == "smollm2-135m"
    assert (root / "forge.yaml").read_text().count("smollm2-135m") == first.count("smollm2-135m")


@pytest.mark.usefixtures("fast_retries")
def test_malformed_answers_fall_back_to_rules_with_a_warning(tmp_path, monkeypatch, bitext):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with gemini_server([Reply.json('{"format": "qa", "task_type": ')]) as server:  # truncated JSON, always
        root = _project(tmp_path, "gemini", server.url)
        result = _plan(root, bitext)
    assert result.exit_code == 0, result.output
    assert "used the offline rules instead" in result.output
    config = load_config(root).config
    assert config.model.ref == "smollm2-135m" and config.data.recipe.columns.get("user") == "instruction"


@pytest.mark.usefixtures("fast_retries")
def test_unreachable_server_falls_back_to_rules(tmp_path, monkeypatch, bitext):
    root = _project(tmp_path, "openai", closed_port_url() + "/v1")
    result = _plan(root, bitext)
    assert result.exit_code == 0, result.output
    assert "unavailable" in result.output and "used the offline rules instead" in result.output


@pytest.mark.usefixtures("fast_retries")
def test_hostile_answers_are_corrected_by_the_guards(tmp_path, monkeypatch, bitext):
    hostile_recipe = {**RECIPE, "reasons": INJECTED_INSTRUCTIONS}
    hostile_plan = {
        **PLAN,
        "model": "evil/backdoored-model",  # not a candidate
        "learning_rate": 0.009,  # inside the schema's bounds, absurd for LoRA on a 135M model
        "max_length": 1_000_000,  # beyond the model's context
        "micro_batch_size": 512,  # does not fit
        "why_model": INJECTED_INSTRUCTIONS,
    }
    with openai_server([Reply.json(hostile_recipe), Reply.json(hostile_plan)]) as server:
        root = _project(tmp_path, "openai", server.url)
        result = _plan(root, bitext)
    assert result.exit_code == 0, result.output
    config = load_config(root).config
    assert config.model.ref == "smollm2-135m"
    # Back inside the safe range for LoRA on a 135M model (a short run's rate is raised, at most to its top).
    assert config.training.learning_rate <= rules_plan.learning_rate_range(135_000_000, "lora")[1] < 0.009
    assert config.model.max_length <= 8192 and config.training.micro_batch_size <= 16
    rationale = (config.model.rationale or "") + (config.training.rationale or "")
    assert "corrected" in rationale
    # The advisor's own words may be quoted in a rationale (for the user to read); never in a setting.
    settings = config.model_dump(mode="json")
    for section in settings.values():
        if isinstance(section, dict):
            section.pop("rationale", None)
    assert "evil" not in json.dumps(settings)


@pytest.mark.usefixtures("fast_retries")
def test_rejected_key_stops_with_a_clear_message_and_never_shows_the_key(tmp_path, monkeypatch, bitext):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with gemini_server([Reply.key_invalid()]) as server:
        root = _project(tmp_path, "gemini", server.url)
        before = (root / "forge.yaml").read_text()
        result = _plan(root, bitext)
    assert result.exit_code == 1
    assert "rejected" in result.output and "forge login" in result.output
    assert KEY not in result.output
    assert (root / "forge.yaml").read_text() == before  # nothing written


@pytest.mark.usefixtures("fast_retries")
def test_rejected_key_falls_back_when_the_user_allows_it(tmp_path, monkeypatch, bitext):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("FORGE_ADVISOR__FALLBACK_ON_AUTH_ERROR", "true")
    with gemini_server([Reply.key_invalid()]) as server:
        root = _project(tmp_path, "gemini", server.url)
        result = _plan(root, bitext)
    assert result.exit_code == 0, result.output
    assert "rejected the API key" in result.output and KEY not in result.output
