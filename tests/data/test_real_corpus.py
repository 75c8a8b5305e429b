"""Real files nobody tuned Forge to (tests/data/real, README there): each is planned offline as `forge plan`
reads data (the rules advisor, the recipe fit check) and prepared as `forge prepare` does, and must come out
as a person reading the file judged it (expected.json, filled in by reading the files, not by running
Forge): the format, which column plays which role, and at least 90 % of the non-blank rows in examples.
A file Forge cannot read must be refused with a message that names the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_support import staged

from forgellm.advisor.rules import RulesAdvisor
from forgellm.config.io import load_config, save_config
from forgellm.config.schema import AdvisorSection, DataSection
from forgellm.data.prepare.run import prepare_dataset
from forgellm.errors import ErrorCode, ForgeError
from forgellm.planning.profile import profile_data

CORPUS = Path(__file__).parent / "real"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
# Files Forge cannot read yet (none today): each must be refused with the forge.yaml lines to fill in.
REFUSED: set[str] = set()
ROLES = ("assistant", "label", "chosen", "rejected")
THREAD_ROLES = ("id", "parent", "text")


def _column(value: str) -> str:
    """expected.json's way of pointing into a column ('conversations[from=human]', 'output[0]') -> the column."""
    return value.split("[", 1)[0]


def _user_side(columns: dict) -> list[str]:
    """The user's columns in order, as Forge's recipe has them: user (one or a list), then input."""
    user = columns.get("user") or []
    names = list(user) if isinstance(user, list) else [user]
    return names + ([columns["input"]] if "input" in columns else [])


def _expected_user(expected: dict) -> list[str] | None:
    side = expected.get("user") if expected["shape"] != "classification" else expected.get("text")
    if side is None or expected["shape"] in ("messages", "sharegpt", "transcript", "thread") or "'" in str(side):
        return None
    return [_column(s) for s in side] if isinstance(side, list) else [_column(side)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_real_file_is_planned_and_prepared_as_a_person_reads_it(name, make_project):
    expected, path = EXPECTED[name], CORPUS / name
    if name in REFUSED:
        with pytest.raises(ForgeError) as refused:
            profile_data(path, None, RulesAdvisor(), AdvisorSection(), DataSection())
        assert refused.value.code == ErrorCode.DATA_NO_RECIPE
        assert "data:" in refused.value.fix and "format:" in refused.value.fix  # the forge.yaml lines to fill in
        return
    profile = profile_data(path, None, RulesAdvisor(), AdvisorSection(), DataSection())
    columns = profile.recipe.columns
    if path.suffix == ".md":  # a markdown FAQ: question headings are the user's turns, the text under them the answers
        assert expected["shape"] == "qa" and profile.format == "transcript" and profile.recipe.transcript.faq_headings
    else:
        assert profile.format == expected["shape"], profile.reasons
    if (user := _expected_user(expected)) is not None:
        assert _user_side(columns) == user, profile.reasons
    for role in THREAD_ROLES if expected["shape"] == "thread" else () if path.suffix == ".md" else ROLES:
        if role in expected and expected["shape"] not in ("messages", "sharegpt", "transcript"):
            assert columns.get(role) == _column(expected[role]), (role, profile.reasons)
    if expected["shape"] == "thread":  # who speaks: the role column, else the thread's first author is the user
        assert columns.get("role") == expected["role"] or columns.get("author") == expected["author"]
    if expected["shape"] in ("messages", "sharegpt"):
        assert columns["messages"] == _column(expected["user"])
    if expected["shape"] == "transcript" and expected.get("text"):
        assert columns["text"] == expected["text"]

    # The tiny test tokenizer is byte-level (a token per byte): a max_length no real file reaches, as a plan
    # would size it from the data's token lengths.
    project = make_project(model={"max_length": 65536})
    config = load_config(project).config
    config.data = DataSection(source=str(path), format=profile.format, recipe=profile.recipe)
    save_config(config, project / "forge.yaml")
    result = prepare_dataset(*staged(project), path)
    stats = result.stats
    made = stats.kept + sum(n for reason, n in stats.rejected_by_reason.items() if "duplicate" in reason)
    if expected["shape"] == "thread":  # conversations are root-to-leaf paths: each answer must be in one
        answers = {m["content"] for m in _messages(result.output_dir) if m["role"] == "assistant"}
        assert len(answers) >= 0.9 * _answers_in(path), stats
    elif path.suffix == ".md":  # one document: its question/answer pairs are the rows
        assert made == 1 and _answer_turns(result.output_dir) >= 0.9 * expected["nonblank_rows"]
    else:
        assert made >= 0.9 * expected["nonblank_rows"], (stats.kept, stats.rejected_by_reason)
    rows = _rows(result.output_dir)
    if expected["shape"] == "preference":  # SFT on the chosen side; the pair kept for preference training
        assert all(r["rejected"][-1]["role"] == "assistant" for r in rows)
        assert all(r["rejected"][-1]["content"] != r["messages"][-1]["content"] for r in rows)
    if expected.get("history"):  # alpaca history: earlier exchanges become earlier turns
        assert any(len(r["messages"]) >= 4 for r in rows)
    if "literal backslash-n escapes" in expected.get("notes", ""):
        assert "unescape_newlines" in profile.recipe.cleaning
        assert not any("\\n" in m["content"] for r in rows for m in r["messages"] if m["role"] == "user")


def _answers_in(path: Path) -> int:
    """The distinct assistant messages of a reply table, or of nested reply trees (read here by hand)."""
    messages = []
    if path.suffix == ".csv":
        import csv

        with open(path, encoding="utf-8", newline="") as handle:
            messages = list(csv.DictReader(handle))
    else:
        stack = [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines()]
        while stack:
            node = stack.pop()
            messages.append(node)
            stack.extend(node.get("replies") or [])
    return len({m["text"].strip() for m in messages if m["role"] == "assistant"})


def _rows(output_dir: Path) -> list[dict]:
    found = []
    for split in ("train", "val", "test"):
        file = output_dir / f"{split}.jsonl"
        if file.is_file():
            found += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    return found


def _messages(output_dir: Path) -> list[dict]:
    return [m for row in _rows(output_dir) for m in row.get("messages") or []]


def _answer_turns(output_dir: Path) -> int:
    return sum(1 for m in _messages(output_dir) if m["role"] == "assistant")
