"""Token statistics (forgellm/data/token_stats.py): each rung of the fallback chain, CJK text, the method
always reported (study.json/html, `forge study`, prepare's stats.json)."""

from __future__ import annotations

import json
import math

import pytest
from tiny_project_support import SHARED_DATA
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.data import token_stats
from forgellm.data.token_stats import (
    ESTIMATE_METHOD,
    estimate_tokens,
    text_stats,
    token_counting,
    word_counts,
)

runner = CliRunner()
TRANSCRIPTS = SHARED_DATA / "chat_transcripts_ja"


@pytest.fixture(scope="module")
def _tokenizer_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def shared_model_cache(_tokenizer_cache, monkeypatch):
    """One model cache for this module: SmolLM2's tokenizer is read out of its GGUF once (~5 s), not per test."""
    monkeypatch.setenv("FORGE_CACHE_DIR", str(_tokenizer_cache))


@pytest.fixture
def no_local_tokenizer(monkeypatch):
    """A machine without the bundled model: the local rung finds nothing unless the HF cache has one."""
    monkeypatch.setattr(token_stats, "FALLBACK_MODEL", "HuggingFaceTB/SmolLM2-360M-Instruct")


def test_words_lines_pages_and_the_estimate_are_defined():
    assert word_counts("Hello there, my friend.\nBye") == (5, 0)
    assert word_counts("今日はいい天気ですね。") == (0, 11)  # no spaces: counted in characters, not words
    assert word_counts("Forge の README を読む") == (2, 4)
    assert estimate_tokens("Hello there, my friend.") == math.ceil(1.3 * 4)
    assert estimate_tokens("今日は") == 3
    stats = text_stats(["one two\nthree", "四五六"], token_counting(None, local_fallback=False))
    assert (stats.texts, stats.words, stats.no_space_characters, stats.lines, stats.characters) == (2, 3, 3, 3, 16)
    assert stats.pages == round(3 / 500 + 3 / 600, 2)
    assert stats.method == ESTIMATE_METHOD and "1.3 x words" in stats.reason


def test_rung_one_the_target_models_tokenizer(tiny_causal_lm_dir):
    counting = token_counting(str(tiny_causal_lm_dir))
    assert counting.method == f"model:{tiny_causal_lm_dir}" and counting.exact
    # The tiny model's tokenizer is byte-level: one token per UTF-8 byte.
    assert counting.count(["abc", "日本"]) == [3, 6]


def test_rung_one_reads_a_gguf_models_tokenizer_without_converting_it():
    counting = token_counting("smollm2-135m")  # the bundled GGUF, not converted in this test's cache
    assert counting.method == "model:smollm2-135m" and counting.exact
    assert counting.count(["hello world"]) == [2]


def test_rung_two_another_local_tokenizer_when_the_models_is_not_here():
    counting = token_counting("Qwen/Qwen2.5-0.5B-Instruct")  # offline and not cached
    assert counting.method == "local:smollm2-135m" and counting.exact
    assert "not on this machine" in counting.reason and "another local tokenizer" in counting.reason


def test_rung_two_a_tokenizer_from_the_local_hf_cache(no_local_tokenizer, tiny_causal_lm_dir, monkeypatch, tmp_path):
    import shutil

    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_causal_lm_dir / name).exists():
            shutil.copy(tiny_causal_lm_dir / name, snapshot / name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    counting = token_counting(None)
    assert counting.method == "local:acme/tiny" and counting.count(["abc"]) == [3]


def test_rung_three_the_word_estimate_when_no_tokenizer_is_found(no_local_tokenizer):
    counting = token_counting("Qwen/Qwen2.5-0.5B-Instruct")
    assert counting.method == ESTIMATE_METHOD and not counting.exact
    assert "no local tokenizer was found" in counting.reason
    assert counting.count(["one two three", "日本語"]) == [4, 3]


def _japanese_text() -> str:
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    return (TRANSCRIPTS / "electron.md").read_text(encoding="utf-8")


def test_cjk_text_counts_characters_and_pages_of_its_own():
    text = _japanese_text()
    estimate = text_stats([text], token_counting(None, local_fallback=False))
    assert estimate.no_space_characters > estimate.words > 0  # Japanese prose with English code in between
    assert estimate.pages == round(estimate.words / 500 + estimate.no_space_characters / 600, 2)
    exact = text_stats([text], token_counting("smollm2-135m"))
    # SmolLM2's English-centric BPE spends more than one token per Japanese character.
    assert exact.tokens > exact.no_space_characters and exact.method == "model:smollm2-135m"


def test_study_reports_the_method_in_json_html_and_terminal(tmp_path, monkeypatch, no_local_tokenizer):
    monkeypatch.chdir(tmp_path)
    rows = [{"question": f"How do I reset password {i}?", "answer": f"Open settings, step {i}."} for i in range(30)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["study", "qa.jsonl"])
    assert result.exit_code == 0, result.output
    assert "Totals" in result.output and ESTIMATE_METHOD in result.output and "pages" in result.output
    report = json.loads((tmp_path / "reports" / "study.json").read_text())
    stats = report["text_stats"]
    assert stats["method"] == report["token_counter"] == ESTIMATE_METHOD
    assert stats["texts"] == 30 and stats["words"] == sum(len(" ".join(r.values()).split()) for r in rows)
    assert ESTIMATE_METHOD in (tmp_path / "reports" / "study.html").read_text()


def test_prepare_stats_carry_exact_token_totals_and_the_method(tiny_train_project):
    from forgellm.project.prepared import PreparedData

    _, folder = tiny_train_project()
    prepared = PreparedData.load(folder)
    assert prepared is not None
    text = prepared.stats.text
    assert text["method"].startswith("model:") and text["reason"] == "the target model's tokenizer"
    assert text["tokens"] == sum(s.tokens for s in prepared.stats.splits.values())
    assert text["texts"] == prepared.stats.kept and text["words"] > 0 and text["pages"] > 0


def test_study_of_a_folder_of_japanese_documents_reports_its_totals(tmp_path, monkeypatch, no_local_tokenizer):
    """A folder's documents all start at line 1: the study (near-duplicates included) must not trip on that."""
    _japanese_text()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["study", str(TRANSCRIPTS), "--json"])
    assert result.exit_code == 0, result.output[-1500:]
    stats = json.loads(result.output)["report"]["text_stats"]
    assert stats["method"] == ESTIMATE_METHOD and stats["no_space_characters"] > stats["words"] > 0
