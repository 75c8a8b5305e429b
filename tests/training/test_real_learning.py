"""Real learning (issue item 8): `forge train` on the bundled SmolLM2-135M and real support chats makes the
model measurably better on held-out chats and teaches it to stop at the end of its turn.

A few minutes of CPU: LoRA on a few hundred Bitext rows (answers cut to their first sentence), through
the CLI and the supervisor's worker process, exactly as a user runs it. Base and fine-tuned models are
scored by the same function on the same test-split examples, with the labels `forge prepare` wrote
(assistant tokens only, the end-of-turn token included).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from stage_support import staged

from .conftest import SHARED_DATA

# Minutes of CPU: the conversion of the bundled GGUF, ~24 optimizer steps, scoring; more on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROWS = 400
END_OF_TURN = "<|im_end|>"
ANSWER_TOKEN_LIMIT = 64  # the shortened answers are one sentence (~15-50 tokens); an unstopped answer runs past this


def write_varied_support_csv(path: Path, rows: int = ROWS) -> Path:
    """`rows` Bitext pairs spread evenly over the whole file (every intent, not only the first one),
    each answer cut to its first sentence so examples are short and the end of the answer is learnable."""
    source = SHARED_DATA / "bitext_customer_support.csv"
    if not source.is_file():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    with open(source, newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    stride = max(1, len(records) // rows)
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["instruction", "response"])
        for record in records[::stride][:rows]:
            match = re.match(r"(.+?[.!?])(\s|$)", record["response"].strip(), flags=re.S)
            answer = (match.group(1) if match else record["response"].strip())[:240].replace("\n", " ")
            writer.writerow([record["instruction"], answer])
    return path


def write_project(root: Path) -> None:
    from forgellm.advisor.rules_plan import learning_rate_for
    from forgellm.config.io import save_config
    from forgellm.config.schema import ForgeConfig
    from forgellm.models.catalog import get_spec

    config = ForgeConfig.model_validate({
        "model": {"ref": "smollm2-135m", "max_length": 256},
        "preprocessing": {"split": {"train": 0.85, "val": 0.05, "test": 0.10}},
        "training": {
            "method": "lora",
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            # The rate the plan gives this model on a CPU (the learning-rate rule is what is tested).
            "learning_rate": learning_rate_for(get_spec("smollm2-135m").params, "lora", "fp32", "cpu")[0],
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.05,
            "max_steps": 24,  # ~24k real tokens: ~1.5 min at the ~300 tokens/s of 2 idle cores
            "micro_batch_size": 4,
            "gradient_accumulation": 1,
            "packing": True,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "eval_every_steps": 12,
            "save_every_steps": 12,
        },
    })
    root.mkdir(parents=True, exist_ok=True)
    save_config(config, root / "forge.yaml")


def held_out_loss(model, examples, pad_id: int) -> float:
    """Mean loss per target token over `examples` (input_ids, labels): one code path for both models."""
    import torch

    from forgellm.training.packing import collate_padded

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), 8):
            chunk = examples[start : start + 8]
            batch = collate_padded([ids for ids, _ in chunk], [labels for _, labels in chunk], pad_id)
            targets = batch.target_tokens
            output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
            total, count = total + float(output.loss) * targets, count + targets
    return total / count




def greedy_answer(model, tokenizer, question: str) -> str:
    import torch

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    with torch.no_grad():
        output = model.generate(**prompt, max_new_tokens=ANSWER_TOKEN_LIMIT, do_sample=False, eos_token_id=end_id,
                                pad_token_id=end_id)
    return tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=False)


def test_forge_train_makes_smollm2_better_on_held_out_support_chats(tmp_path, bundled_model_dir, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from forgellm.cli.main import app
    from forgellm.data.prepare.run import prepare_dataset
    from forgellm.training.data import load_split

    root = tmp_path / "project"
    write_project(root)
    prepared = prepare_dataset(*staged(root), write_varied_support_csv(tmp_path / "support.csv")).output_dir
    monkeypatch.chdir(root)
    result = CliRunner().invoke(app, ["train", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["status"] == "completed", summary
    best = Path(summary["paths"]["best"])

    test_split = load_split(prepared, "test")
    examples = [test_split.example(i) for i in range(len(test_split))]
    assert len(examples) >= 30
    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(bundled_model_dir), dtype=torch.float32)
    base_loss = held_out_loss(base, examples, pad_id)
    question = _held_out_question(tokenizer, examples)
    base_answer = greedy_answer(base, tokenizer, question)

    tuned = PeftModel.from_pretrained(base, str(best))  # wraps the same base weights: nothing else differs
    tuned_loss = held_out_loss(tuned, examples, pad_id)
    tuned_answer = greedy_answer(tuned, tokenizer, question)

    report = (f"test loss base {base_loss:.3f} -> fine-tuned {tuned_loss:.3f}; question {question!r}\n"
              f"base answer: {base_answer!r}\nfine-tuned answer: {tuned_answer!r}")
    print(report)
    assert tuned_loss <= 0.9 * base_loss, report
    assert tuned_answer.rstrip().endswith(END_OF_TURN), report  # it stopped by itself within the limit


def _held_out_question(tokenizer, examples) -> str:
    """The user turn of the first test example, decoded from its tokens (the test split is never trained on)."""
    text = tokenizer.decode(examples[0][0], skip_special_tokens=False)
    match = re.search(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", text, flags=re.S)
    assert match, text
    return match.group(1).strip()
