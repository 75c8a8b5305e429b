from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stage_support import staged

from forgellm.advisor.diagnosis import diagnose_failure
from forgellm.config.io import load_config
from forgellm.data.prepare.run import load_project_config, prepare_dataset
from forgellm.errors import ErrorCode, ForgeError

OUTPUTS = [f"{s}.{ext}" for s in ("train", "val", "test") for ext in ("jsonl", "parquet")] + ["rejects.jsonl"]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user: str, answer: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}


def interrupt_before_chunk(monkeypatch, chunk: int):
    """Make writing chunk `chunk` fail as a Ctrl-C would; call the returned function to write normally again."""
    import forgellm.data.prepare.run as prepare_module

    real_write = prepare_module.write_chunk

    def interrupted(work, number, *args):
        if number == chunk:
            raise KeyboardInterrupt
        return real_write(work, number, *args)

    monkeypatch.setattr(prepare_module, "write_chunk", interrupted)
    return lambda: monkeypatch.setattr(prepare_module, "write_chunk", real_write)


def read_rows(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text(encoding="utf-8").splitlines()]


def placed_lines(folder: Path) -> Counter:
    lines: Counter = Counter()
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl"):
        lines.update(row["line"] for row in read_rows(folder, name))
    return lines


def test_openai_jsonl_with_bad_rows(make_project, shared_data):
    project = make_project()
    result = prepare_dataset(*staged(project), shared_data / "openai_messages_toy.jsonl")
    out = result.output_dir
    assert out.parent == project / "data" / "prepared" and not out.name.startswith(".")
    for name in OUTPUTS + ["stats.json", "manifest.json"]:
        assert (out / name).is_file(), name
    assert not (out / "chunks").exists()
    rejects = read_rows(out, "rejects.jsonl")
    assert rejects and all(r["line"] >= 1 and r["reason"] for r in rejects)
    assert sorted(placed_lines(out)) == [1, 2, 3, 4, 5]  # each row once: a split or a reject
    assert all(c["ok"] for c in result.checks)
    config = load_config(project).config
    assert config.data.format == "messages"  # detection was saved into forge.yaml
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["input"]["sha256"]


def test_rows_end_in_one_place_and_labels_train_only_answers(make_project, tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    rows = [chat(f"question {i}?", f"answer number {i}.") for i in range(60)]
    rows[10] = "{not json"
    rows[20] = chat("dup?", "same")
    rows[21] = chat("dup?", "same")
    project = make_project()
    result = prepare_dataset(*staged(project), jsonl(tmp_path / "d.jsonl", rows), chunk_rows=7)
    out = result.output_dir
    assert sorted(placed_lines(out).elements()) == list(range(1, 61))
    reasons = {r["line"]: r["reason"] for r in read_rows(out, "rejects.jsonl")}
    assert "invalid JSON" in reasons[11] and reasons[22] == "exact duplicate of line 21"
    table = pq.read_table(out / "train.parquet").to_pylist()
    first = read_rows(out, "train.jsonl")[0]
    trained = [i for i, label in zip(table[0]["input_ids"], table[0]["labels"], strict=True) if label != -100]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.decode(trained) == first["messages"][-1]["content"] + "<|im_end|>"
    assert tokenizer.decode(table[0]["input_ids"]) == first["text"]
    assert result.stats.rows_read == 60 and result.stats.chunks == 9


def test_second_run_reuses_published_output(make_project, tmp_path):
    project = make_project()
    data = jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(30)])
    first = prepare_dataset(*staged(project), data)
    again = prepare_dataset(*staged(project), data)
    assert again.already_prepared and again.output_dir == first.output_dir


def test_no_forge_yaml_is_a_clear_message(tmp_path):
    with pytest.raises(ForgeError) as caught:  # `forge prepare` reads forge.yaml once, with this message
        load_project_config(tmp_path)
    assert "needs a plan with a target model" in caught.value.message and "forge init" in caught.value.fix


def test_everything_filtered_is_an_error_not_an_empty_success(make_project, tmp_path):
    project = make_project(preprocessing={"filters": {"min_chars": 1000}})
    data = jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", "short") for i in range(20)])
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), data)
    assert "No training examples are left" in caught.value.message and "min_chars" in caught.value.message
    assert not [p for p in (project / "data" / "prepared").iterdir() if not p.name.startswith(".")]


def test_error_rate_stops_the_run_without_output(make_project, tmp_path):
    rows = [chat(f"q{i}", f"a{i}") if i % 2 else "{broken" for i in range(100)]
    project = make_project(preprocessing={"max_error_rate": 0.1})
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), jsonl(tmp_path / "d.jsonl", rows))
    assert "50 of" in caught.value.message and "max_error_rate" in caught.value.message
    assert not [p for p in (project / "data" / "prepared").iterdir() if not p.name.startswith(".")]


