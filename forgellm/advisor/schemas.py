"""What goes to an advisor (requests, plain dataclasses) and what comes back (answers, pydantic).

Answers double as the response schema sent to Gemini / OpenAI-compatible servers, so they avoid
free-form dicts: mappings are lists of small objects, which every structured-output API accepts.
They are strict (``extra="forbid"``) and bounded, so an absurd or hostile answer fails validation
instead of reaching forge.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgellm.config.schema import (
    CleaningStepName,
    DataFormat,  # one list of formats and recipe fields: forge.yaml's
)
from forgellm.config.schema import RecipeField as RecipeFieldName

TaskType = Literal[
    "chat", "qa", "instruction", "classification", "summarization", "extraction", "code", "cpt", "other"
]
CleaningStep = CleaningStepName  # one list of cleaning steps: forge.yaml's


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- data understanding


@dataclass
class DataRequest:
    """Sampled rows + column statistics + goal. ``rows`` are already cut to the configured sample
    size and PII-masked when asked; ``hint`` is the rules detection, so an LLM can confirm or correct it."""

    goal: str | None
    file_name: str
    kind: str  # reader kind: csv, jsonl, markdown, ...
    columns: list[dict[str, Any]]  # name, types, missing, distinct values (from the study / the sample)
    rows: list[dict[str, Any]]
    hint: dict[str, Any] | None = None  # Detection.to_dict() of the rules backend
    # How the sample was made, so the run can say exactly what left the machine.
    total_rows: int | None = None  # records the rows were sampled from
    pii_masked: bool = False
    value_chars: int | None = None  # longest value sent, in characters (longer ones were cut)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ColumnRole(Answer):
    field: RecipeFieldName = Field(description="What the column holds for training.")
    column: str = Field(min_length=1, max_length=200, description="Column or field name, exactly as in the data.")


class SpeakerRole(Answer):
    name: str = Field(min_length=1, max_length=100, description="Speaker name in the data, e.g. human, gpt.")
    role: Literal["system", "user", "assistant", "drop"]


class RecipeProposal(Answer):
    """How the records become training examples (maps onto forge.yaml data.format + data.recipe)."""

    format: DataFormat
    task_type: TaskType
    columns: list[ColumnRole] = Field(
        default_factory=list, max_length=16, description="Several `user` entries form one user turn, in order."
    )
    role_map: list[SpeakerRole] = Field(default_factory=list, max_length=20)
    system_prompt: str | None = Field(default=None, max_length=2000)
    instruction: str | None = Field(
        default=None, max_length=2000, description="classification only: the request put before each text."
    )
    faq_headings: bool = Field(
        default=False, description="transcript only: a markdown FAQ whose question headings are the user turns."
    )
    cleaning: list[CleaningStep] = Field(default_factory=lambda: ["unicode_nfc", "strip_whitespace"], max_length=5)
    reasons: str = Field(default="", max_length=2000, description="Why, in one or two sentences.")


# ---------------------------------------------------------------- planning


@dataclass
class PlanRequest:
    """Everything the advisor may use to propose a plan. ``candidates`` are catalog models that fit
    this hardware (key, params, good_for, fit verdict per method, context length); an answer naming
    any other model is corrected. ``fixed`` holds the user's flags: they always win."""

    goal: str
    hardware: dict[str, Any]  # HardwareInfo.to_dict()
    candidates: list[dict[str, Any]]
    # rows, format, task_type, token percentiles (p50/p90/p99/max), labels, languages
    data: dict[str, Any] | None = None
    fixed: dict[str, Any] = field(default_factory=dict)  # e.g. {"model": "qwen2.5-0.5b", "epochs": 2}
    offline: bool = False  # hub unreachable: only models available offline can be used
    precision: str | None = None  # the precision decision (hardware/precision.py); None = the rule's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlanProposal(Answer):
    """Model and hyper-parameters. Every number is bounded here and checked again by planning guards."""

    model: str = Field(min_length=1, max_length=100, description="A catalog key from the candidates.")
    method: Literal["lora", "qlora", "full"]
    lora_r: int = Field(default=16, ge=1, le=256)
    lora_alpha: int = Field(default=32, ge=1, le=1024)
    lora_dropout: float = Field(default=0.05, ge=0, le=0.5)
    lora_targets: Literal["all-linear", "attention"] = "all-linear"
    learning_rate: float = Field(gt=0, le=0.01)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, le=0.5)
    epochs: float | None = Field(default=None, gt=0, le=100)
    max_steps: int | None = Field(default=None, ge=1, le=10_000_000)
    micro_batch_size: int = Field(default=1, ge=1, le=1024)
    gradient_accumulation: int = Field(default=1, ge=1, le=1024)
    max_length: int = Field(ge=16, le=1_048_576)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = True
    packing: bool = True
    system_prompt: str | None = Field(default=None, max_length=2000)
    why_model: str = Field(default="", max_length=2000)
    why_method: str = Field(default="", max_length=2000)
    why_hyperparameters: str = Field(default="", max_length=2000)


