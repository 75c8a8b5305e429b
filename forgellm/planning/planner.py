"""`forge plan`: goal + data sample + hardware + advisor -> a checked plan, written to forge.yaml.

Steps: probe the hardware; profile a sample of the data (the advisor reads its layout); list the
catalog models that fit (on several GPUs, spread over them: distributed.py); ask the advisor for a
plan and the offline rules for theirs; apply the user's flags; check the answer (guards.py, which
also fixes the multi-GPU strategy); estimate the time and, on a CPU-only machine, bound the steps by
the time budget; write forge.yaml with a rationale per section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from forgellm.advisor import rules_plan
from forgellm.advisor.schemas import PlanProposal, PlanRequest
from forgellm.config.io import CONFIG_FILENAME, save_config
from forgellm.config.schema import ForgeConfig, ModelSection, TrainingSection
from forgellm.errors import ErrorCode, ForgeError
from forgellm.hardware.memory import GIB
from forgellm.hardware.precision import rule_precision
from forgellm.hardware.probe import HardwareInfo
from forgellm.models.lengths import max_length_for
from forgellm.planning.candidates import (
    ModelTarget,
    candidate_entry,
    catalog_candidates,
    largest_fitting,
    resolve_target,
    target_of_spec,
)
from forgellm.planning.distributed import GpuSetting, gpu_setting
from forgellm.planning.guards import CheckedPlan, GuardContext, check_proposal, yaml_key
from forgellm.planning.profile import DataProfile, profile_data
from forgellm.planning.report import Override, PlanResult
from forgellm.planning.schedule import Schedule, check_lr_moves, schedule_plan
from forgellm.planning.writer import build_config
from forgellm.project.layout import ProjectLayout


@dataclass(frozen=True)
class PlanOverrides:
    """The user's flags; they always win over the advisor."""

    model: str | None = None
    method: str | None = None
    epochs: float | None = None
    batch_size: int | None = None  # micro-batch: examples per forward pass
    max_steps: int | None = None
    time_budget: float | None = None  # minutes of training (training.time_budget_minutes)

    def fixed(self, model_key: str | None) -> dict[str, Any]:
        """By proposal field name; the model as its catalog key (or reference outside the catalog)."""
        pairs = {
            "model": model_key,
            "method": self.method,
            "epochs": self.epochs,
            "micro_batch_size": self.batch_size,
            "max_steps": self.max_steps,
        }
        return {k: v for k, v in pairs.items() if v is not None}