def test_disk_full_leaves_no_final_output_and_resumes(make_project, tmp_path, monkeypatch):
    import errno

    import forgellm.data.prepare.run as prepare_module

    project = make_project()
    data = jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(40)])
    real_write = prepare_module.write_chunk
    calls = {"n": 0}

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", "chunk")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "write_chunk", failing_write)
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), data, chunk_rows=10)
    assert "disk is full" in caught.value.message and "resumes" in caught.value.fix
    assert not [p for p in (project / "data" / "prepared").iterdir() if not p.name.startswith(".")]
    monkeypatch.setattr(prepare_module, "write_chunk", real_write)
    result = prepare_dataset(*staged(project), data, chunk_rows=10)
    assert result.resumed_chunks == 2 and sorted(placed_lines(result.output_dir)) == list(range(1, 41))


def test_changed_input_refuses_to_resume(make_project, tmp_path, monkeypatch):

    project = make_project()
    data = jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(30)])
    restore_writes = interrupt_before_chunk(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(*staged(project), data, chunk_rows=10)
    restore_writes()
    jsonl(data, [chat(f"q{i}", f"changed {i}") for i in range(30)])
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), data, chunk_rows=10)
    assert "changed since the interrupted preparation" in caught.value.message and "--restart" in caught.value.fix
    assert prepare_dataset(*staged(project), data, chunk_rows=10, restart=True).stats.kept == 30


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    answers=st.lists(st.sampled_from(["yes", "no", "maybe", "", "yes"]), min_size=3, max_size=40),
    chunk=st.integers(1, 12),
    method=st.sampled_from(["random", "stratified"]),
)
def test_splits_do_not_depend_on_chunk_size(make_project, tmp_path_factory, answers, chunk, method):
    folder = tmp_path_factory.mktemp("prop")
    rows = [chat(f"q{i % 7}", a, label=a or "none") for i, a in enumerate(answers)]
    split = {"method": method, "column": "label" if method == "stratified" else None}
    recipe = {"columns": {"messages": "messages", "label": "label"}}
    project = make_project(
        name=f"p{chunk}", preprocessing={"split": split}, data={"format": "messages", "recipe": recipe}
    )
    data = jsonl(folder / "d.jsonl", rows)
    try:
        single = prepare_dataset(*staged(project), data, chunk_rows=len(rows) + 1, restart=True).output_dir
    except ForgeError as exc:  # every row filtered (e.g. all empty answers): same verdict whatever the chunking
        with pytest.raises(ForgeError) as again:
            prepare_dataset(*staged(project), data, chunk_rows=chunk, restart=True)
        assert again.value.message == exc.message
        return
    snapshot = {name: (single / name).read_bytes() for name in OUTPUTS}
    placed = placed_lines(single)
    assert sorted(placed.elements()) == list(range(1, len(rows) + 1))
    other = make_project(
        name=f"q{chunk}", preprocessing={"split": split}, data={"format": "messages", "recipe": recipe}
    )
    chunked = prepare_dataset(*staged(other), data, chunk_rows=chunk).output_dir
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl"):
        assert (chunked / name).read_bytes() == snapshot[name], name


def _run_in_subprocess(project: Path, data: Path, chunk_rows: int) -> subprocess.Popen:
    code = (
        "import sys; from pathlib import Path; from forgellm.data.prepare.run import prepare_dataset; "
        "from forgellm.project import load_project; "
        f"prepare_dataset(*load_project(Path({str(project)!r})), Path({str(data)!r}), chunk_rows={chunk_rows})"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())


def test_kill_minus_nine_then_resume_is_byte_identical(make_project, tmp_path):
    rows = [chat(f"question {i} " + "x" * (i % 50), f"answer {i} " + "y" * (i % 70)) for i in range(3000)]
    data = jsonl(tmp_path / "big.jsonl", rows)
    reference = prepare_dataset(*staged(make_project("reference")), data, chunk_rows=100).output_dir
    project = make_project("crashed")
    process = _run_in_subprocess(project, data, 100)
    prepared = project / "data" / "prepared"
    deadline = time.time() + 120
    while time.time() < deadline:
        manifests = list(prepared.glob(".partial-*/manifest.json"))
        if manifests and len(json.loads(manifests[0].read_text() or "{}").get("chunks", [])) >= 3:
            break
        if process.poll() is not None:
            pytest.fail("the preparation finished before it could be interrupted; make the input larger")
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    result = prepare_dataset(*staged(project), data, chunk_rows=100)
    assert result.resumed_chunks >= 3
    for name in OUTPUTS:
        assert (result.output_dir / name).read_bytes() == (reference / name).read_bytes(), name


