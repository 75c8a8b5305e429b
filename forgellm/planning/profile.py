"""What `forge plan` learns from a sample of the data: its layout (via the advisor), size and token lengths.

Token lengths follow data/token_stats.py: another local tokenizer (the bundled SmolLM2's, with its chat
template, when that model is already converted: no conversion is started for a plan) or the word
estimate. ``DataProfile.token_counter`` says which ("local:..." or "estimate:words"); `forge prepare`
counts exactly with the chosen model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgellm.config.schema import AdvisorSection, DataSection, RecipeSection
from forgellm.errors import ErrorCode, ForgeError

SAMPLE_ROWS = 2000
LANGUAGE_SAMPLE = 300  # examples whose language is detected (the detector reads 400 characters each)
SIGNIFICANT_LANGUAGE = 0.1  # a language counts for planning above this share of examples
LITERAL_NEWLINES = 0.05  # share of texts with literal "\n" escapes above which the plan unescapes them


@dataclass
class DataProfile:
    path: Path
    kind: str
    rows: int  # estimated records in the whole input
    sampled: int
    format: str
    recipe: RecipeSection
    task_type: str
    recipe_source: str  # "advisor:<name>", "rules detection" or "forge.yaml"
    reasons: str
    token_counter: str
    tokens: dict[str, float]  # p50, p90, p99, max, mean
    rejected: int  # sampled records the recipe could not turn into examples
    languages: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def stage(self) -> str:
        return "cpt" if self.format == "text" else "sft"

    def to_request(self) -> dict[str, Any]:
        """What the advisor is told about the data (PlanRequest.data): statistics, never rows."""
        return {
            "rows": self.rows,
            "format": self.format,
            "task_type": self.task_type,
            "stage": self.stage,
            "tokens": self.tokens,
            "token_counter": self.token_counter,
            "languages": self.languages,
            "labels": self.labels,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.to_request(),
            "path": str(self.path),
            "kind": self.kind,
            "sampled": self.sampled,
            "recipe": self.recipe.model_dump(mode="json", exclude_defaults=True),
            "recipe_source": self.recipe_source,
            "reasons": self.reasons,
            "rejected": self.rejected,
            "warnings": list(self.warnings),
        }


def profile_data(
    path: Path,
    goal: str | None,
    advisor: Any,
    settings: AdvisorSection,
    existing: DataSection,
    progress: Callable[[str], None] = lambda _m: None,
    max_error_rate: float = 0.2,
) -> DataProfile:
    """Sample the data, settle its recipe (forge.yaml's, else the advisor's, else the detection's first
    reading that fits the file), and measure it. ``max_error_rate``: prepare's limit, which the recipe
    must keep on the sample (``data/prepare/fit.py``)."""
    from forgellm.data.read.readers import estimate_rows, open_dataset, sample_records

    progress(f"Reading a sample of {path.name}")
    dataset = open_dataset(path)
    records = sample_records(dataset, SAMPLE_ROWS)
    if not records:
        raise ForgeError(
            f"{path.name} has no readable records.",
            fix=f"Run `forge study {path}` to see what is wrong with it.",
            code=ErrorCode.DATA_EMPTY,
        )
    rows = estimate_rows(dataset) or len(records)
    profile = DataProfile(path, dataset.info.kind, rows, len(records), "text", RecipeSection(), "other", "", "",
                          "", {}, 0)  # fmt: skip
    if existing.format != "auto" and _same_file(existing.source, path):
        _keep_forge_yaml(profile, records, existing, max_error_rate, goal)
    else:
        _understand(profile, records, goal, advisor, settings, progress, max_error_rate)
    if profile.recipe_source != "forge.yaml":
        _unescape_if_needed(profile, records)
    _measure(profile, records, progress)
    return profile


def _same_file(source: str | None, path: Path) -> bool:
    return source is not None and Path(source).expanduser().resolve() == path.resolve()


def _columns(records: list[Any]) -> list[str]:
    names: dict[str, None] = {}
    for record in records[:200]:
        names.update(dict.fromkeys(record.fields))
    return list(names)


def _task_of(goal: str | None, fmt: str, recipe: RecipeSection, records: list[Any]) -> str:
    """The task type when no advisor said: the rules' choice (the goal's words, then the data), the same
    on every run for the same goal and data, so a re-plan asks the advisor the same question."""
    from forgellm.advisor.rules import choose_task

    columns = {k: v for k, v in recipe.columns.items() if isinstance(v, str)}
    return choose_task(goal, fmt, columns, [r.fields for r in records[:200]])


def _keep_forge_yaml(
    profile: DataProfile, records: list[Any], existing: DataSection, max_error_rate: float, goal: str | None
) -> None:
    from forgellm.data.prepare.fit import check_fit, recipe_lines

    fit = check_fit(records, existing.format, existing.recipe, max_error_rate)
    if not fit.ok:
        from forgellm.data.read.detection import Detection

        kept = Detection(existing.format, existing.recipe, 1.0, [])
        raise ForgeError(
            f"forge.yaml's data.format ({existing.format}) and data.recipe do not fit {profile.path.name}: "
            f"{fit.problem()}.",
            fix="Set data.format: auto in forge.yaml to let `forge plan` read the file again, or correct the "
            "recipe, e.g.:\n" + recipe_lines(kept, _columns(records)),
            code=ErrorCode.DATA_RECIPE_MISMATCH,
            data={"columns": _columns(records)},
        )
    profile.format, profile.recipe = existing.format, existing.recipe
    profile.recipe_source, profile.reasons = "forge.yaml", f"kept data.format and data.recipe from forge.yaml " \
        f"({fit.summary()})"
    profile.task_type = _task_of(goal, existing.format, existing.recipe, records)


def _understand(
    profile: DataProfile, records: list[Any], goal: str | None, advisor: Any, settings: AdvisorSection,
    progress: Callable[[str], None], max_error_rate: float,
) -> None:  # fmt: skip
    """The advisor reads the data (the rules' detection as its hint); its recipe is used when it fits the
    file, else the detection's best reading that fits; when none fits, plan stops and says what to fill in."""
    from forgellm.advisor.errors import AdvisorAuthError, AdvisorError
    from forgellm.advisor.recipes import recipe_from_proposal
    from forgellm.advisor.sampling import build_data_request
    from forgellm.data.prepare.fit import check_fit, first_fitting, no_recipe_error
    from forgellm.data.read.detection import Detection
    from forgellm.data.read.formats import detect_format

    detection = detect_format(records[:1000], kind=profile.kind)
    request = build_data_request(
        records, file_name=profile.path.name, kind=profile.kind, goal=goal, hint=detection.to_dict(),
        sample_rows=settings.sample_rows, redact_pii=settings.redact_pii,
    )  # fmt: skip
    progress(f"Asking the {advisor.name} advisor how to read the data")
    proposed, tried = None, []
    try:
        proposal = advisor.understand_data(request)
        fmt, recipe = recipe_from_proposal(proposal, _columns(records))
        proposed = Detection(fmt, recipe, 1.0, [proposal.reasons] if proposal.reasons else [])
        fit = check_fit(records, fmt, recipe, max_error_rate)
        if fit.ok:
            profile.format, profile.recipe = fmt, recipe
            profile.task_type, profile.reasons = proposal.task_type, f"{proposal.reasons} ({fit.summary()})"
            profile.recipe_source = f"advisor:{getattr(advisor, 'answered_by', advisor.name)}"
            profile.warnings.extend(detection.warnings if fmt == detection.format else [])
            return
        tried.append((proposed, fit))
        advisor.notes.append(
            f"Warning: the {getattr(advisor, 'answered_by', advisor.name)} advisor's data recipe ({proposed.shape}) "
            f"does not fit the file ({fit.problem()}); used the rules' first reading that fits instead."
        )
    except AdvisorAuthError:  # a rejected key is the user's to fix, never a silent fallback
        raise
    except AdvisorError as exc:
        # The advisor's reading was unusable (e.g. a column that does not exist): the rules' detection stands.
        advisor.notes.append(f"The advisor's data recipe was not used ({exc.message}); the rules' detection is.")
    reading, fit, tried_rules = first_fitting(detection, records, max_error_rate)
    if reading is None or fit is None:
        raise no_recipe_error(profile.path.name, records, tried + tried_rules, proposed)
    profile.format, profile.recipe = reading.format, reading.recipe
    profile.task_type = _task_of(goal, reading.format, reading.recipe, records)
    profile.recipe_source = "rules detection"
    profile.reasons = "; ".join(reading.reasons) + f" ({fit.summary()})"
    for other, other_fit in tried_rules[:-1]:
        profile.warnings.append(f"the reading {other.shape} does not fit the file ({other_fit.problem()})")
    profile.warnings.extend(reading.warnings)


def _unescape_if_needed(profile: DataProfile, records: list[Any]) -> None:
    """Turn on `unescape_newlines` when the text columns hold line breaks exported as literal "\\n"."""
    from forgellm.data.prepare.cleaning import literal_newline_share

    recipe = profile.recipe
    if "unescape_newlines" in recipe.cleaning:
        return
    texts = [r.fields.get(c) for r in records[:1000] for c in recipe.column_names()]
    share = literal_newline_share(texts)
    if share >= LITERAL_NEWLINES:
        steps = [*recipe.cleaning]
        steps.insert(1 if steps[:1] == ["unicode_nfc"] else 0, "unescape_newlines")
        profile.recipe = recipe.model_copy(update={"cleaning": steps})
        profile.reasons += f"; {share:.0%} of the texts hold literal \\n for line breaks: cleaning unescapes them"


def _measure(profile: DataProfile, records: list[Any], progress: Callable[[str], None]) -> None:
    """Token lengths, languages and labels of the examples the recipe makes from the sample."""
    from forgellm.data.prepare.recipe import to_example
    from forgellm.data.read.records import RecipeError
    from forgellm.data.study.checks import language_of
    from forgellm.data.study.stats import TokenCounter
    from forgellm.data.token_stats import token_counting

    if profile.format == "thread":  # conversations along the reply links, as prepare will make them
        from forgellm.data.read.threads import link_sample

        records = link_sample(records, profile.recipe)
    # No model is chosen yet: another local tokenizer (the bundled model's, when already converted) or the
    # word estimate (data/token_stats.py); reading one out of a GGUF is not worth its seconds here.
    counter = TokenCounter(token_counting(None, read_gguf=False, progress=progress), None)
    languages: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    made = 0
    for record in records:
        try:
            example = to_example(record, profile.format, profile.recipe)
        except RecipeError:
            profile.rejected += 1
            continue
        text = example.text if example.messages is None else "\n".join(m["content"] for m in example.messages)
        counter.add(record.line, text or "", example.messages)
        if made < LANGUAGE_SAMPLE and (language := language_of(text or "")):
            languages[language] += 1
        if example.label is not None:
            labels[str(example.label)] += 1
        made += 1
    counter.flush()
    if made == 0:
        raise ForgeError(
            f"None of the {len(records):,} sampled records of {profile.path.name} could be read as "
            f"{profile.format} with the recipe {profile.recipe.columns}.",
            fix="Run `forge study` on the file, then set data.format and data.recipe in forge.yaml.",
            code=ErrorCode.DATA_RECIPE_MISMATCH,
        )
    stats = counter.stats
    profile.token_counter = counter.name
    profile.tokens = {
        "p50": stats.quantile(0.5), "p90": stats.quantile(0.9), "p99": stats.quantile(0.99),
        "max": float(stats.max or 0), "mean": round(stats.total / stats.count, 1),
    }  # fmt: skip
    seen = sum(languages.values())
    profile.languages = [
        {"language": code, "share": round(n / seen, 3)}
        for code, n in languages.most_common(5)
        if n / seen >= SIGNIFICANT_LANGUAGE and code != "latin (undetermined)"
    ]
    if labels:
        profile.labels = {"column": profile.recipe.columns.get("label"), "distinct": len(labels)}
