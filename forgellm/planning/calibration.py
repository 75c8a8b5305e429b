"""The plan's precision and throughput for the chosen model on this machine.

On a GPU (or Apple MPS) the rule decides (hardware/precision.py). On a CPU, a few real training steps
of the chosen model in fp32 and bf16 are timed at the planned shape (training/calibrate.py): the
faster stable precision is chosen, and its measured tokens/s turns the time budget into steps. The
measurement is cached per machine, model and shape, so re-planning costs nothing; a dry run never
measures (it uses the cache or the rule and says so), and a model that is not on disk yet is neither
downloaded nor converted for it (`forge study` or `forge prepare` convert the bundled model; `forge
ignite` studies before it plans).
"""

from __future__ import annotations

from collections.abc import Callable

from forgellm.config.schema import TrainingSection
from forgellm.hardware.precision import PrecisionDecision, cached_decision, rule_precision, store_decision
from forgellm.hardware.probe import HardwareInfo
from forgellm.planning.candidates import ModelTarget


def plan_precision(
    hardware: HardwareInfo, target: ModelTarget, training: TrainingSection, *, seq_len: int, micro_batch: int,
    measure: bool, step: Callable[[str], None] = lambda _m: None,
) -> PrecisionDecision:  # fmt: skip
    """The precision decision for training ``target`` with ``training``'s method and LoRA settings."""
    rule = rule_precision(hardware)
    if hardware.gpus or hardware.mps:
        return rule
    from forgellm.training.calibrate import describe_shape

    shape = describe_shape(training, seq_len, micro_batch)
    cached = cached_decision(hardware, target.key, shape)
    if cached is not None:
        return cached
    if not measure:
        return _unmeasured(rule, "a dry run does not measure")
    folder = _model_folder(target)
    if folder is None:
        return _unmeasured(rule, f"{target.ref} is not on this disk yet (`forge prepare` gets it; plan again then)")
    candidates = ("fp32", "bf16") if hardware.bf16.cpu == "native" else ("fp32",)
    step(f"Measuring training speed on this machine ({', '.join(candidates)}; {shape})")
    try:
        from forgellm.training.calibrate import measure_cpu_precisions

        decision = measure_cpu_precisions(folder, training, seq_len=seq_len, micro_batch=micro_batch,
                                          candidates=candidates)  # fmt: skip
    except Exception as exc:  # a measurement must never stop the plan: the rule is always safe
        return _unmeasured(rule, f"measuring failed ({type(exc).__name__}: {exc})")
    store_decision(hardware, target.key, decision)
    return decision


def _unmeasured(rule: PrecisionDecision, why: str) -> PrecisionDecision:
    return PrecisionDecision(rule.precision, f"{rule.reason} Not measured: {why}.", "rule")


def _model_folder(target: ModelTarget):
    """The model's local folder when it is on disk (downloaded, or converted by `forge study`/`prepare`);
    the plan never downloads or converts a model just to time it."""
    from forgellm.models.resolve import is_materialized, materialize, resolve_model

    if target.folder is not None:
        return target.folder
    source = resolve_model(target.ref)
    return materialize(source) if is_materialized(source) else None