def test_near_duplicates_are_dropped_and_resume_rebuilds_the_index(make_project, tmp_path, monkeypatch):

    base = "Please reset the password of my account, I cannot log in since yesterday evening at all"
    rows = [chat(f"{base} {i}", f"We sent a reset link to your address, number {i}.") for i in range(30)]
    topics = [
        "shipping to Norway",
        "invoice copy",
        "gift wrapping",
        "store hours",
        "warranty claim",
        "bulk discount",
        "job openings",
        "newsletter signup",
        "lost parcel",
        "size guide",
    ]
    rows += [chat(f"Tell me about {topic}?", f"Here is what we know about {topic}.") for topic in topics]
    data = jsonl(tmp_path / "d.jsonl", rows)
    filters = {"drop_near_duplicates": True, "near_duplicate_threshold": 0.8}
    whole = prepare_dataset(*staged(make_project("whole", preprocessing={"filters": filters})), data, chunk_rows=8)
    reasons = [r["reason"] for r in read_rows(whole.output_dir, "rejects.jsonl")]
    assert sum(r.startswith("near-duplicate of line 1") for r in reasons) >= 20
    assert whole.stats.kept >= 11

    project = make_project("resumed", preprocessing={"filters": filters})
    restore_writes = interrupt_before_chunk(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(*staged(project), data, chunk_rows=8)
    restore_writes()
    resumed = prepare_dataset(*staged(project), data, chunk_rows=8)
    assert resumed.resumed_chunks == 2
    for name in OUTPUTS:
        assert (resumed.output_dir / name).read_bytes() == (whole.output_dir / name).read_bytes(), name


def test_pii_mask_and_drop(make_project, tmp_path):
    rows = [chat("My email is jane.doe@example.com, help!", "We will write to you."), chat("Plain question?", "Yes.")]
    data = jsonl(tmp_path / "d.jsonl", rows)
    masked = prepare_dataset(*staged(make_project("mask", preprocessing={"pii": "mask"})), data).output_dir
    texts = [r["text"] for name in ("train.jsonl", "val.jsonl", "test.jsonl") for r in read_rows(masked, name)]
    assert any("[EMAIL]" in t for t in texts) and not any("jane.doe" in t for t in texts)
    dropped = prepare_dataset(*staged(make_project("drop", preprocessing={"pii": "drop"})), data).output_dir
    reasons = [r["reason"] for r in read_rows(dropped, "rejects.jsonl")]
    assert reasons == ["contains personal data (email); preprocessing.pii is 'drop'"]


def test_balanced_sampling_caps_big_labels_in_train(make_project, tmp_path):
    rows = [chat(f"q{i}", f"a{i}", label="big") for i in range(300)]
    rows += [chat(f"r{i}", f"b{i}", label="small") for i in range(60)]
    rows += [chat(f"s{i}", f"c{i}", label="mid") for i in range(100)]
    recipe = {"columns": {"messages": "messages", "label": "label"}}
    project = make_project(
        preprocessing={"balance": True, "split": {"method": "stratified", "column": "label"}},
        data={"format": "messages", "recipe": recipe},
    )
    out = prepare_dataset(*staged(project), jsonl(tmp_path / "d.jsonl", rows)).output_dir
    train = Counter(r["label"] for r in read_rows(out, "train.jsonl"))
    assert train["small"] == 54 and train["mid"] == 90  # at or below the median: kept whole
    assert 70 <= train["big"] <= 110  # capped near the median label (90)
    assert any("balanced sampling" in r["reason"] for r in read_rows(out, "rejects.jsonl"))
    assert sorted(placed_lines(out).elements()) == list(range(1, len(rows) + 1))


def test_temporal_split_puts_the_newest_rows_in_test(make_project, tmp_path):
    rows = [chat(f"q{i}", f"a{i}", day=f"2024-01-{i % 28 + 1:02d}") for i in range(56)]
    rows.append(chat("undated", "x", day="someday"))
    recipe = {"columns": {"messages": "messages", "date": "day"}}
    project = make_project(
        preprocessing={"split": {"method": "temporal", "column": "day", "train": 0.5, "val": 0.25, "test": 0.25}},
        data={"format": "messages", "recipe": recipe},
    )
    out = prepare_dataset(*staged(project), jsonl(tmp_path / "d.jsonl", rows)).output_dir
    days = {
        s: sorted(int(r["text"].split("q")[1].split("<")[0]) % 28 + 1 for r in read_rows(out, f"{s}.jsonl"))
        for s in ("train", "val", "test")
    }
    assert max(days["train"]) < min(days["val"]) and max(days["val"]) < min(days["test"])
    assert any("no readable date" in r["reason"] for r in read_rows(out, "rejects.jsonl"))


def test_missing_mapped_column_is_named(make_project, tmp_path):
    recipe = {"columns": {"user": "question", "assistant": "answer"}}
    project = make_project(data={"format": "qa", "recipe": recipe})
    data = jsonl(tmp_path / "d.jsonl", [{"question": f"q{i}", "reply": f"a{i}"} for i in range(60)])
    with pytest.raises(ForgeError) as caught:
        prepare_dataset(*staged(project), data)
    assert "'answer'" in caught.value.message and "max_error_rate" in caught.value.message
    # What diagnosis needs travels as data, so it never reads the reasons' words.
    assert caught.value.code == ErrorCode.DATA_ROWS_REJECTED
    missing = caught.value.data["missing_column"]
    assert missing["column"] == "answer" and missing["role"] == "assistant" and missing["count"] == 60
    assert missing["available"] == ["question", "reply"]
    config = load_config(project).config
    fix = diagnose_failure("prepare", "", "", config, code=caught.value.code, data=caught.value.data)
    assert [(c.key, c.value) for c in fix.changes] == [("data.recipe.columns.assistant", "reply")]


def test_detected_recipe_is_saved_without_environment_overrides(make_project, tmp_path, monkeypatch):
    project = make_project()
    monkeypatch.setenv("FORGE_PREPROCESSING__SEED", "7")
    prepare_dataset(*staged(project), jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(10)]))
    on_disk = load_config(project, environ={}).config
    assert on_disk.data.format == "messages" and on_disk.preprocessing.seed == 42


