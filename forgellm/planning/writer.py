"""The checked plan -> forge.yaml sections, each with a rationale a non-expert can read.

Only what the plan decides is replaced; the user's other settings (advisor, project name,
preprocessing, export formats, chat-template choices) stay as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.config.schema import (
    DataSection,
    ForgeConfig,
    HardwareSection,
    ModelSection,
    PreprocessingSection,
    SplitSection,
    TrainingSection,
)
from forgellm.hardware.memory import GIB
from forgellm.hardware.probe import HardwareInfo
from forgellm.planning.hyperparams import cadence_for

if TYPE_CHECKING:
    from forgellm.hardware.precision import PrecisionDecision
    from forgellm.planning.guards import CheckedPlan
    from forgellm.planning.profile import DataProfile
    from forgellm.planning.report import Override
    from forgellm.planning.schedule import Schedule

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def build_config(
    existing: ForgeConfig, goal: str | None, checked: CheckedPlan, profile: DataProfile | None,
    hardware: HardwareInfo, schedule: Schedule, flags: list[Override], root: Path, precision: PrecisionDecision,
) -> ForgeConfig:  # fmt: skip
    config = existing.model_copy(deep=True)
    if goal:
        config.project.goal = goal
    config.model = _model_section(existing.model, checked)
    config.hardware = _hardware_section(hardware, checked)
    if profile is not None:
        config.data = _data_section(existing.data, profile, checked, root)
        if profile.recipe.system_prompt and not config.export.system_prompt:
            # The model answers best at inference with the system prompt it was trained with.
            config.export.system_prompt = profile.recipe.system_prompt
    config.training = _training_section(existing.training, checked, profile, hardware, schedule, flags, precision)
    config.preprocessing = _preprocessing_section(config, profile)
    config.export.rationale = _export_rationale(checked)
    # The whole file as prepare will read it: a rule broken here fails now, not in prepare.
    from forgellm.config.consistency import check_consistent

    config = ForgeConfig.model_validate(config.model_dump())
    check_consistent(config)
    return config


def _corrections_text(checked: CheckedPlan, section: str) -> list[str]:
    return [c.sentence() for c in checked.corrections if c.section == section]


def _model_section(existing: ModelSection, checked: CheckedPlan) -> ModelSection:
    plan, target = checked.proposal, checked.target
    template = existing.chat_template.model_copy()
    if checked.template_fallback and template.name == "auto":
        template.name = checked.template_fallback  # type: ignore[assignment]
    why = [plan.why_model, *_corrections_text(checked, "model")]
    return ModelSection(
        ref=target.ref,
        architecture=target.architecture,
        chat_template=template,
        max_length=plan.max_length,
        rationale=" ".join(w for w in why if w),
    )


def _hardware_section(hardware: HardwareInfo, checked: CheckedPlan) -> HardwareSection:
    gpu = hardware.largest_gpu
    arch = gpu.arch if gpu else ("mps" if hardware.mps else "none")
    ram = f"{hardware.ram_total_bytes / GIB:.1f} GiB RAM ({hardware.ram_available_bytes / GIB:.1f} GiB available)"
    return HardwareSection(
        gpu_arch=arch,  # type: ignore[arg-type]
        gpu_name=gpu.name if gpu else None,
        vram_gb=round(gpu.vram_total_bytes / 1e9, 1) if gpu else None,
        ram_gb=round(hardware.ram_total_bytes / 1e9, 1),
        cpu_cores=hardware.cpu_physical_cores,
        rationale=(
            f"{_hardware_source(hardware)}: {hardware.accelerator}, {hardware.cpu_physical_cores} CPU cores, {ram}; "
            f"bf16 "
            f"{hardware.bf16.summary}. {_memory_sentence(checked)}"
        ),
    )


def _memory_sentence(checked: CheckedPlan) -> str:
    budget, spread = checked.budget, checked.distribution
    if spread is None:
        return (f"The plan needs ~{checked.memory.total_bytes / GIB:.1f} GiB of {budget.bytes / GIB:.1f} GiB "
                f"({budget.source}), kept under 85% for safety.")  # fmt: skip
    choice = spread.choice
    return (f"The plan needs ~{choice.per_gpu_bytes / GIB:.1f} GiB per GPU with {choice.strategy} on "
            f"{choice.gpus * choice.nodes} GPUs (~{checked.memory.total_bytes / GIB:.1f} GiB on one), kept under "
            "85% of each GPU for safety.")  # fmt: skip


def _hardware_source(hardware: HardwareInfo) -> str:
    # A plan for a container says whose figures it used: a stale probe would mislead later readers.
    return f"Hardware from {hardware.source}" if hardware.source else "Probed"


def _data_section(existing: DataSection, profile: DataProfile, checked: CheckedPlan, root: Path) -> DataSection:
    recipe = profile.recipe.model_copy(deep=True)
    if checked.proposal.system_prompt and not recipe.system_prompt:
        recipe.system_prompt = checked.proposal.system_prompt
    tokens = profile.tokens
    why = (
        f"{profile.format} ({profile.recipe_source}): {profile.reasons or 'detected from the columns'}. "
        f"~{profile.rows:,} rows; sampled {profile.sampled:,}: tokens per example p50 {tokens['p50']:.0f}, "
        f"p99 {tokens['p99']:.0f}, max {tokens['max']:.0f} ({profile.token_counter})."
    )
    if profile.rejected:
        why += f" {profile.rejected} sampled rows do not fit the recipe and will be rejected."
    return DataSection(
        source=_relative(profile.path, root), format=profile.format, recipe=recipe, rationale=why,  # type: ignore[arg-type]
        sources=existing.sources, mixture_seed=existing.mixture_seed,  # a mixture the user wrote stays
    )  # fmt: skip


def _preprocessing_section(config: ForgeConfig, profile: DataProfile | None) -> PreprocessingSection:
    """Settings that follow from the plan: a document overlap shorter than the planned max_length, and
    splits stratified by the label for classification (each label in train, val and test in proportion)."""
    prep = config.preprocessing.model_copy(deep=True)
    overlap_limit = max(0, config.model.max_length // 4)
    if prep.cpt_overlap > overlap_limit:
        prep.cpt_overlap = overlap_limit
    label = profile.recipe.columns.get("label") if profile is not None else None
    if profile is not None and profile.format == "classification" and isinstance(label, str):
        if prep.split.method == "random":
            prep.split = SplitSection.model_validate({**prep.split.model_dump(), "method": "stratified",
                                                      "column": label})  # fmt: skip
    return prep


def _relative(path: Path, root: Path) -> str:
    """Inside the project a relative path (the folder can move); elsewhere the absolute one."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def lora_settings(plan: Any) -> dict[str, Any]:
    """A proposal's LoRA fields as forge.yaml's training.lora."""
    targets = "all-linear" if plan.lora_targets == "all-linear" else list(ATTENTION_MODULES)
    return {"r": plan.lora_r, "alpha": plan.lora_alpha, "dropout": plan.lora_dropout, "target_modules": targets}