def make_plan(
    layout: ProjectLayout,
    config: ForgeConfig | None,
    goal: str | None,
    *,
    data: Path | None = None,
    overrides: PlanOverrides | None = None,
    advisor: Any = None,
    provider: str | None = None,
    hardware: HardwareInfo | None = None,
    dry_run: bool = False,
    offline: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> PlanResult:
    """Plan a fine-tuning run; writes forge.yaml (creating the project if needed) unless ``dry_run``, and
    returns the config it wrote (``result.config``), which the caller carries on instead of reading it back.

    ``config``: forge.yaml as written (no FORGE_* overrides: `project.written_config`), None when there is none.

    ``advisor`` defaults to the one forge.yaml's advisor section names (``provider`` overrides it);
    ``offline`` defaults to FORGE_OFFLINE / HF_HUB_OFFLINE (then only models on disk are candidates).
    """
    goal = (goal or "").strip() or None
    if goal is None and data is None:
        raise ForgeError(
            "Nothing to plan for: give the goal in plain words, the data, or both.",
            fix='forge plan "Make a customer support bot" --data tickets.csv',
            code=ErrorCode.USAGE_INVALID,
        )
    step = progress or (lambda _message: None)
    root = layout.root.expanduser().resolve()
    existing, exists = (config, True) if config is not None else (ForgeConfig(), False)
    overrides = _with_model_from_config(overrides or PlanOverrides(), existing)
    user_target = resolve_target(overrides.model) if overrides.model else None  # a misspelt name fails first
    advisor = advisor or _make_advisor(existing, root, provider)
    hardware_notes: list[str] = []
    if hardware is None:
        hardware, hardware_notes = _probe(root, existing, step)
    offline = _offline() if offline is None else offline
    data = Path(data).expanduser().resolve() if data is not None else None
    profile = (
        profile_data(data, goal, advisor, existing.advisor, existing.data, step,
                     max_error_rate=existing.preprocessing.max_error_rate)
        if data else None
    )  # fmt: skip
    step("Choosing the model and settings")
    seq_len = _planning_length(profile)
    gpus = gpu_setting(hardware, existing.training)
    candidates = _candidates(hardware, seq_len, offline, user_target, gpus)
    fixed = overrides.fixed(user_target.key if user_target else None)
    request = PlanRequest(
        goal=goal or _goal_from(profile), hardware=_stable_hardware(hardware), candidates=list(candidates.values()),
        data=profile.to_request() if profile else None, fixed=fixed, offline=offline,
        precision=rule_precision(hardware).precision,
    )  # fmt: skip
    rules = rules_plan.propose_plan(request)
    proposal, flags = _apply_fixed(_ask(advisor, request, rules), fixed)
    context = _guard_context(candidates, rules, request, fixed, user_target, profile, gpus)
    checked = check_proposal(proposal, context)
    precision = _precision(hardware, checked, dry_run, step)
    if precision.precision != checked.budget.precision:  # measured: memory and lr follow the decision
        context = replace(context, budget=replace(context.budget, precision=precision.precision),
                          precision_reason=precision.reason)  # fmt: skip
        if proposal.precision == request.precision:  # the advisor repeated the unmeasured default it was given
            proposal = PlanProposal.model_construct(**{**proposal.__dict__, "precision": "auto"})
        checked = check_proposal(proposal, context)
    budget = overrides.time_budget or existing.training.time_budget_minutes
    schedule = schedule_plan(checked, profile, hardware, budget, fixed, precision, existing.preprocessing.split)
    checked = check_lr_moves(checked, schedule)
    config = build_config(existing, goal, checked, profile, hardware, schedule, flags, root, precision)
    created = not exists and not dry_run
    if created:
        from forgellm.project import init_project

        init_project(root)
    path = None if dry_run else save_config(config, root / CONFIG_FILENAME)
    notes = list(advisor.notes) + ([] if exists else [_no_project_note(root, dry_run)])
    result = _result(config, root, path, dry_run, created, advisor, checked, schedule, profile, flags, notes, data)
    result.precision = precision
    result.warnings += hardware_notes
    return result


def _precision(hardware: HardwareInfo, checked: CheckedPlan, dry_run: bool, step: Callable[[str], None]):
    """hardware.precision's decision for the checked model and shape (measured on a CPU, see calibration.py)."""
    from forgellm.planning.calibration import plan_precision
    from forgellm.planning.writer import lora_settings

    plan = checked.proposal
    training = TrainingSection(method=plan.method, lora=lora_settings(plan),
                               gradient_checkpointing=plan.gradient_checkpointing)  # fmt: skip
    return plan_precision(hardware, checked.target, training, seq_len=plan.max_length,
                          micro_batch=plan.micro_batch_size, measure=not dry_run, step=step)  # fmt: skip


def _with_model_from_config(overrides: PlanOverrides, existing: ForgeConfig) -> PlanOverrides:
    """A model.ref the user chose counts as --model: one set by `forge init --model` or by hand (plans
    always write a rationale beside the model, so a ref without one, other than the default), or one
    a previous plan took from --model (its rationale says so)."""
    model = existing.model
    if overrides.model is not None or model.ref == ModelSection().ref:
        return overrides
    if model.rationale and rules_plan.USER_CHOICE not in model.rationale:
        return overrides
    return replace(overrides, model=model.ref)


_UNSTABLE = ("disk_path", "disk_free_bytes", "notes", "source")  # source: a probe's date and image id


def _stable_hardware(hardware: HardwareInfo) -> dict[str, Any]:
    """The hardware as the advisor sees it: free memory rounded down to whole GiB and no local paths, so
    the same machine gives the same request (and a re-run is answered from the advisor cache)."""

    def stable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v // GIB * GIB if k.endswith("_bytes") and isinstance(v, int) else stable(v))
                    for k, v in value.items() if k not in _UNSTABLE}  # fmt: skip
        return [stable(v) for v in value] if isinstance(value, list) else value

    return stable(hardware.to_dict())


def _make_advisor(config: ForgeConfig, root: Path, provider: str | None) -> Any:
    from forgellm.advisor.select import make_advisor
    from forgellm.config.io import config_from_mapping

    # FORGE_ADVISOR__* variables choose the advisor for this run; they are not written into forge.yaml.
    effective = config_from_mapping(config.model_dump(mode="json"), source="forge.yaml + FORGE_* variables")
    return make_advisor(effective.config.advisor, root, provider=provider)


def _probe(root: Path, config: ForgeConfig, step: Callable[[str], None]) -> tuple[HardwareInfo, list[str]]:
    """This machine, or what a container of its image sees when training runs in Docker (the saved
    `forge docker probe`, runtime/probe_plan.py); and notes when a saved probe was not used."""
    from forgellm.hardware.probe import probe_hardware
    from forgellm.runtime.probe_plan import plan_hardware

    step("Probing the hardware")
    return plan_hardware(probe_hardware(root), config)


def _offline() -> bool:
    from forgellm.config.settings import offline_mode

    return offline_mode()


def _no_project_note(root: Path, dry_run: bool) -> str:
    if dry_run:
        return f"No forge.yaml at {root}: planned with default settings; without --dry-run a project is created there."
    return f"No forge.yaml at {root}: created a project there (like `forge init`) with the offline rules advisor."


def _goal_from(profile: DataProfile | None) -> str:
    task = profile.task_type if profile else "chat"
    return f"Fine-tune on this data ({task})"


def _planning_length(profile: DataProfile | None) -> int:
    """The sequence length candidates are sized for: the one max_length rule for the data, capped at 8k
    (no model is chosen yet, and few need more to be sized)."""
    p99 = profile.tokens.get("p99") if profile else None
    return max_length_for(p99, 8192)[0]


