"""Forge's OpenAI-compatible advisor against a real llama.cpp server (xllamacpp) serving SmolLM2-135M.

The protocol, the JSON-schema grammar, the timeouts, retries and error bodies are llama.cpp's own; only
the model is tiny, so its data recipe may be wrong: then the rules' detection must stand, with a
visible warning saying why, and forge.yaml must never name a column the file does not have.
"""

from __future__ import annotations

import csv
import time
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tiny_project_support import SHARED_DATA
from typer.testing import CliRunner

from advisor.llm_server import LocalLLMServer
from advisor.servers import fast_retries  # noqa: F401
from forgellm.advisor.errors import AdvisorAnswerError, AdvisorUnavailable
from forgellm.advisor.llm import parse_answer
from forgellm.advisor.openai_compat import OpenAICompatClient
from forgellm.advisor.retry import Backoff
from forgellm.advisor.sampling import build_data_request
from forgellm.advisor.schemas import Fix, PlanProposal, RecipeProposal, ScriptProposal
from forgellm.advisor.select import make_advisor
from forgellm.cli.main import app
from forgellm.config.io import load_config
from forgellm.config.schema import AdvisorSection, DataSection
from forgellm.data.read.formats import detect_format
from forgellm.data.read.readers import open_dataset, sample_records
from forgellm.errors import ErrorCode, ForgeError
from forgellm.planning.profile import profile_data

GOAL = "Answer our customers' support tickets politely"
MODEL = "smollm2-135m"
FALLBACK = "used the offline rules instead"
FAST = Backoff(base_seconds=0.001, cap_seconds=0.01)
SLOW_SECONDS = 300  # a generous limit for real answers: a busy CI machine runs llama.cpp several times slower
runner = CliRunner()


@pytest.fixture
def tickets(tmp_path):
    """The first 40 tickets of the Bitext customer-support CSV (11 columns), as a user would hand them over."""
    source = SHARED_DATA / "bitext_customer_support.csv"
    if not source.is_file():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    with source.open(newline="", encoding="utf-8") as handle:
        rows = [row for _, row in zip(range(41), csv.reader(handle), strict=False)]
    path = tmp_path / "tickets.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path, rows[0]


def section(url: str, **changes) -> AdvisorSection:
    # Two sample rows keep the data question near 2,100 tokens: ~10 s of prompt processing on two cores.
    values = {
        "provider": "openai", "base_url": url, "model": MODEL, "sample_rows": 2, "max_retries": 0,
        "timeout_seconds": SLOW_SECONDS,
    }  # fmt: skip
    return AdvisorSection(**{**values, **changes})


def data_request(path, records, sample_rows=2):
    detection = detect_format(records, kind="csv")
    return build_data_request(
        records, file_name=path.name, kind="csv", goal=GOAL, hint=detection.to_dict(), sample_rows=sample_rows,
        redact_pii=True,
    )  # fmt: skip


def named_columns(recipe) -> list[str]:
    return [c for v in recipe.columns.values() for c in ([v] if isinstance(v, str) else v)]


def warnings_of(notes: list[str]) -> list[str]:
    return [n for n in notes if n.startswith("Warning:")]


def test_data_understanding_by_the_real_server_fits_the_real_columns_or_the_rules_answer_with_a_warning(
    llm_server, tickets
):
    """profile_data, as `forge plan` runs it: the data question goes to llama.cpp; whatever SmolLM2
    answers, the recipe maps only columns of the file, and a rules fallback is a warning with its reason."""
    path, header = tickets
    settings = section(llm_server.url)
    advisor = make_advisor(settings, path.parent)
    profile = profile_data(path, GOAL, advisor, settings, DataSection())

    assert advisor.notes[0].startswith(f"Sent to {MODEL} (openai): the goal, 2 of 40 sampled rows")
    assert named_columns(profile.recipe) and set(named_columns(profile.recipe)) <= set(header)
    warnings = warnings_of(advisor.notes)
    if warnings:  # SmolLM2's recipe was unusable: the warning says why, and the rules' detection stands
        [warning] = warnings
        assert ".;" not in warning
        if "does not fit the file" in warning:
            # Real columns, but applied to the sample as prepare would, the recipe makes (almost) no examples.
            assert warning.startswith("Warning: the openai advisor's data recipe") and "sampled rows" in warning
            assert profile.recipe_source == "rules detection"
        elif "openai's data answer was unusable: " in warning:
            assert FALLBACK in warning and profile.recipe_source == "advisor:rules"
            # The grammar held: the answer was JSON of the RecipeProposal schema, unless the server's token
            # cap cut it; what failed is the check against the real columns.
            reason = warning.split("unusable: ", 1)[1]
            assert reason.startswith(("the proposed recipe", "The model's answer was cut off")), reason
        else:
            assert FALLBACK in warning and "openai was unavailable" in warning  # a busy machine may time out
        detection = detect_format(sample_records(open_dataset(path), 100), kind="csv")
        assert (profile.format, profile.recipe.columns) == (detection.format, detection.recipe.columns)
    else:  # SmolLM2's own recipe passed the checks against the real columns
        assert profile.recipe_source == "advisor:openai" and len(advisor.notes) == 1


