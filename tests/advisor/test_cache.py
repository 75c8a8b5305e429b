"""The advisor cache: keyed by the whole request, atomic, and tolerant of damaged entries."""

from __future__ import annotations

from pathlib import Path

from forgellm.advisor.cache import AdvisorCache, default_cache_dir, request_key
from forgellm.advisor.schemas import Fix, RecipeProposal


def _key(**overrides) -> str:
    request = dict(provider="gemini", model="gemini-2.5-flash", task="data", system="sys", prompt="rows", schema=Fix)
    request.update(overrides)
    return request_key(**request)


def test_the_key_changes_with_every_part_of_the_request_and_only_with_it():
    base = _key()
    assert base == _key()
    variants = [
        _key(provider="openai"),
        _key(model="gemini-2.5-pro"),
        _key(task="plan"),
        _key(system="other system"),
        _key(prompt="other rows"),
        _key(schema=RecipeProposal),
    ]
    assert len({base, *variants}) == 7


def test_put_then_get_returns_the_answer(tmp_path):
    cache = AdvisorCache(tmp_path / "cache")
    assert cache.get(_key()) is None
    answer = {"problem": "oom", "explanation": "too big", "changes": [], "retry": False, "advice": ""}
    path = cache.put(_key(), answer, provider="gemini", model="gemini-2.5-flash", task="diagnosis")
    assert path.parent == tmp_path / "cache"
    assert AdvisorCache(tmp_path / "cache").get(_key()) == answer
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_damaged_or_foreign_entries_are_ignored_and_overwritten(tmp_path):
    cache = AdvisorCache(tmp_path)
    key = _key()
    cache.path(key).write_text('{"key": "' + key + '", "answer": {"problem": "oo', encoding="utf-8")
    assert cache.get(key) is None
    cache.path(key).write_text('{"key": "someone-else", "answer": {}}', encoding="utf-8")
    assert cache.get(key) is None
    cache.path(key).write_bytes(b"\xff\xfe\x00garbage")
    assert cache.get(key) is None
    cache.put(key, {"x": 1}, provider="gemini", model="m", task="data")
    assert cache.get(key) == {"x": 1}


def test_default_folder_is_in_the_project_else_under_forge_home(tmp_path, isolated_forge_home):
    assert default_cache_dir(tmp_path) == tmp_path / ".forge" / "advisor-cache"
    assert default_cache_dir(None) == Path(isolated_forge_home) / "advisor-cache"
