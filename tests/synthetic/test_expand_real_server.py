"""`forge expand` against a real OpenAI-compatible server: llama.cpp (xllamacpp) serving the bundled SmolLM2.

Real protocol, real JSON-schema grammar, real generation. The 135M model's examples are often poor; the
test asserts the pipeline, not their quality: the report adds up, every written synthetic row is of the
file's shape, marked, new and within the length range, the user's file is untouched, and prepare puts the
synthetic rows in train only.
"""

from __future__ import annotations

import json

import pytest
from advisor.llm_server import LocalLLMServer, why_no_server
from typer.testing import CliRunner

from forgellm.cli.main import app
from forgellm.data.prepare.splits import content_key
from forgellm.synthetic.filters import REASONS
from synthetic.support import qa_project, qa_rows, write_qa

runner = CliRunner()


@pytest.fixture(scope="module")
def server():
    reason = why_no_server()
    if reason:
        pytest.skip(reason)
    # A short cap per answer: with the schema's bounded texts, a batch of 2 examples fits in 512 tokens.
    with LocalLLMServer(context=4096, max_tokens=512) as running:
        yield running


@pytest.mark.slow  # up to 6 requests of ~500 prompt and ~200 answer tokens: ~1 min on two idle cores
def test_expand_with_the_real_server_keeps_only_checked_rows_and_prepare_keeps_them_in_train(
    server, tmp_path, tiny_causal_lm_dir
):
    from stage_support import staged

    from forgellm.data.prepare.run import prepare_dataset

    advisor = {"provider": "openai", "base_url": server.url, "model": "smollm2", "max_retries": 0,
               "timeout_seconds": 300}  # fmt: skip
    project = qa_project(tmp_path / "project", tiny_causal_lm_dir, advisor=advisor)
    data = write_qa(project)
    before = data.read_bytes()
    result = runner.invoke(
        app,
        ["expand", str(data), "--to", "16", "--batch", "2", "--seeds", "2", "--max-requests", "6", "-C", str(project),
         "--json"],
    )  # fmt: skip
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    assert report["requests"] >= 1 and report["notes"][0].startswith("Sent to smollm2 (openai): 2 records")
    assert set(report["dropped"]) == set(REASONS)
    assert report["generated"] == report["kept"] + sum(report["dropped"].values())
    assert data.read_bytes() == before
    output = project / "support.expanded.jsonl"
    if report["kept"] == 0:
        # SmolLM2-135M often echoes its seeds: each such example is dropped and counted, nothing is written, and
        # the command says so. (The split rule on written rows is then covered by test_expand.py's scripted client.)
        assert result.exit_code == 1 and "synthetic-none-kept" in result.output and not output.exists()
        assert report["generated"] > 0 or report["unusable_answers"] > 0
        return
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert rows[:12] == qa_rows() and len(rows) == 12 + report["kept"]
    seen = {content_key(f"{r['question']}\n{r['answer']}") for r in qa_rows()}
    for row in rows[12:]:
        assert set(row) == {"question", "answer", "synthetic", "synthetic_seeds"} and row["synthetic"] is True
        assert len(row["synthetic_seeds"]) == 2 and set(row["synthetic_seeds"]) <= set(range(1, 13))
        key = content_key(f"{row['question']}\n{row['answer']}")
        assert key not in seen  # new: not a row of the data, not another kept example
        seen.add(key)
    prepared = prepare_dataset(*staged(project), output)
    synthetic_by_split = {
        split: sum(bool(json.loads(line).get("synthetic")) for line in
                   (prepared.output_dir / f"{split}.jsonl").read_text().splitlines())
        for split in ("train", "val", "test")
    }  # fmt: skip
    assert synthetic_by_split["val"] == synthetic_by_split["test"] == 0
    assert synthetic_by_split["train"] >= 1
