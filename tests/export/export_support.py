"""Support for the export tests: finished runs with a real LoRA adapter of the tiny model."""

from __future__ import annotations

import json
from pathlib import Path


def write_adapter(model_dir: Path, folder: Path, *, seed: int = 0, scale: float = 0.05) -> None:
    """A peft LoRA adapter of `model_dir` whose B matrices are random (a fresh adapter is all zeros, and
    merging zeros would prove nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(folder))


def make_finished_run(root: Path, prepared: Path, model_dir: Path, run_id: str = "20261123-010000-lora-tiny") -> Path:
    """A run folder as `forge train` leaves it after completing: run.json, config.yaml, best/, summary.json."""
    from forgellm.config.io import load_config, save_config
    from forgellm.project.layout import RUN_CONFIG
    from forgellm.project.run_record import RunSpec
    from forgellm.training.data import read_manifest_tokenizer

    config = load_config(root / "forge.yaml", environ={}).config
    run_dir = root / "runs" / run_id
    (run_dir / "logs").mkdir(parents=True)
    RunSpec(run_id, str(root), str(prepared), str(model_dir), read_manifest_tokenizer(prepared)).save(run_dir)
    save_config(config, run_dir / RUN_CONFIG)
    write_adapter(model_dir, run_dir / "best")
    summary = {
        "run_id": run_id,
        "status": "completed",
        "reason": "max_steps",
        "steps": 20,
        "best_val_loss": 2.5,
        "best_step": 20,
        "final_train_loss": 2.4,
        "duration_s": 12.0,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return run_dir