def _training_section(
    existing: TrainingSection, checked: CheckedPlan, profile: DataProfile | None, hardware: HardwareInfo,
    schedule: Schedule, flags: list[Override], precision: PrecisionDecision,
) -> TrainingSection:  # fmt: skip
    plan = checked.proposal
    total_steps = schedule.time.total_steps if schedule.time else None
    accelerated = hardware.has_cuda or hardware.mps
    cadence = cadence_for(total_steps, accelerated, schedule.evaluations) if total_steps else None
    values: dict[str, Any] = existing.model_dump()
    values.update(
        method=plan.method, stage=profile.stage if profile else existing.stage, lora=lora_settings(plan),
        learning_rate=plan.learning_rate, lr_scheduler=plan.lr_scheduler, warmup_ratio=plan.warmup_ratio,
        epochs=plan.epochs, max_steps=schedule.max_steps, micro_batch_size=plan.micro_batch_size,
        gradient_accumulation=schedule.gradient_accumulation or plan.gradient_accumulation,
        precision=precision.precision, packing=plan.packing,
        gradient_checkpointing=plan.gradient_checkpointing, time_budget_minutes=schedule.budget_minutes,
        eval_every_steps=cadence.eval_every_steps if cadence else None, eval_max_examples=schedule.eval_max_examples,
        save_every_steps=cadence.save_every_steps if cadence else None,
    )  # fmt: skip
    if cadence is not None:
        values["early_stopping"] = {**values["early_stopping"], "enabled": cadence.early_stopping,
                                    "patience": cadence.patience}  # fmt: skip
    why = [plan.why_method, f"Precision {precision.reason}", plan.why_hyperparameters, *schedule.notes,
           cadence.reason if cadence else ""]  # fmt: skip
    why += _corrections_text(checked, "training") + [f.sentence().capitalize() + "." for f in flags]
    values.update(_distributed_values(existing, checked))
    if checked.distribution is not None:
        why.append(checked.distribution.rationale())
        why.append(_split_accumulation(values, checked.distribution.choice))
    values["rationale"] = " ".join(w.strip() for w in why if w and w.strip())
    return TrainingSection.model_validate(values)


def _distributed_values(existing: TrainingSection, checked: CheckedPlan) -> dict[str, Any]:
    """training.distributed / gpus / nodes / offload: the plan's choice on several GPUs; on one device the
    user's values stay, and those an earlier plan chose go back to their defaults (auto)."""
    from forgellm.planning.distributed import plan_made

    spread = checked.distribution
    if spread is not None:
        choice = spread.choice
        return {"distributed": choice.strategy, "gpus": choice.gpus, "nodes": choice.nodes, "offload": choice.offload}
    if plan_made(existing):
        return {"distributed": "auto", "gpus": None, "offload": False}
    return {}


def _split_accumulation(values: dict[str, Any], choice: Any) -> str:
    """Each process accumulates its share of the step (training/parallel.py: a step takes micro-batch ×
    accumulation × processes examples), so the planned examples per step and the schedule stay."""
    world = choice.gpus * choice.nodes
    planned = values["gradient_accumulation"]
    share = max(1, planned // world)
    values["gradient_accumulation"] = share
    per_step = values["micro_batch_size"] * share * world
    if share * world != planned and values.get("max_steps"):  # another batch size: as many examples in all
        values["max_steps"] = max(1, round(values["max_steps"] * planned / (share * world)))
    return (f"Each of the {world} processes accumulates {share} micro-batch(es), so an optimizer step takes "
            f"{per_step} examples.")  # fmt: skip


def _export_rationale(checked: CheckedPlan) -> str:
    from forgellm.planning.guards import gguf_warnings

    problems = gguf_warnings(checked.target)
    if problems:
        return problems[0]
    return f"GGUF export works for {checked.target.key} (architecture {checked.target.architecture})."
