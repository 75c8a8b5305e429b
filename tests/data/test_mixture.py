"""Data mixtures (forge.yaml data.sources): the counts rule as a property, real files through `forge prepare`
(SFT and CPT), and every bad input a user meets (missing sources, ratios, hub ids offline, empty folders)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.config.io import load_config
from forgellm.data.prepare.mixture import Share, apportion, select_counts
from forgellm.data.prepare.run import load_project_config, prepare_dataset
from forgellm.errors import ErrorCode, ForgeError
from forgellm.project.layout import ProjectLayout

SPLITS = ("train", "val", "test")


# -- the rule, as a property -----------------------------------------------------------------------------
@st.composite
def mixtures(draw):
    n = draw(st.integers(1, 4))
    weights = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    counted = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if n > 1 else [False]
    if all(counted):
        counted[0] = False
    by_ratio = [w for w, c in zip(weights, counted, strict=True) if not c]
    shares, keys = [], {}
    for i, (weight, is_count) in enumerate(zip(weights, counted, strict=True)):
        name = f"s{i}"
        sizes = [draw(st.integers(1 if split == "train" else 0, 300)) for split in SPLITS]
        for split, size in zip(SPLITS, sizes, strict=True):
            values = draw(st.lists(st.integers(0, 2**63 - 1), min_size=size, max_size=size))
            if values and draw(st.booleans()):  # identical content kept twice: ties at the threshold
                values[-1] = values[0]
            keys[(name, split)] = np.array(values, dtype=np.int64)
        if is_count:
            shares.append(Share(name, count=draw(st.integers(1, sizes[0]))))
        else:
            shares.append(Share(name, ratio=weight / sum(by_ratio)))
    return shares, keys


@settings(max_examples=60, deadline=None)
@given(mixtures(), st.integers(0, 2**31))
def test_mixture_counts_are_exact_and_deterministic(mixture, seed):
    shares, keys = mixture
    chosen = select_counts(shares, keys, seed)
    kept, targets = chosen["kept"], chosen["targets"]
    for group, positions in kept.items():
        assert len(positions) == targets.get(group, 0)  # exact, ties included
        assert len(set(positions)) == len(positions) <= len(keys[group])  # never an example twice
    train = {s.name: len(kept[(s.name, "train")]) for s in shares}
    for share in shares:
        if share.count is not None:
            assert train[share.name] == share.count
    by_ratio = [s for s in shares if s.ratio is not None]
    total = sum(train[s.name] for s in by_ratio)
    assert [train[s.name] for s in by_ratio] == apportion(total, [s.ratio for s in by_ratio])
    for share in by_ratio:
        assert abs(train[share.name] - share.ratio * total) < 1
    # The limiting source gives (nearly) all of its training rows: the total is as large as the ratios allow.
    limit = min(math.floor(len(keys[(s.name, "train")]) / s.ratio + 1e-9) for s in by_ratio)
    assert limit - len(by_ratio) <= total <= limit
    # Held-out rows per source: the fraction of its training rows used.
    for share in shares:
        fraction = train[share.name] / len(keys[(share.name, "train")])
        for split in ("val", "test"):
            assert len(kept[(share.name, split)]) == round(fraction * len(keys[(share.name, split)]))
    assert select_counts(shares, keys, seed)["kept"] == kept  # same seed, same rows


def test_a_new_seed_picks_other_rows():
    keys = {("a", "train"): np.arange(1000, dtype=np.int64), ("b", "train"): np.arange(5000, 6000, dtype=np.int64)}
    shares = [Share("a", ratio=0.5), Share("b", count=100)]
    first, second = select_counts(shares, keys, 1)["kept"], select_counts(shares, keys, 2)["kept"]
    assert len(first[("b", "train")]) == len(second[("b", "train")]) == 100
    assert first[("b", "train")] != second[("b", "train")]


# -- real files through prepare --------------------------------------------------------------------------
def _project(make_project, sources, **sections):
    return make_project(data={"sources": sources}, **sections)


def _prepare(project: Path):
    return prepare_dataset(ProjectLayout(project), load_project_config(project), None)


def _rows(folder: Path) -> dict[str, list[dict]]:
    return {
        split: [json.loads(line) for line in (folder / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        for split in SPLITS
    }


def _check_rows_match_stats(result) -> dict[str, Counter]:
    rows = _rows(result.output_dir)
    per_split = {split: Counter(row["source"] for row in rows[split]) for split in SPLITS}
    for name, source in result.stats.sources.items():
        for split in SPLITS:
            assert per_split[split][name] == source[split], (name, split)
        assert source["used"] == sum(source[split] for split in SPLITS) <= source["available"]
        assert all(row["role"] == source["role"] for split in SPLITS for row in rows[split] if row["source"] == name)
    return per_split


def test_sft_mixture_of_transcripts_and_alpaca(make_project, shared_data):
    sources = [
        {"path": str(shared_data / "chat_transcripts_ja"), "role": "domain", "ratio": 0.25},
        {"name": "general", "path": str(shared_data / "alpaca_en_demo.json"), "role": "general", "ratio": 0.75},
    ]
    project = _project(make_project, sources, model={"max_length": 4096})
    result = _prepare(project)
    stats = result.stats
    domain, general = stats.sources["chat_transcripts_ja"], stats.sources["general"]
    assert domain["format"] == "transcript" and general["format"] == "alpaca"
    # The transcripts limit the mixture: all their training conversations, and three alpaca rows for each.
    assert stats.mixture["limited_by"] == "chat_transcripts_ja" and domain["train"] > 0
    assert general["train"] == 3 * domain["train"] and stats.splits["train"].examples == 4 * domain["train"]
    assert general["test"] > 0  # the general source has held-out rows of its own (the forgetting slice)
    _check_rows_match_stats(result)
    assert "chat_transcripts_ja" in stats.mixture["note"]
    # The detected readings are written into each source's entry of forge.yaml, as for one data.source.
    saved = load_config(project).config.data.sources
    assert [s.format for s in saved] == ["transcript", "alpaca"]
    assert _prepare(project).already_prepared  # with the recorded readings: the same settings, nothing redone
    # The same forge.yaml in another project gives the same rows.
    again = _prepare(_copy(project))
    assert _rows(again.output_dir) == _rows(result.output_dir)


def _copy(project: Path) -> Path:
    other = project.with_name(project.name + "-again")
    other.mkdir()
    (other / "forge.yaml").write_text((project / "forge.yaml").read_text())
    return other


def test_counts_and_a_csv_source(make_project, shared_data, tmp_path):
    lines = (shared_data / "bitext_customer_support.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    csv = tmp_path / "bitext_head.csv"
    csv.write_text("".join(lines[:1500]), encoding="utf-8")  # the real file's first rows: a fast test
    sources = [
        {"name": "tickets", "path": str(csv), "role": "domain", "ratio": 1.0},
        {"name": "alpaca", "path": str(shared_data / "alpaca_en_demo.json"), "role": "general", "count": 40},
        {"name": "toy", "path": str(shared_data / "openai_messages_toy.jsonl"), "role": "replay", "count": 2},
    ]
    project = _project(make_project, sources, model={"max_length": 1024})
    result = _prepare(project)
    stats = result.stats
    assert stats.sources["alpaca"]["train"] == 40 and stats.sources["toy"]["train"] == 2
    assert stats.sources["tickets"]["train"] == stats.sources["tickets"]["available"] - (
        stats.sources["tickets"]["val"] + stats.sources["tickets"]["test"]
    )  # ratio 1.0 among the ratio sources: all of it
    per_split = _check_rows_match_stats(result)
    assert per_split["train"]["alpaca"] == 40
    from forgellm.status.data import prepared_status

    shown = prepared_status(project, load_config(project).config, project)["prepared"][0]["sources"]
    assert shown == {name: source["used"] for name, source in stats.sources.items()}
    from typer.testing import CliRunner

    from forgellm.cli.main import app

    status = CliRunner().invoke(app, ["status", str(project)], env={"COLUMNS": "200"})
    used = ", ".join(f"{name} {source['used']:,}" for name, source in stats.sources.items())
    assert f"mixture (examples used, all splits): {used}" in status.output, status.output


def test_mixture_seed_changes_the_general_rows_only(make_project, shared_data):
    def general_lines(seed: int) -> set[int]:
        sources = [
            {"path": str(shared_data / "openai_messages_toy.jsonl"), "ratio": 0.2},
            {"name": "general", "path": str(shared_data / "alpaca_en_demo.json"), "role": "general", "ratio": 0.8},
        ]
        project = make_project(f"seed{seed}", data={"sources": sources, "mixture_seed": seed})
        rows = _rows(_prepare(project).output_dir)["train"]
        return {row["line"] for row in rows if row["source"] == "general"}

    first, second = general_lines(1), general_lines(2)
    assert len(first) == len(second) and first != second


def test_cpt_mixture_of_docs_and_general_text(make_project, shared_data):
    sources = [
        {"name": "docs", "path": str(shared_data / "httpx_docs"), "role": "domain", "ratio": 0.6},
        {"name": "general", "path": str(shared_data / "chat_transcripts_ja"), "role": "general", "format": "text",
         "ratio": 0.4},
    ]  # fmt: skip
    result = _prepare(_project(make_project, sources, training={"stage": "cpt"}, model={"max_length": 256}))
    stats = result.stats
    assert stats.stage == "cpt" and stats.sources["docs"]["format"] == "text"
    train = stats.sources["docs"]["train"] + stats.sources["general"]["train"]
    assert apportion(train, [0.6, 0.4]) == [stats.sources["docs"]["train"], stats.sources["general"]["train"]]
    rows = _rows(result.output_dir)["train"]
    assert all("window" in row and row["file"] for row in rows)  # document windows, with the file they are of
    _check_rows_match_stats(result)


# -- bad input --------------------------------------------------------------------------------------------
def test_missing_optional_source_is_skipped_with_a_warning(make_project, shared_data, tmp_path):
    sources = [
        {"path": str(shared_data / "openai_messages_toy.jsonl"), "ratio": 0.5},
        {"name": "gone", "path": str(tmp_path / "nowhere.jsonl"), "role": "general", "ratio": 0.5, "required": False},
    ]
    result = _prepare(_project(make_project, sources))
    assert list(result.stats.sources) == ["openai_messages_toy"]
    assert result.stats.sources["openai_messages_toy"]["ratio"] == 1.0
    assert any("'gone' skipped" in w for w in result.stats.warnings)
    assert any("scaled to sum to 1" in w for w in result.stats.warnings)


def test_missing_required_source_is_an_error(make_project, shared_data, tmp_path):
    sources = [
        {"path": str(shared_data / "openai_messages_toy.jsonl"), "ratio": 0.5},
        {"name": "gone", "path": "data/nowhere.jsonl", "ratio": 0.5},
    ]
    with pytest.raises(ForgeError) as caught:
        _prepare(_project(make_project, sources))
    assert caught.value.code == ErrorCode.DATA_SOURCE_MISSING and "required: false" in caught.value.fix


def test_hub_source_offline_says_to_use_a_local_file(make_project, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    sources = [
        {"path": str(shared_data / "openai_messages_toy.jsonl"), "ratio": 0.5},
        {"path": "hf:tatsu-lab/alpaca", "role": "general", "ratio": 0.5},
    ]
    with pytest.raises(ForgeError) as caught:
        _prepare(_project(make_project, sources))
    error = caught.value
    assert error.code == ErrorCode.DATA_SOURCE_OFFLINE and "tatsu-lab/alpaca" in error.message
    assert "path: data/alpaca" in error.fix and "local file" in error.fix


def test_hub_source_in_the_local_cache_is_read(make_project, shared_data, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "datasets--someone--chats" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "README.md").write_text("# chats\n")
    (snapshot / "data").mkdir()
    (snapshot / "data" / "train.json").write_text((shared_data / "alpaca_en_demo.json").read_text())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    sources = [{"path": "hf:someone/chats", "role": "general", "count": 30}]
    result = _prepare(_project(make_project, sources))
    assert result.stats.sources["chats"]["train"] == 30 and result.stats.sources["chats"]["format"] == "alpaca"


def test_empty_folder_source(make_project, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ForgeError) as caught:
        _prepare(_project(make_project, [{"path": str(tmp_path / "empty"), "ratio": 1.0}]))
    assert "empty" in caught.value.message.lower() and caught.value.fix


def test_a_count_larger_than_the_source(make_project, shared_data):
    sources = [{"path": str(shared_data / "openai_messages_toy.jsonl"), "count": 50}]
    with pytest.raises(ForgeError) as caught:
        _prepare(_project(make_project, sources))
    assert caught.value.code == ErrorCode.DATA_MIXTURE_SHORT and caught.value.data["count"] == 50
    assert f"count: {caught.value.data['available']}" in caught.value.fix


def test_documents_in_an_sft_mixture(make_project, shared_data):
    sources = [{"name": "docs", "path": str(shared_data / "httpx_docs"), "ratio": 1.0}]
    with pytest.raises(ForgeError) as caught:
        _prepare(_project(make_project, sources))
    assert caught.value.code == ErrorCode.DATA_MIXTURE_INVALID and "training.stage: cpt" in caught.value.fix


def _yaml_error(tmp_path: Path, sources: list[dict]) -> str:
    (tmp_path / "forge.yaml").write_text(yaml.safe_dump({"version": 2, "data": {"sources": sources}}, sort_keys=False))
    with pytest.raises(ForgeError) as caught:
        load_config(tmp_path)
    assert caught.value.code == ErrorCode.CONFIG_INVALID
    return "\n".join(caught.value.details) or caught.value.message


def test_ratios_that_do_not_sum_to_one_are_refused_with_the_fix(tmp_path):
    text = _yaml_error(tmp_path, [{"path": "a.jsonl", "ratio": 0.6}, {"path": "b.jsonl", "ratio": 0.6}])
    assert "add up to 1.2" in text and "a: 0.5, b: 0.5" in text and "line 2" in text


def test_ratio_and_count_both_or_neither(tmp_path):
    both = _yaml_error(tmp_path, [{"path": "a.jsonl", "ratio": 1.0, "count": 5}])
    assert "data.sources.0" in both and "both `ratio` and `count`" in both and "line 4" in both
    neither = _yaml_error(tmp_path, [{"path": "a.jsonl"}])
    assert "neither `ratio` and `count`" in neither
    twice = _yaml_error(tmp_path, [{"path": "x/a.jsonl", "ratio": 0.5}, {"path": "y/a.csv", "ratio": 0.5}])
    assert "share the name a" in twice


def test_prepare_command_lists_the_sources(make_project, shared_data):
    sources = [
        {"path": str(shared_data / "openai_messages_toy.jsonl"), "ratio": 0.5},
        {"name": "general", "path": str(shared_data / "alpaca_en_demo.json"), "role": "general", "ratio": 0.5},
    ]
    project = _project(make_project, sources)
    result = CliRunner().invoke(app, ["prepare", "-C", str(project), "--runtime", "local"])
    assert result.exit_code == 0, result.output
    assert "Sources (data.sources)" in result.output and "general" in result.output and "ratio 0.5" in result.output
    empty = make_project("plain")
    refused = CliRunner().invoke(app, ["prepare", "-C", str(empty), "--runtime", "local"])
    assert refused.exit_code != 0 and "data.sources" in refused.output
