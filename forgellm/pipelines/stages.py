"""The two stages `forge pipeline cpt-ift` writes into forge.yaml, with the post-CPT defaults and the mixture.

Post-CPT defaults for instruction tuning (IFT), conservative on purpose: the domain knowledge CPT put into
the weights is what the IFT stage must not wash out.
- Learning rate halved (`IFT_LR_FACTOR`): forgetting grows with the size of the update; Biderman et al. 2024,
  "LoRA Learns Less and Forgets Less" (arXiv:2405.09673) measure more forgetting at higher learning rates and
  more training, and Ibrahim et al. 2024 (arXiv:2403.08763) re-warm to a lower peak after CPT.
- At most `IFT_MAX_EPOCHS` (2) epochs: Luo et al. 2023, "An Empirical Study of Catastrophic Forgetting in LLMs
  During Continual Fine-tuning" (arXiv:2308.08747) see general ability fall as fine-tuning goes on; a step
  budget (CPU plans size max_steps) is kept as planned.
- Warm-up at least `IFT_MIN_WARMUP` (5%) of the steps: a re-warm from a low rate instead of a jump, as the
  re-warming study of Gupta et al. 2023 (arXiv:2308.04014) recommends for a model trained further.
General data mixed into IFT (`GENERAL_SHARE`, 25%): Ibrahim et al. 2024 needed 25% replay of general data to
keep the loss on it for a strong distribution shift (5% for a weak one); domain documents then domain chat
are a strong shift from a general instruct model, so the larger share is the default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.config.schema import ForgeConfig, StageSection

IFT_LR_FACTOR = 0.5
IFT_MAX_EPOCHS = 2.0
IFT_MIN_WARMUP = 0.05
GENERAL_SHARE = 0.25
CPT, IFT = "cpt", "ift"
SMALL_DATA = 200  # records: below, 10% each is held out for val and test, so each split has a few rows
SMALL_SPLIT = {"method": "random", "train": 0.8, "val": 0.1, "test": 0.1}


def cpt_stage(docs: Path) -> StageSection:
    return StageSection(
        name=CPT,
        training={"stage": "cpt"},
        data={"source": str(docs), "format": "text"},
        # A documents folder holds tens of files, not thousands: 10% each for val and test keeps a few whole
        # documents out of training, which the best checkpoint and the perplexity are judged on.
        preprocessing={"split": SMALL_SPLIT},
        rationale="Continued pre-training on the domain documents (each document ends with EOS; chunks of "
        "max_length overlap by preprocessing.cpt_overlap tokens); the best checkpoint is the one with the lowest "
        "loss on held-out documents (the val split), i.e. the lowest held-out perplexity.",
    )


def ift_training(planned: ForgeConfig) -> tuple[dict[str, Any], str]:
    """The IFT stage's training changes over the plan, and why (see the module docstring)."""
    t = planned.training
    changes: dict[str, Any] = {"stage": "sft", "learning_rate": float(f"{t.learning_rate * IFT_LR_FACTOR:.3g}")}
    why = [f"learning rate {t.learning_rate:g} -> {changes['learning_rate']:g} (halved after CPT)"]
    if t.max_steps is None and t.epochs is not None and t.epochs > IFT_MAX_EPOCHS:
        changes["epochs"] = IFT_MAX_EPOCHS
        why.append(f"epochs {t.epochs:g} -> {IFT_MAX_EPOCHS:g}")
    if t.warmup_ratio < IFT_MIN_WARMUP:
        changes["warmup_ratio"] = IFT_MIN_WARMUP
        why.append(f"warm-up {t.warmup_ratio:g} -> {IFT_MIN_WARMUP:g}")
    rationale = (
        "Post-CPT defaults, conservative so instruction tuning keeps what CPT learned: "
        + "; ".join(why)
        + " (Biderman et al. 2024 and Luo et al. 2023: forgetting grows with the learning rate and the "
        "training length; Gupta et al. 2023: re-warm a further-trained model)."
    )
    return changes, rationale


def ift_data(conversations: Path, detected: dict[str, Any], general: Path | None) -> tuple[dict[str, Any], str]:
    """The IFT stage's data: the conversations alone, or with a general source mixed in (data.sources:
    role domain + role general, ratios adding up to 1)."""
    single = {"source": str(conversations), **detected}
    if general is None:
        return single, ""
    mixture = mixture_sources(conversations, detected, general, GENERAL_SHARE)
    return {"sources": mixture}, (
        f" {1 - GENERAL_SHARE:.0%} domain conversations, {GENERAL_SHARE:.0%} general data ({general.name}): "
        "Ibrahim et al. 2024 kept the general loss with 25% replay under a strong shift."
    )


def mixture_sources(
    conversations: Path, detected: dict[str, Any], general: Path, share: float, role: str = "general"
) -> list[dict[str, Any]]:
    """`data.sources` (the mixture contract): the domain conversations and a general/replay source."""
    domain: dict[str, Any] = {"name": "conversations", "path": str(conversations), "role": "domain"}
    domain.update({"format": detected["format"]} if "format" in detected else {})
    domain.update({"recipe": detected["recipe"]} if detected.get("recipe") else {})
    return [
        {**domain, "ratio": round(1 - share, 4)},
        {"name": role, "path": str(general), "role": role, "format": "auto", "ratio": round(share, 4)},
    ]


def with_stages(planned: ForgeConfig, docs: Path, conversations: Path, detected: dict[str, Any],
                general: Path | None, small_conversations: bool = False) -> ForgeConfig:  # fmt: skip
    """forge.yaml as planned with the two stages written at its end (the sections above stay the plan's)."""
    training, why = ift_training(planned)
    data, data_why = ift_data(conversations, detected, general)
    ift = StageSection(name=IFT, after=CPT, training=training, data=data, rationale=why + data_why)
    if small_conversations:  # a few transcripts: 5% of 19 holds out nothing to choose or judge by
        ift.preprocessing = {"split": SMALL_SPLIT}
    updated = planned.model_copy(deep=True)
    updated.stages = [cpt_stage(docs), ift]
    return ForgeConfig.model_validate(updated.model_dump(mode="json"))


def with_ift_base(config: ForgeConfig, folder: Path) -> ForgeConfig:
    """The IFT stage set to train on the merged CPT model (its model.ref), written once CPT finished."""
    data = config.model_dump(mode="json")
    for stage in data["stages"]:
        if stage["name"] == IFT:
            stage["model"] = {**stage.get("model", {}), "ref": str(folder)}
    return ForgeConfig.model_validate(data)


def with_stage_sources(config: ForgeConfig, stage_name: str, sources: list[Any]) -> ForgeConfig:
    """The stage's data.sources replaced by `sources` as prepare settled them (detected formats and recipes
    written in): prepare records detections in forge.yaml's own data.sources, and a stage's mixture lives in
    its entry, where the next prepare (and train's check of the prepared data) reads it."""
    data = config.model_dump(mode="json")
    for stage in data["stages"]:
        if stage["name"] == stage_name:
            stage["data"]["sources"] = [s.model_dump(mode="json", exclude_defaults=True) for s in sources]
    return ForgeConfig.model_validate(data)
