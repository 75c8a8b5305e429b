"""Rules that span sections of forge.yaml, checked where a config is about to be used or written: by
`forge plan` before it writes forge.yaml and by `forge prepare` before it reads a row, so a plan never
writes a file prepare refuses and prepare refuses it before any work. (Rules within one section live in
the schema's validators.)"""

from __future__ import annotations

from forgellm.config.schema import ForgeConfig
from forgellm.errors import ErrorCode, ForgeError


def config_problems(config: ForgeConfig) -> list[str]:
    """Each broken cross-section rule as a sentence that names the keys and the fix."""
    problems = []
    prep, max_length = config.preprocessing, config.model.max_length
    if prep.cpt_overlap >= max_length:
        problems.append(
            f"preprocessing.cpt_overlap ({prep.cpt_overlap}) must be smaller than model.max_length ({max_length}); "
            f"lower it, e.g. to {max_length // 8}"
        )
    if config.data.format != "auto":  # with auto, prepare's detection fills the recipe's label and date
        columns = config.data.recipe.columns
        if prep.split.method == "stratified" and "label" not in columns:
            problems.append(
                f"preprocessing.split.method: stratified needs data.recipe.columns.label (e.g. label: "
                f"{prep.split.column}); or use method: random"
            )
        if prep.split.method == "temporal" and "date" not in columns:
            problems.append(
                f"preprocessing.split.method: temporal needs data.recipe.columns.date (e.g. date: "
                f"{prep.split.column}); or use method: random"
            )
        if prep.balance and "label" not in columns:
            problems.append("preprocessing.balance needs data.recipe.columns.label; or set balance: false")
    return problems


def check_consistent(config: ForgeConfig) -> None:
    problems = config_problems(config)
    if problems:
        raise ForgeError(
            "forge.yaml's settings contradict each other:",
            code=ErrorCode.CONFIG_INVALID,
            details=problems,
            fix="Edit forge.yaml as each line says (or run `forge plan` again), then run the command again.",
        )
