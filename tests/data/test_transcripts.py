"""Transcript extraction: configurable speaker labels, turn boundaries, merging, and the real transcripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgellm.config.schema import TranscriptSection
from forgellm.data.read.transcripts import extract_turns, speaker_name, split_transcript

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "chat_transcripts_ja"


def section(regex: bool = False, ignore_case: bool = True, **speakers: list[str]) -> TranscriptSection:
    return TranscriptSection(speakers=speakers, regex=regex, ignore_case=ignore_case)


def test_colon_labels_rest_of_line_is_content():
    text = "Intro we drop.\n**User**: Hi there\nsecond line\n**Assistant**: Hello!\n\nHow can I help?\n"
    ts = section(user=["**User**:"], assistant=["**Assistant**:"])
    result = split_transcript(text, ts)
    assert result.turns == [
        {"role": "user", "content": "Hi there\nsecond line"},
        {"role": "assistant", "content": "Hello!\n\nHow can I help?"},
    ]
    assert result.dropped == ["Intro we drop."]


def test_several_labels_per_role_and_case_insensitive():
    text = "human: a\nASSISTANT: b\nUser: c\nBot: d"
    ts = section(user=["Human:", "User:"], assistant=["Assistant:", "Bot:"])
    assert [t["role"] for t in extract_turns(text, ts)] == ["user", "assistant", "user", "assistant"]


def test_case_sensitive_when_asked():
    ts = section(ignore_case=False, user=["User:"], assistant=["Bot:"])
    turns = extract_turns("User: a\nbot: not a label\nBot: b", ts)
    assert turns == [{"role": "user", "content": "a\nbot: not a label"}, {"role": "assistant", "content": "b"}]


def test_regex_labels():
    ts = section(regex=True, user=[r"\[\d\d:\d\d\] alice:"], assistant=[r"\[\d\d:\d\d\] (?:bob|carol):"])
    text = "[10:01] alice: hi\n[10:02] bob: hey\n[10:03] carol: yo\n[10:04] alice: bye\n[10:05] bob: ciao"
    turns = extract_turns(text, ts)
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[1]["content"] == "hey\n\nyo"  # consecutive assistant turns merged


def test_invalid_regex_is_a_clear_error():
    with pytest.raises(ValueError, match="not a valid regular expression"):
        extract_turns("x", section(regex=True, user=["(unclosed"], assistant=["b:"]))


def test_no_speakers_is_a_clear_error():
    with pytest.raises(ValueError, match="data.recipe.transcript.speakers"):
        extract_turns("x", TranscriptSection())


def test_label_needs_a_word_boundary():
    ts = section(user=["Bob"], assistant=["Ann"])
    turns = extract_turns("Bob: q\nBobby said hi\nAnn - a", ts)
    assert turns == [{"role": "user", "content": "q\nBobby said hi"}, {"role": "assistant", "content": "- a"}]


def test_heading_labels_other_headings_end_a_turn_but_deeper_ones_do_not():
    text = (
        "# Title\n## me\nq\n## bot\nanswer\n### Step 1\ndetails\n----\n## Notes\nauthor remark\n## me\nq2\n## bot\na2"
    )
    result = split_transcript(text, section(user=["## me"], assistant=["## bot"]))
    assert result.turns == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "answer\n### Step 1\ndetails"},  # trailing rule removed
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"},
    ]
    assert result.dropped == ["# Title", "## Notes\nauthor remark"]


def test_labels_inside_code_fences_are_content():
    text = "User: show me\nBot: here\n```\nUser: not a turn\n## heading in code\n```\nend"
    turns = extract_turns(text, section(user=["User:"], assistant=["Bot:"]))
    assert turns[1]["content"] == "here\n```\nUser: not a turn\n## heading in code\n```\nend"


def test_role_for_label_overrides_and_drops():
    text = "A: hi\nB: hello\nC: (narrator)\nA: bye\nB: ciao"
    ts = section(user=["A:", "C:"], assistant=["B:"])
    turns = extract_turns(text, ts, {"c": "drop"})
    assert [t["content"] for t in turns] == ["hi", "hello", "bye", "ciao"]
    swapped = extract_turns(text, ts, lambda name: {"a": "assistant", "b": "user"}.get(name))
    assert [t["role"] for t in swapped][:2] == ["assistant", "user"]


def test_speaker_name():
    assert speaker_name("## chatgpt") == "chatgpt"
    assert speaker_name("**User**:") == "user"
    assert speaker_name("Human:") == "human"


def _files() -> list[Path]:
    return sorted(p for p in DATA.glob("*.md") if p.name != "README.md") if DATA.is_dir() else []


@pytest.mark.skipif(not DATA.is_dir(), reason="real transcripts (../shared/data) not present")
def test_real_transcripts_alternate():
    ts = section(user=["## kekyo"], assistant=["## chatgpt"])
    files = _files()
    assert len(files) == 19
    total = labels = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        result = split_transcript(text, ts)
        roles = [t["role"] for t in result.turns]
        assert roles[0] == "user" and roles[-1] == "assistant", path.name
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), path.name
        assert all(t["content"].strip() for t in result.turns)
        assert not any("## 備考" in t["content"] or "## 所感" in t["content"] for t in result.turns), path.name
        total += len(result.turns)
        labels += sum(result.speakers_seen.values())
    # The README counts 316 turns = speaker headings; two `## kekyo` headings follow another one directly.
    assert labels == 316
    assert total == 314
