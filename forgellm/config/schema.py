"""The schema of forge.yaml: one pydantic model per section, every field described once.

Unknown keys are rejected (``extra="forbid"``) so a typo never silently falls back to a default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgellm.config.schema_data import (  # noqa: F401  (re-exported: callers import them from here)
    HUB_PREFIX,
    CleaningStepName,
    DataFormat,
    DataSection,
    DataSourceSection,
    RecipeField,
    RecipeSection,
    Role,
    TranscriptSection,
)
from forgellm.config.section import Section

SCHEMA_VERSION = 2

TemplateName = Literal[
    "auto",
    "tokenizer",
    "chatml",
    "llama2",
    "llama3",
    "alpaca",
    "gemma",
    "mistral",
    "phi3",
    "zephyr",
    "custom",
]
Quantization = Literal["f32", "f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_0", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]


class ProjectSection(Section):
    name: str = Field(default="my-model", min_length=1, description="Name of the project; used for runs and exports.")
    goal: str | None = Field(default=None, description="What the fine-tuned model should do, in plain words.")


class ChatTemplateSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: TemplateName = Field(
        default="auto",
        description="Chat template family. `auto` uses the tokenizer's own template when it has one, "
        "else detects the family from the model; `custom` uses `jinja`.",
    )
    jinja: str | None = Field(
        default=None, description="For `custom`: a Jinja chat template, inline or a path to a .jinja file."
    )
    system_prompt: str | None = Field(
        default=None,
        description="System prompt used when a conversation has none (null = the family's default, '' = none).",
    )
    add_bos: bool | None = Field(
        default=None,
        description="Put the BOS token at the start of each example (null = the family's default).",
    )
    role_names: dict[Literal["system", "user", "assistant"], str] = Field(
        default_factory=dict,
        description="Display names of roles in templates that print them, e.g. {assistant: bot}.",
    )

    @model_validator(mode="after")
    def _custom_needs_jinja(self) -> ChatTemplateSection:
        if self.name == "custom" and not self.jinja:
            raise ValueError("name 'custom' needs `jinja`: an inline Jinja template or the path of a .jinja file")
        return self


class ModelSection(Section):
    ref: str = Field(
        default="smollm2-135m",
        min_length=1,
        description="Which model to fine-tune: a catalog alias (see `forge models`), a hub id, "
        "a local Hugging Face folder or a .gguf file.",
    )
    architecture: str | None = Field(
        default=None,
        description="Model architecture as transformers names it (e.g. llama, qwen2); filled by plan.",
    )
    chat_template: ChatTemplateSection = Field(
        default_factory=ChatTemplateSection, description="How conversations are rendered for this model."
    )
    max_length: int = Field(
        default=2048,
        ge=16,
        le=1_048_576,
        description="Longest training example in tokens; longer ones are cut or dropped.",
    )


class HardwareSection(Section):
    gpu_arch: Literal["blackwell", "hopper", "ada", "ampere", "turing", "volta", "older", "mps", "none"] | None = Field(
        default=None,
        description="GPU architecture family the plan targets ('none' = CPU only); null = probe.",
    )
    gpu_name: str | None = Field(default=None, description="GPU model the plan was made for.")
    vram_gb: float | None = Field(default=None, ge=0, description="GPU memory in GB the plan may use.")
    ram_gb: float | None = Field(default=None, ge=0, description="System memory in GB.")
    cpu_cores: int | None = Field(default=None, ge=1, description="CPU cores available for data work.")


class SplitSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Literal["random", "stratified", "temporal"] = Field(default="random", description="How rows are split.")
    column: str | None = Field(default=None, description="Label column (stratified) or date column (temporal).")
    train: float = Field(default=0.9, gt=0, le=1, description="Share of rows for training.")
    val: float = Field(default=0.05, ge=0, lt=1, description="Share of rows for validation.")
    test: float = Field(default=0.05, ge=0, lt=1, description="Share of rows held out for evaluation.")

    @model_validator(mode="after")
    def _ratios_and_column(self) -> SplitSection:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1.0, got {total:g}")
        if self.method != "random" and not self.column:
            raise ValueError(f"method '{self.method}' needs `column` (the label or date column)")
        return self


class QualityFilters(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    drop_empty: bool = Field(default=True, description="Drop records whose user or assistant text is empty.")
    drop_exact_duplicates: bool = Field(default=True, description="Drop records identical to an earlier one.")
    drop_near_duplicates: bool = Field(default=False, description="Drop near-duplicates (MinHash similarity).")
    near_duplicate_threshold: float = Field(
        default=0.9, gt=0, le=1, description="Similarity above which records are near-duplicates."
    )
    min_chars: int = Field(default=1, ge=0, description="Shortest accepted assistant text, in characters.")
    max_chars: int | None = Field(
        default=None, ge=1, description="Longest accepted record, in characters (null = no limit)."
    )


class PreprocessingSection(Section):
    split: SplitSection = Field(default_factory=SplitSection, description="Train/validation/test split.")
    seed: int = Field(default=42, description="Seed for shuffling and splitting; same seed, same split.")
    chunk_rows: int | None = Field(
        default=None, ge=1, description="Rows processed per streamed chunk (null = sized from available memory)."
    )
    truncation: Literal["split", "drop", "truncate"] = Field(
        default="split",
        description="Examples longer than model.max_length: split (cut long multi-turn conversations between "
        "exchanges, drop what still does not fit), drop, or truncate (cut at max_length).",
    )
    filters: QualityFilters = Field(default_factory=QualityFilters, description="Quality filters.")
    pii: Literal["keep", "mask", "drop"] = Field(
        default="keep", description="Personal data (emails, phones, card numbers, keys): keep, mask or drop rows."
    )
    balance: bool = Field(
        default=False, description="Down-sample over-represented labels in the training split (needs a label)."
    )
    max_error_rate: float = Field(
        default=0.2, ge=0, le=1, description="Stop with no output when more than this share of rows is unreadable."
    )
    cpt_overlap: int = Field(
        default=64, ge=0, description="Tokens shared by consecutive chunks of a document (continued pre-training)."
    )


class LoraSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    r: int = Field(default=16, ge=1, le=1024, description="LoRA rank: size of the low-rank update.")
    alpha: int = Field(default=32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear",
        description="Which linear layers get adapters: 'all-linear' or a list of module names.",
    )


class EarlyStoppingSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(default=True, description="Stop when validation loss stops improving.")
    patience: int = Field(default=3, ge=1, description="Evaluations without improvement before stopping.")
    min_delta: float = Field(default=0.0, ge=0, description="Smallest decrease of validation loss that counts.")


class TrainingSection(Section):
    method: Literal["lora", "qlora", "full"] = Field(default="lora", description="Fine-tuning method.")
    stage: Literal["sft", "cpt"] = Field(
        default="sft", description="sft: learn from conversations; cpt: continued pre-training on raw text."
    )
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA settings (lora and qlora).")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1, description="Peak learning rate.")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1, description="Share of steps spent warming up.")
    epochs: float | None = Field(
        default=3.0, gt=0, description="Passes over the training data (ignored if max_steps is set)."
    )
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    micro_batch_size: int = Field(default=4, ge=1, description="Examples per forward pass.")
    gradient_accumulation: int = Field(default=4, ge=1, description="Micro-batches per optimizer step.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        default="auto",
        description="Numeric precision; auto = bf16 where supported, else fp16 on GPU, fp32 on CPU.",
    )
    packing: bool = Field(
        default=True, description="Pack several short examples into one sequence (no cross-attention)."
    )
    gradient_checkpointing: bool = Field(default=True, description="Recompute activations to save memory.")
    eval_every_steps: int | None = Field(
        default=None, ge=1, description="Evaluate every N steps (null = once per epoch)."
    )
    save_every_steps: int | None = Field(
        default=None, ge=1, description="Checkpoint every N steps (null = once per epoch)."
    )
    eval_max_examples: int | None = Field(
        default=None,
        ge=1,
        description="Validation examples scored at each evaluation, the same seeded subset "
        "every time (null = the whole val split); the plan sets it when a time budget cannot afford more.",
    )
    early_stopping: EarlyStoppingSection = Field(default_factory=EarlyStoppingSection, description="Early stopping.")
    seed: int = Field(default=42, description="Seed for weight init of adapters, data order and dropout.")
    max_grad_norm: float = Field(default=1.0, gt=0, description="Gradients are clipped to this norm.")
    keep_checkpoints: int = Field(default=2, ge=1, le=100, description="Recent checkpoints kept (best kept apart).")
    max_recoveries: int = Field(
        default=3, ge=0, le=20, description="Automatic recoveries (OOM, NaN, crash) before a run gives up."
    )
    overfitting_threshold: float = Field(
        default=0.1,
        gt=0,
        description="Warn when validation loss rises this share above its best while training loss still falls.",
    )
    stop_on_overfitting: bool = Field(default=False, description="Stop (keeping the best checkpoint) on overfitting.")
    report_to: Literal["none", "tensorboard", "mlflow", "wandb"] = Field(
        default="none", description="Experiment tracking through the library's own integration."
    )
    distributed: Literal["auto", "none", "ddp", "fsdp", "deepspeed"] = Field(
        default="auto",
        description="How training spreads over several GPUs: auto = none on one device; on several, ddp when "
        "the model and optimizer fit one GPU, else fsdp (sharded). deepspeed = ZeRO-3 (needs `pip install deepspeed`).",
    )
    gpus: int | None = Field(
        default=None,
        ge=1,
        description="GPUs to use on each machine, one process each (null = all visible ones when distributed is "
        "not none, else 1).",
    )
    nodes: int = Field(default=1, ge=1, description="Machines training together (multi-node: run forge train on each "
                       "with --node-rank and --main-address).")  # fmt: skip
    offload: bool = Field(
        default=False,
        description="fsdp / deepspeed: keep the sharded weights, gradients and optimizer state in CPU RAM (slower; "
        "the rung after sharding when memory still runs out).",
    )
    kernels: Literal["none", "liger", "unsloth"] = Field(
        default="none", description="Optional accelerated CUDA kernels, when installed (ignored on CPU)."
    )
    time_budget_minutes: float | None = Field(
        default=None,
        gt=0,
        description="Longest training time you accept, in minutes; `forge plan` sizes max_steps to fit it "
        "(null = no bound; plan sets one on CPU-only machines).",
    )

    @model_validator(mode="after")
    def _needs_a_length(self) -> TrainingSection:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("set `epochs` or `max_steps` (how long to train)")
        return self


class ExportSection(Section):
    quantizations: list[Quantization] = Field(
        default_factory=lambda: ["f16", "q8_0"],
        description="GGUF files to produce. f16, bf16, q8_0 need nothing extra; K-quants (q4_k_m ...) need "
        "llama-cpp-python (`pip install 'forgellm[llama]'`).",
    )
    ollama_name: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._:-]*$", description="Name for `ollama create` (lower case)."
    )
    system_prompt: str | None = Field(default=None, description="System prompt baked into the Modelfile.")


class AdvisorSection(Section):
    provider: Literal["rules", "gemini", "openai"] = Field(
        default="rules",
        description="Who proposes the plan: offline rules, Gemini, or an OpenAI-compatible server.",
    )
    model: str | None = Field(default=None, description="Advisor model name, e.g. gemini-2.5-flash.")
    base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
        "(for gemini: a proxy or compatible endpoint; null = Google's).",
    )
    sample_rows: int = Field(
        default=5, ge=0, le=100, description="Data rows sent to a remote advisor (0 = column statistics only)."
    )
    redact_pii: bool = Field(
        default=True, description="Mask e-mails, phone numbers, card numbers and keys in rows sent to the advisor."
    )
    timeout_seconds: float = Field(default=60.0, gt=0, le=600, description="Time limit of one advisor request.")
    max_retries: int = Field(
        default=3, ge=0, le=10, description="Retries (with backoff) after rate limits (429) and server errors (5xx)."
    )
    fallback_on_auth_error: bool = Field(
        default=False,
        description="When the API key is rejected, go on with the offline rules advisor instead of stopping.",
    )
    sandbox: Literal["auto", "bubblewrap", "docker"] = Field(
        default="auto",
        description="Where advisor-written scripts run: bubblewrap (Linux), a Docker container with no network, "
        "or auto (bubblewrap when installed, else Docker).",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class StageSection(BaseModel):
    """One stage of a multi-stage project (`forge pipeline cpt-ift`): a name and the sections it changes.

    A stage's effective config is forge.yaml with the stage's sections merged over it, key by key
    (`config/stages.py`, `stage_config`); what a stage leaves out is the project's. The overrides are
    plain mappings here and validated as a whole ForgeConfig once merged, so a stage accepts exactly what
    forge.yaml accepts (a typo in a stage is the same error as one at the top level, with its stage named).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="The stage's name, e.g. cpt or ift.")
    after: str | None = Field(
        default=None,
        description="The stage whose result this one starts from (its best weights merged into a model "
        "folder that becomes this stage's model.ref); null = the project's model.",
    )
    model: dict[str, Any] = Field(default_factory=dict, description="Changes to `model:` for this stage.")
    data: dict[str, Any] = Field(default_factory=dict, description="Changes to `data:` (its source or sources).")
    preprocessing: dict[str, Any] = Field(default_factory=dict, description="Changes to `preprocessing:`.")
    training: dict[str, Any] = Field(default_factory=dict, description="Changes to `training:`.")
    rationale: str | None = Field(default=None, description="Why this stage and its values.")


