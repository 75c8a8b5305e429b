"""Choosing the advisor, and falling back to the rules: visibly, and never leaking the API key."""

from __future__ import annotations

import json

import pytest

from forgellm.advisor.cache import AdvisorCache
from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorUnavailable
from forgellm.advisor.llm import LLMAdvisor
from forgellm.advisor.rules import RulesAdvisor
from forgellm.advisor.sampling import build_data_request
from forgellm.advisor.schemas import DiagnosisRequest, ScriptRequest
from forgellm.advisor.select import FallbackAdvisor, make_advisor
from forgellm.config.schema import AdvisorSection, ForgeConfig
from forgellm.data.read.records import Record
from forgellm.errors import ForgeError

SECRET = "AIzaSy-test-secret-0123456789abcdef"
ROWS = [
    {"question": "How do I reset my password?", "answer": "Open Settings and choose Reset password."},
    {"question": "Where is my parcel?", "answer": "It ships within two days; tracking is in your mail."},
]
GOOD_RECIPE = {
    "format": "qa",
    "task_type": "qa",
    "columns": [{"field": "user", "column": "question"}, {"field": "assistant", "column": "answer"}],
    "system_prompt": "You answer questions about the shop.",
}


class ScriptedClient:
    """Answers each call with the next scripted text, or raises it when it is an exception."""

    provider = "gemini"
    model = "gemini-2.5-flash"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    def generate_json(self, *, system, prompt, schema):
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer if isinstance(answer, str) else json.dumps(answer)


def _request(goal="Make a customer support bot"):
    records = [Record(line=i + 2, fields=row) for i, row in enumerate(ROWS)]
    return build_data_request(
        records, file_name="faq.csv", kind="csv", goal=goal, hint=None, sample_rows=5, redact_pii=True
    )


def _fallback(tmp_path, *answers, allow=False) -> tuple[FallbackAdvisor, ScriptedClient]:
    client = ScriptedClient(*answers)
    primary = LLMAdvisor(client, AdvisorCache(tmp_path / "cache"), name="gemini")
    return FallbackAdvisor(primary, RulesAdvisor(), allow_auth_fallback=allow, secret=SECRET), client


def _everything_written(tmp_path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in tmp_path.rglob("*") if p.is_file())


def test_a_good_answer_comes_from_the_llm(tmp_path):
    advisor, _ = _fallback(tmp_path, GOOD_RECIPE)
    assert advisor.understand_data(_request()).system_prompt == "You answer questions about the shop."
    assert advisor.name == "gemini"
    assert not any("Warning" in n for n in advisor.notes)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("I think it is a QA dataset!", "gemini's data answer was unusable: not valid JSON"),
        ({**GOOD_RECIPE, "format": "spreadsheet"}, "does not match the RecipeProposal schema"),
        ({**GOOD_RECIPE, "columns": [{"field": "user", "column": "Frage"}]}, "which the data does not have"),
        (AdvisorUnavailable("Gemini could not be reached (ConnectTimeout)"), "gemini was unavailable"),
        (AdvisorAnswerError("The model's answer was cut off (finish reason: length)."), "(finish reason: length)"),
    ],
)
def test_an_unusable_answer_falls_back_to_the_rules_with_a_visible_warning(tmp_path, answer, said):
    advisor, _ = _fallback(tmp_path, answer)
    proposal = advisor.understand_data(_request())
    assert proposal == RulesAdvisor().understand_data(_request())
    warnings = [n for n in advisor.notes if n.startswith("Warning:")]
    assert len(warnings) == 1
    assert said in warnings[0] and warnings[0].endswith("used the offline rules instead.")
    assert ".;" not in warnings[0]  # a reason that ends its sentence reads as one sentence with the fallback


def test_a_rejected_key_stops_unless_the_user_allows_going_on_offline(tmp_path):
    rejected = AdvisorAuthError(f"HTTP 403: API key {SECRET} not valid", fix="forge login")
    advisor, _ = _fallback(tmp_path, rejected)
    with pytest.raises(AdvisorAuthError) as info:
        advisor.understand_data(_request())
    text = str(info.value)
    assert "forge login --provider gemini" in text and "fallback_on_auth_error" in text
    assert SECRET not in text
    allowed, _ = _fallback(tmp_path, AdvisorAuthError(f"key {SECRET} rejected"), allow=True)
    assert allowed.understand_data(_request()).format == "qa"
    assert any("rejected the API key" in n for n in allowed.notes)
    assert SECRET not in "\n".join(allowed.notes)


