"""The model card (README.md) and metadata.json of an export.

The card is written for the person who will use the model next: what it was trained from and how,
how well it did, and the exact commands to run it with transformers, llama.cpp and Ollama.
metadata.json carries the same facts for programs (`forge inference`, `forge status`, the UI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forgellm.errors import ForgeError
from forgellm.export.source import ExportSource
from forgellm.project.export_record import ExportFiles, ExportMetadata, OllamaRecord
from forgellm.project.layout import PreparedLayout, ProjectLayout
from forgellm.project.prepared import PreparedStats


@dataclass
class ExportFacts:
    """Everything the card and metadata say, gathered by the pipeline."""

    name: str
    source: ExportSource
    base_model: str  # forge.yaml's model reference (alias, hub id or path)
    base_hub_id: str | None
    licence: str | None
    architecture: str
    parameters: int
    merged_dtype: str
    chat_template_name: str
    stop: list[str]
    num_ctx: int
    gguf_files: dict[str, str]  # quant -> file name
    modelfile: str | None
    ollama_model: str
    ollama_command: str
    data_stats: PreparedStats | None = None  # stats.json of the data the run trained on, when still there
    eval_report: dict[str, Any] = field(default_factory=dict)  # eval.json's summary, when it is of this run
    loss_plot: str | None = None
    published_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


def performance(facts: ExportFacts) -> dict[str, Any]:
    summary = facts.source.summary
    keys = ("status", "steps", "best_val_loss", "best_step", "final_val_loss", "final_train_loss", "duration_s")
    values = {k: getattr(summary, k) for k in keys} if summary is not None else {}
    result: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    if facts.eval_report:
        result["eval"] = facts.eval_report
    return result


def build_metadata(facts: ExportFacts) -> ExportMetadata:
    config = facts.source.config
    return ExportMetadata(
        name=facts.name,
        base_model=facts.base_model,
        base_model_hub_id=facts.base_hub_id,
        base_model_dir=str(facts.source.base_model_dir),
        architecture=facts.architecture,
        parameters=facts.parameters,
        training_type=config.training.method,
        stage=config.training.stage,
        run_id=facts.source.run_id,
        checkpoint=facts.source.checkpoint,
        published_at=facts.published_at,
        licence=facts.licence,
        chat_template=config.model.chat_template.model_dump(mode="json"),
        chat_template_resolved=facts.chat_template_name,
        stop=facts.stop,
        num_ctx=facts.num_ctx,
        files=ExportFiles(gguf=facts.gguf_files, modelfile=facts.modelfile),
        config=config.model_dump(mode="json", exclude={"rationale"}),
        performance=performance(facts),
        data=_data_summary(facts.data_stats),
        ollama=OllamaRecord(model=facts.ollama_model, command=facts.ollama_command),
    )


def _data_summary(stats: PreparedStats | None) -> dict[str, Any]:
    if stats is None:  # the prepared data is gone: the card says what it can
        return {"source": None, "format": None, "examples": {}, "trained_tokens": None, "rejected": None}
    return {
        "source": Path(str(stats.input.get("path", ""))).name or None,
        "format": stats.format,
        "examples": stats.examples(),
        "trained_tokens": stats.trained_tokens or None,
        "rejected": stats.rejected,
    }


def _fmt(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _front_matter(facts: ExportFacts) -> str:
    lines = ["---"]
    if facts.licence:
        lines.append(f"license: {facts.licence}")
    if facts.base_hub_id:
        lines.append(f"base_model: {facts.base_hub_id}")
    lines += ["library_name: transformers", "pipeline_tag: text-generation", "tags:", "  - forge", "  - gguf"]
    lines.append(f"  - {facts.source.config.training.method}")
    lines.append("---")
    return "\n".join(lines)


def _hyperparameters(facts: ExportFacts) -> list[str]:
    t = facts.source.config.training
    rows = [
        ("method", t.method),
        ("stage", t.stage),
        ("epochs", t.epochs),
        ("max steps", t.max_steps),
        ("learning rate", t.learning_rate),
        ("scheduler", t.lr_scheduler),
        ("micro-batch x accumulation", f"{t.micro_batch_size} x {t.gradient_accumulation}"),
        ("max length", facts.source.config.model.max_length),
        ("precision", t.precision),
        ("packing", t.packing),
        ("seed", t.seed),
    ]
    if t.method in ("lora", "qlora"):
        rows.insert(1, ("LoRA r / alpha / dropout", f"{t.lora.r} / {t.lora.alpha} / {t.lora.dropout}"))
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v if v is not None else '–'} |" for k, v in rows)]


def _usage(facts: ExportFacts) -> list[str]:
    gguf = next(iter(facts.gguf_files.values()), None)
    out = [
        "## Use it",
        "",
        "**transformers** (the merged weights in `merged/`; the chat template is in the tokenizer):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("merged")',
        'model = AutoModelForCausalLM.from_pretrained("merged")',
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",'
        " return_dict=True)",
        "output = model.generate(**inputs, max_new_tokens=256)  # stops at the end of the turn",
        'print(tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "```",
        "",
        '**Forge**: `forge inference --model export` (chat), `forge inference --prompt "Hello"` (one answer).',
        "",
    ]
    if gguf:
        out += [
            "**llama.cpp** (the chat template and stop token are inside the GGUF):",
            "",
            "```bash",
            f"llama-cli -m {gguf} -cnv",
            "```",
            "",
            "**llama-cpp-python**:",
            "",
            "```python",
            "from llama_cpp import Llama",
            "",
            f'llm = Llama(model_path="{gguf}", n_ctx={facts.num_ctx})',
            'print(llm.create_chat_completion([{"role": "user", "content": "Hello!"}])["choices"][0]["message"])',
            "```",
            "",
        ]
    if facts.modelfile:
        out += [
            "**Ollama** (the Modelfile's template reproduces the training format byte for byte):",
            "",
            "```bash",
            facts.ollama_command,
            f"ollama run {facts.ollama_model}",
            "```",
            "",
        ]
    return out


def build_card(facts: ExportFacts) -> str:
    config = facts.source.config
    perf = performance(facts)
    data = _data_summary(facts.data_stats)
    goal = config.project.goal
    examples = data.get("examples") or {}
    lines = [
        _front_matter(facts),
        "",
        f"# {facts.name}",
        "",
        (f"{goal.strip()}\n\n" if goal else "")
        + f"A {config.training.method.upper()} fine-tune of **{facts.base_hub_id or facts.base_model}** "
        f"({facts.parameters / 1e6:,.0f}M parameters, {facts.architecture}), made with Forge.",
        "",
        "## Training data",
        "",
        f"- source: `{data.get('source') or config.data.source or 'unknown'}` (format: {data.get('format') or '–'})",
        "- examples: " + (", ".join(f"{k} {v:,}" for k, v in examples.items() if isinstance(v, int)) or "–"),
        f"- trained (assistant) tokens: {data['trained_tokens']:,}"
        if data.get("trained_tokens")
        else "- trained tokens: –",
        f"- chat template: `{facts.chat_template_name}`; loss on assistant tokens only"
        if config.training.stage == "sft"
        else f"- stage: {config.training.stage} (all tokens trained)",
        "",
        "## Method and hyper-parameters",
        "",
        *_hyperparameters(facts),
        "",
        "## Results",
        "",
        f"- run `{facts.source.run_id}`, checkpoint `{facts.source.checkpoint}`, status {perf.get('status', '–')}, "
        f"{perf.get('steps', '–')} steps",
        f"- validation loss (best): {_fmt(perf.get('best_val_loss'))}"
        + (f" at step {perf['best_step']}" if perf.get("best_step") is not None else ""),
        f"- training loss (final): {_fmt(perf.get('final_train_loss'))}",
    ]
    evaluation = facts.eval_report
    if evaluation:
        lines.append("- evaluation (`forge eval`): " + ", ".join(f"{k} {_fmt(v)}" for k, v in _flat(evaluation)))
    if facts.loss_plot:
        lines += ["", f"![loss curve]({facts.loss_plot})"]
    lines += [
        "",
        "## Files",
        "",
        "- `merged/`: Hugging Face weights (safetensors) and tokenizer",
        *(f"- `{file}`: GGUF, {quant.upper()}" for quant, file in facts.gguf_files.items()),
        *([f"- `{facts.modelfile}`: Ollama Modelfile (template, stop tokens, context)"] if facts.modelfile else []),
        "- `metadata.json`: the same facts for programs",
        "",
        *_usage(facts),
        "## Licence",
        "",
        (
            f"The weights derive from {facts.base_hub_id or facts.base_model}, released under `{facts.licence}`; "
            "that licence applies to this model too."
            if facts.licence
            else "The base model's licence applies to this model; check it before you share the model."
        ),
        "",
    ]
    return "\n".join(lines)


def _flat(report: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in report.items():
        if isinstance(value, dict):
            out.extend(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((f"{prefix}{key}", value))
    return out[:12]


# ------------------------------------------------------------------------------------------------ facts


def catalog_entry(ref: str) -> tuple[Any, str | None]:
    """The catalog entry (licence) and hub id of forge.yaml's model reference, when it has them."""
    from forgellm.models.catalog import find_by_hub_id, get_spec, is_known_alias
    from forgellm.models.resolve import resolve_model

    try:
        source = resolve_model(ref)
    except ForgeError:
        return None, None
    spec = source.spec or (get_spec(ref) if is_known_alias(ref) else find_by_hub_id(ref))
    return spec, source.hub_id or (spec.instruct_id if spec else None)


def prepared_stats(source: ExportSource) -> PreparedStats | None:
    from forgellm.project.run_record import RunSpec

    return PreparedStats.load(PreparedLayout(Path(RunSpec.load(source.run_dir).prepared_dir)))


def eval_report(source: ExportSource) -> dict[str, Any]:
    """Base vs fine-tuned figures of `forge eval`, when it evaluated this run."""
    from forgellm.project.eval_record import EvalRecord

    report = EvalRecord.load(ProjectLayout(source.run_dir.parent.parent))  # runs/<id>/ sits in the project
    return report.summary_of(source.run_id) if report is not None else {}