class ForgeConfig(BaseModel):
    """Everything about one project's fine-tuning run; the content of forge.yaml."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    version: int = Field(default=SCHEMA_VERSION, description="Schema version of this file.")
    project: ProjectSection = Field(default_factory=ProjectSection, description="The project.")
    model: ModelSection = Field(default_factory=ModelSection, description="The model to fine-tune.")
    hardware: HardwareSection = Field(default_factory=HardwareSection, description="Hardware the plan targets.")
    data: DataSection = Field(default_factory=DataSection, description="Training data.")
    preprocessing: PreprocessingSection = Field(default_factory=PreprocessingSection, description="Data preparation.")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Training.")
    export: ExportSection = Field(default_factory=ExportSection, description="Export.")
    advisor: AdvisorSection = Field(default_factory=AdvisorSection, description="The planning advisor.")
    runtime: Literal["auto", "local", "docker"] = Field(
        default="auto",
        description="Where prepare, train and export run: `local` (this Python), `docker` (a container of Forge's "
        "image for this machine's GPUs, `forge docker build`), or `auto`: docker when an engine answers, the "
        "image is built and, on a GPU machine, the engine can pass the GPUs; else local. `--runtime` overrides it.",
    )
    stages: list[StageSection] = Field(
        default_factory=list,
        description="Stages trained one after the other, each over the sections above (e.g. cpt on documents, "
        "then ift on conversations, written by `forge pipeline cpt-ift`); empty = one stage, the sections above.",
    )

    @field_validator("version")
    @classmethod
    def _current_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"this Forge writes version {SCHEMA_VERSION}; older files are migrated on load")
        return value

    @model_validator(mode="after")
    def _stages_merge(self) -> ForgeConfig:
        """Stage names unique, `after` naming an earlier stage, and each stage valid once merged."""
        from forgellm.config.stages import check_stages

        check_stages(self)
        return self