@pytest.mark.slow  # two questions of ~2,000 and ~3,800 prompt tokens: ~40 s of llama.cpp on two cores
def test_forge_plan_with_the_real_server_writes_only_real_columns_and_prints_any_fallback(
    llm_server, tickets, tmp_path
):
    """`forge plan` end to end through the CLI: both advisor questions go to llama.cpp; forge.yaml maps
    only columns of the file, and every rules fallback is printed with its reason."""
    path, header = tickets
    root = tmp_path / "bot"
    assert runner.invoke(app, ["init", str(root), "--advisor", "openai", "--base-url", llm_server.url]).exit_code == 0
    config_file = root / "forge.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["advisor"].update(model=MODEL, sample_rows=2, max_retries=0, timeout_seconds=SLOW_SECONDS)
    config_file.write_text(yaml.safe_dump(config))

    result = runner.invoke(app, ["plan", GOAL, "--data", str(path), "--project", str(root)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = load_config(root).config
    assert named_columns(written.data.recipe) and set(named_columns(written.data.recipe)) <= set(header)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert f"Sent to {MODEL} (openai): the goal, 2 of 40 sampled rows" in output
    assert f"Sent to {MODEL} (openai): the goal, the hardware summary" in output
    fallbacks = output.count(FALLBACK)
    assert fallbacks == output.count("advisor: Warning:")  # each fallback is a printed warning
    if "data answer was unusable" in output or "was unavailable" in output.split("the hardware summary")[0]:
        detection = detect_format(sample_records(open_dataset(path), 100), kind="csv")
        assert (written.data.format, written.data.recipe.columns) == (detection.format, detection.recipe.columns)


def test_the_json_schema_reaches_the_server_and_its_grammar_shapes_the_answer(llm_server):
    """A schema no model would follow unprompted (made-up enum values) comes back satisfied: llama.cpp
    received the schema in response_format and turned it into a grammar."""

    class Pet(BaseModel):
        model_config = ConfigDict(extra="forbid")
        animal: Literal["quokka-7", "axolotl-3"]

    client = OpenAICompatClient(
        base_url=llm_server.url, model=MODEL, timeout_seconds=SLOW_SECONDS, max_retries=0, backoff=FAST
    )
    text = client.generate_json(system="You are helpful.", prompt="Say hello to me.", schema=Pet)
    pet = parse_answer(text, Pet)  # raises AdvisorAnswerError if the answer broke the schema
    assert pet.animal in ("quokka-7", "axolotl-3")


@pytest.mark.usefixtures("fast_retries")
def test_a_timeout_retries_then_the_rules_answer_with_a_warning(llm_server, tickets):
    """50 ms is far less than llama.cpp needs for ~2,000 prompt tokens: each attempt times out, the
    retry runs, and the plan goes on with the rules' detection and a warning naming the timeout."""
    path, header = tickets
    settings = section(llm_server.url, timeout_seconds=0.05, max_retries=1)
    advisor = make_advisor(settings, path.parent)
    started = time.monotonic()
    profile = profile_data(path, GOAL + " (timeout)", advisor, settings, DataSection())
    assert time.monotonic() - started < 30  # two 50 ms attempts, not a 300 s wait
    [warning] = warnings_of(advisor.notes)
    assert "did not answer after 2 attempts: no response within 0.05 s" in warning and FALLBACK in warning
    detection = detect_format(sample_records(open_dataset(path), 100), kind="csv")
    assert (profile.format, profile.recipe.columns) == (detection.format, detection.recipe.columns)
    assert set(named_columns(profile.recipe)) <= set(header)


def test_a_stopped_server_is_a_clear_error_or_a_fallback_note(tickets):
    """The server was there and is gone (its port now refuses): the client raises AdvisorUnavailable (a
    ForgeError with a fix), and the planning path falls back to the rules, saying why."""
    path, _ = tickets
    with LocalLLMServer(context=512, max_tokens=8) as server:
        url = server.url
    assert not server.running

    client = OpenAICompatClient(base_url=url, model=MODEL, timeout_seconds=5, max_retries=1, backoff=FAST)
    with pytest.raises(AdvisorUnavailable) as caught:
        client.generate_json(system="s", prompt="p", schema=RecipeProposal)
    assert isinstance(caught.value, ForgeError) and caught.value.code == ErrorCode.ADVISOR_UNAVAILABLE
    assert "did not answer after 2 attempts: could not reach" in caught.value.message
    assert "is running and reachable" in caught.value.fix

    settings = section(url)
    advisor = make_advisor(settings, path.parent)
    profile = profile_data(path, GOAL, advisor, settings, DataSection())
    [warning] = warnings_of(advisor.notes)
    assert "was unavailable" in warning and "could not reach" in warning and FALLBACK in warning
    assert profile.format == detect_format(sample_records(open_dataset(path), 100), kind="csv").format


@pytest.fixture(scope="module")
def cramped_server():
    """A real server with 512 tokens of context and answers capped at 8 tokens: what a small self-hosted
    set-up looks like to Forge's data question (~1,800 tokens) and to any answer longer than a word."""
    with LocalLLMServer(context=512, max_tokens=8) as server:
        yield server


def test_a_request_longer_than_the_servers_context_says_so_and_how_to_send_less(cramped_server, tickets):
    """llama.cpp answers 400 "exceeds the available context size": that is neither a wrong URL nor a wrong
    model, so the message names the context window and the fix names advisor.sample_rows."""
    path, header = tickets
    client = OpenAICompatClient(base_url=cramped_server.url, model=MODEL, timeout_seconds=30, max_retries=0)
    from forgellm.advisor import prompts

    system, prompt = prompts.data_prompt(data_request(path, sample_records(open_dataset(path), 100), sample_rows=1))
    with pytest.raises(AdvisorUnavailable) as caught:
        client.generate_json(system=system, prompt=prompt, schema=RecipeProposal)
    assert "longer than the model's context window" in caught.value.message
    assert "HTTP 400" in caught.value.message and "context size" in caught.value.message  # llama.cpp's own words
    assert "advisor.sample_rows" in caught.value.fix and "--ctx-size" in caught.value.fix
    assert "advisor.base_url" not in caught.value.fix

    settings = section(cramped_server.url, sample_rows=0)  # column statistics only: still over 512 tokens
    advisor = make_advisor(settings, path.parent)
    profile = profile_data(path, GOAL, advisor, settings, DataSection())
    [warning] = warnings_of(advisor.notes)
    assert "longer than the model's context window" in warning and FALLBACK in warning
    assert set(named_columns(profile.recipe)) <= set(header)


def test_an_answer_cut_at_the_servers_token_limit_is_named_as_such(cramped_server):
    """8 tokens cannot hold a story: llama.cpp stops with finish_reason "length". The user hears that the
    answer was cut, not that the model wrote invalid JSON."""

    class Story(BaseModel):
        text: str = Field(min_length=200)

    client = OpenAICompatClient(base_url=cramped_server.url, model=MODEL, timeout_seconds=30, max_retries=0)
    with pytest.raises(AdvisorAnswerError) as caught:
        client.generate_json(system="Answer in JSON.", prompt="Tell me a long story.", schema=Story)
    assert "cut off at the server's token limit" in caught.value.message
    assert "finish reason: length" in caught.value.message
    assert "--n-predict" in caught.value.fix


@pytest.mark.parametrize("schema", [PlanProposal, Fix, ScriptProposal], ids=lambda s: s.__name__)
def test_llama_cpp_accepts_the_schema_of_every_other_advisor_answer(cramped_server, schema):
    """The plan, diagnosis and script questions carry their own schemas (numeric bounds, patterns, long
    strings): llama.cpp takes each as a grammar and starts answering, cut by the 8-token cap, rather than
    refusing the request (which the client would report as a wrong base_url or model)."""
    client = OpenAICompatClient(base_url=cramped_server.url, model=MODEL, timeout_seconds=SLOW_SECONDS, max_retries=0)
    with pytest.raises(AdvisorAnswerError) as caught:
        client.generate_json(system="Answer in JSON.", prompt="Go.", schema=schema)
    assert "finish reason: length" in caught.value.message