def test_the_key_is_never_written_to_notes_or_cache_files(tmp_path):
    advisor, _ = _fallback(tmp_path, GOOD_RECIPE)
    advisor.understand_data(_request())
    assert list((tmp_path / "cache").glob("*.json"))
    assert SECRET not in _everything_written(tmp_path)
    assert SECRET not in "\n".join(advisor.notes)


def test_known_failures_are_diagnosed_offline_and_others_ask_the_llm(tmp_path):
    config = ForgeConfig().model_dump(mode="json")
    advisor, client = _fallback(tmp_path, {"problem": "other", "explanation": "A driver bug.", "retry": False})
    oom = DiagnosisRequest(
        stage="train", error="torch.OutOfMemoryError: CUDA out of memory.", log_tail="", config=config
    )
    assert advisor.diagnose(oom).problem == "oom"
    assert client.calls == 0
    odd = DiagnosisRequest(stage="train", error="Illegal instruction (core dumped)", log_tail="", config=config)
    assert advisor.diagnose(odd).explanation == "A driver bug."
    assert client.calls == 1


def test_an_unknown_failure_with_the_llm_down_gives_no_fix_and_a_warning(tmp_path):
    config = ForgeConfig().model_dump(mode="json")
    advisor, _ = _fallback(tmp_path, AdvisorUnavailable("HTTP 503 after 3 retries"))
    odd = DiagnosisRequest(stage="train", error="Illegal instruction (core dumped)", log_tail="", config=config)
    assert advisor.diagnose(odd) is None
    assert any("unavailable" in n for n in advisor.notes)


def test_scripts_have_no_offline_fallback(tmp_path):
    request = ScriptRequest(instructions="split", input_name="in.txt", kind="text", rows=[])
    advisor, _ = _fallback(tmp_path, AdvisorUnavailable(f"timeout (key={SECRET})"))
    with pytest.raises(AdvisorUnavailable) as info:
        advisor.write_script(request)
    assert SECRET not in str(info.value)
    advisor, _ = _fallback(tmp_path, "not json")
    with pytest.raises(AdvisorAnswerError):
        advisor.write_script(request)


def test_make_advisor_rules_is_offline(tmp_path):
    assert isinstance(make_advisor(AdvisorSection(), tmp_path), RulesAdvisor)
    assert isinstance(make_advisor(AdvisorSection(provider="gemini"), tmp_path, provider="rules"), RulesAdvisor)


def test_make_advisor_gemini_without_a_key_says_how_to_get_one(tmp_path):
    with pytest.raises(ForgeError) as info:
        make_advisor(AdvisorSection(provider="gemini"), tmp_path)
    fix = info.value.fix
    assert "forge login --provider gemini" in fix and "GEMINI_API_KEY" in fix and "--advisor rules" in fix


def test_make_advisor_gemini_uses_the_section_and_keeps_the_key_out_of_sight(tmp_path, monkeypatch):
    pytest.importorskip("forgellm.advisor.gemini")
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    section = AdvisorSection(provider="gemini", timeout_seconds=7, max_retries=1, fallback_on_auth_error=True)
    advisor = make_advisor(section, tmp_path)
    assert isinstance(advisor, FallbackAdvisor) and advisor.name == "gemini"
    assert advisor.allow_auth_fallback is True
    client = advisor.primary.client
    assert (client.model, client.timeout_seconds, client.max_retries) == ("gemini-2.5-flash", 7, 1)
    assert advisor.primary.cache.directory == tmp_path / ".forge" / "advisor-cache"
    assert SECRET not in repr(advisor.primary.client)


def test_make_advisor_openai_works_without_a_key_for_local_servers(tmp_path):
    pytest.importorskip("forgellm.advisor.openai_compat")
    local = AdvisorSection(provider="openai", base_url="http://127.0.0.1:8000/v1", model="qwen2.5:7b")
    client = make_advisor(local, tmp_path).primary.client
    assert (client.base_url, client.model) == ("http://127.0.0.1:8000/v1", "qwen2.5:7b")
    # --advisor openai over a gemini section: the gemini model name does not carry over.
    overridden = make_advisor(AdvisorSection(provider="gemini", model="gemini-2.5-pro"), None, provider="openai")
    assert overridden.primary.client.model == "gpt-4o-mini"
    assert overridden.primary.client.base_url == "https://api.openai.com/v1"