# ---------------------------------------------------------------- diagnosis


@dataclass
class DiagnosisRequest:
    """A failure to explain: the stage that failed, its error text and the end of its log.

    For a ForgeError, ``code`` and ``data`` are what the rules read; its text is for an LLM advisor."""

    stage: str  # "prepare" | "train" | "eval" | "export" | "inference" | ...
    error: str
    log_tail: str
    config: dict[str, Any]  # ForgeConfig.model_dump(mode="json")
    code: str | None = None  # forgellm.errors.ErrorCode of a ForgeError
    data: dict[str, Any] = field(default_factory=dict)  # its ForgeError.data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConfigChange(Answer):
    key: str = Field(
        min_length=3, max_length=100, pattern=r"^[a-z_]+(\.[a-z_]+)+$", description="Dotted forge.yaml key."
    )
    value: bool | int | float | str | None = Field(description="New value for the key.")


class Fix(Answer):
    """A concrete config change and a plain-language explanation of the failure."""

    problem: Literal["oom", "nan", "template", "eos", "dataset", "export", "disk", "network", "other"]
    explanation: str = Field(min_length=1, max_length=2000, description="What went wrong, for a non-expert.")
    changes: list[ConfigChange] = Field(default_factory=list, max_length=10)
    retry: bool = Field(description="Whether running again with the changes is expected to work.")
    advice: str = Field(default="", max_length=2000, description="What the user can do if no change applies.")


# ---------------------------------------------------------------- scripts


@dataclass
class ScriptRequest:
    """A transformation the recipe cannot express. The script reads ``input_name`` in its working
    directory and writes ``output_name`` (JSONL, one {"messages": [...]} per line)."""

    instructions: str
    input_name: str
    kind: str
    rows: list[dict[str, Any]]
    output_name: str = "output.jsonl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ScriptProposal(Answer):
    code: str = Field(min_length=1, max_length=50_000, description="A complete Python 3 script, standard library only.")
    explanation: str = Field(default="", max_length=2000)


# ---------------------------------------------------------------- synthetic examples


@dataclass
class ExamplesRequest:
    """Seed records of the user's data (their fields, as the file holds them) and how many new ones to write.

    ``example_schema`` is the pydantic model of one record of this file (forgellm/synthetic/shape.py): the
    JSON schema the server's structured output follows. The answer is parsed loosely (``ExamplesProposal``)
    so that one bad example costs only itself; the expander validates each against ``example_schema``."""

    seeds: list[dict[str, Any]]
    count: int
    format: str  # the recipe's data format (qa, alpaca, messages ...)
    example_schema: Any  # type[BaseModel]
    goal: str | None = None

    def answer_schema(self) -> type[BaseModel]:
        from pydantic import create_model

        return create_model(
            "SyntheticExamples",
            __config__=ConfigDict(extra="forbid"),
            examples=(list[self.example_schema], Field(min_length=1, max_length=self.count)),
        )


class ExamplesProposal(Answer):
    """New records; each is checked on its own by the expander (shape, recipe, length, duplicates, copying)."""

    examples: list[Any] = Field(default_factory=list, max_length=256)