def test_a_row_nested_too_deeply_is_rejected_not_fatal(make_project, tmp_path):
    """A JSONL line nested deeper than Python's recursion limit used to stop study and prepare with a
    RecursionError; it is one bad row with its line number, and the other rows are trained."""
    from forgellm.data.study.run import study_file

    deep = '{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    rows = [chat(f"Question {i}?", f"Answer {i}.") for i in range(30)]
    data = jsonl(tmp_path / "deep.jsonl", [*rows[:12], deep, *rows[12:]])
    project = make_project()
    studied = study_file(*staged(project), data)
    assert studied.report.rows >= 30
    result = prepare_dataset(*staged(project), data)
    rejects = read_rows(result.output_dir, "rejects.jsonl")
    assert [(r["line"], r["reason"]) for r in rejects if r["line"] == 13] == [(13, "JSON nested too deeply to read")]
    assert sum(result.stats.examples().values()) == 30


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "edited":  # same size, still valid JSON Lines: only the checksum tells
        data = path.read_bytes()
        path.write_bytes(data.replace(b"answer", b"ANSWER", 1))
    else:
        path.unlink()


@pytest.mark.parametrize(("kind", "how"), [("tokens", "truncated"), ("rows", "edited"), ("rejects", "missing")])
def test_resume_redoes_a_damaged_finished_chunk(make_project, tmp_path, monkeypatch, kind, how):
    """Resume checks each finished chunk's files against the size and SHA-256 recorded in the manifest;
    a truncated, edited or missing one is prepared again (and said), never used or fatal."""
    from forgellm.data.prepare.output import chunk_paths
    from forgellm.data.prepare.run import PrepareHooks

    rows = [chat(f"question {i}", f"answer {i}") for i in range(50)]
    rows[13] = "{broken"  # a reject in chunk 1, so its rejects file has content
    data = jsonl(tmp_path / "d.jsonl", rows)
    whole = prepare_dataset(*staged(make_project("whole")), data, chunk_rows=10).output_dir
    project = make_project("damaged")
    restore_writes = interrupt_before_chunk(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(*staged(project), data, chunk_rows=10)
    restore_writes()
    (work,) = (project / "data" / "prepared").glob(".partial-*")
    _damage(chunk_paths(work, 1)[kind], how)
    steps: list[str] = []
    resumed = prepare_dataset(*staged(project), data, chunk_rows=10, hooks=PrepareHooks(step=steps.append))
    assert resumed.resumed_chunks == 1 and resumed.redone_chunks == 2
    assert any("chunk 2 cannot be trusted" in step for step in steps), steps
    for name in OUTPUTS:
        assert (resumed.output_dir / name).read_bytes() == (whole / name).read_bytes(), name