def _candidates(
    hardware: HardwareInfo, seq_len: int, offline: bool, user_target: ModelTarget | None, gpus: GpuSetting | None
) -> dict[str, dict[str, Any]]:
    """Catalog models that fit, plus the user's model when it fits with some method."""
    found = {c["key"]: c for c in catalog_candidates(hardware, seq_len, offline=offline, gpus=gpus)}
    if user_target is not None:
        entry = candidate_entry(user_target, hardware, seq_len, offline_ok=True, gpus=gpus)
        if "fits" not in entry["fit"].values():
            raise _user_model_too_big(user_target, entry, hardware, seq_len, gpus)
        found[user_target.key] = entry
    if not found:
        where = " among the models on this disk (offline)" if offline else ""
        raise ForgeError(
            f"No model{where} fits this machine's memory for training at {seq_len} tokens.",
            fix="Free memory (close other programs), or train on a machine with more memory or a GPU"
            + ("; or go online so hub models can be downloaded." if offline else "."),
            code=ErrorCode.MEMORY_INSUFFICIENT,
        )
    return found


def _user_model_too_big(
    target: ModelTarget, entry: dict[str, Any], hardware: HardwareInfo, seq_len: int, gpus: GpuSetting | None
) -> ForgeError:
    need = min(entry["memory_gib"][m] for m in entry["fit"] if entry["fit"][m] != "needs GPU")
    budget = (hardware.largest_gpu.vram_total_bytes if hardware.largest_gpu else hardware.ram_available_bytes) / GIB
    spread = f" (per GPU, spread over {gpus.gpus * gpus.nodes} GPUs)" if gpus else ""
    best = largest_fitting(hardware, seq_len, gpus)
    suggestion = f" The largest catalog model that fits is {best['key']}: --model {best['key']}." if best else ""
    return ForgeError(
        f"{target.key} cannot be trained on this machine with any method: it needs at least ~{need:.1f} GiB{spread} "
        f"and {budget:.1f} GiB is available ({hardware.accelerator}).",
        fix=f"Use a smaller model or a machine with more memory.{suggestion}",
        code=ErrorCode.MEMORY_INSUFFICIENT,
    )


def _ask(advisor: Any, request: PlanRequest, rules: PlanProposal) -> PlanProposal:
    from forgellm.advisor.errors import AdvisorAuthError, AdvisorError

    try:
        return advisor.propose_plan(request)
    except AdvisorAuthError:  # a rejected key is the user's to fix (the fallback already applied their choice)
        raise
    except AdvisorError as exc:  # an advisor not wrapped in the fallback: the rules answer instead
        advisor.notes.append(
            f"The {advisor.name} advisor gave no usable plan ({exc.message}); the rules' plan is used."
        )
        return rules


def _apply_fixed(proposal: PlanProposal, fixed: dict[str, Any]) -> tuple[PlanProposal, list[Override]]:
    """The user's flags replace the advisor's values; each is listed with what the advisor said."""
    flags = [Override(yaml_key(name), value, getattr(proposal, name, None)) for name, value in fixed.items()]
    values = {**proposal.__dict__, **fixed}
    if "max_steps" in fixed and "epochs" not in fixed:
        values["epochs"] = proposal.epochs or 1.0
    return PlanProposal.model_construct(**values), flags


def _guard_context(
    candidates: dict[str, dict[str, Any]], rules: PlanProposal, request: PlanRequest, fixed: dict[str, Any],
    user_target: ModelTarget | None, profile: DataProfile | None, gpus: GpuSetting | None,
) -> GuardContext:  # fmt: skip
    def target_of(key: str) -> ModelTarget:
        if user_target is not None and key == user_target.key:
            return user_target
        from forgellm.models.catalog import get_spec

        return target_of_spec(get_spec(key))

    return GuardContext(
        candidates=candidates, rules=rules,
        budget=rules_plan.MemoryBudget.from_hardware(request.hardware, request.precision),
        fixed=fixed, target_of=target_of, p90_tokens=profile.tokens.get("p90") if profile else None,
        stage=profile.stage if profile else "sft", gpus=gpus,
    )  # fmt: skip


def _result(
    config: ForgeConfig, root: Path, path: Path | None, dry_run: bool, created: bool, advisor: Any,
    checked: CheckedPlan, schedule: Schedule, profile: DataProfile | None, flags: list[Override],
    notes: list[str], data: Path | None,
) -> PlanResult:  # fmt: skip
    budget = checked.budget
    return PlanResult(
        config=config, project_dir=root, config_path=path, dry_run=dry_run, created_project=created,
        advisor=advisor.name, model_key=checked.target.key, model_name=checked.target.display_name,
        model_params=checked.target.params, why_model=checked.proposal.why_model, memory=checked.memory,
        memory_budget_bytes=budget.bytes, memory_budget_source=budget.source, time=schedule.time,
        time_budget_minutes=schedule.budget_minutes, profile=profile, corrections=checked.corrections,
        overrides=flags, warnings=[*checked.warnings, *schedule.warnings, *(profile.warnings if profile else [])],
        advisor_notes=notes, data_path=data, distribution=checked.distribution,
    )  # fmt: skip
