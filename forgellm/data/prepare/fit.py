"""Does a recipe fit the file? The check every recipe passes before forge.yaml is written, whoever proposed
it (the rules' detection, an LLM advisor, the user's forge.yaml): the recipe is applied to a sample of the
real records exactly as `forge prepare` will apply it (``recipe.to_example``), so a plan can never write a
recipe that prepare then refuses.

A recipe fits when every column it names exists, at least one example comes out, the rows it cannot read
stay within ``preprocessing.max_error_rate`` (prepare's own limit; empty rows are dropped, not errors) and
at least ``MIN_KEPT`` of the non-blank sampled rows become examples. When no reading fits,
``no_recipe_error`` says so with the columns, two sample values of each, and the forge.yaml lines to fill in.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from forgellm.config.schema import RecipeSection
from forgellm.data.read.detection import Detection
from forgellm.data.read.records import EmptyTextError, RecipeError, Record, reason_kind
from forgellm.errors import ErrorCode, ForgeError

MIN_KEPT = 0.1  # a reading that turns fewer of the sampled rows into examples is not this file's layout
FIT_SAMPLE = 1000  # records a recipe is tried on


@dataclass
class RecipeFit:
    """What applying a recipe to the sample gave."""

    format: str
    recipe: RecipeSection
    rows: int = 0  # non-blank sampled records
    made: int = 0  # examples made
    empty: int = 0  # rows rejected for an empty role (dropped by prepare, not errors)
    failed: int = 0  # rows that do not fit (count toward preprocessing.max_error_rate)
    missing: list[str] = field(default_factory=list)  # columns the recipe names that the data does not have
    reasons: Counter = field(default_factory=Counter)  # reject reasons by kind
    max_error_rate: float = 0.2

    @property
    def kept(self) -> float:
        return self.made / self.rows if self.rows else 0.0

    @property
    def ok(self) -> bool:
        return (not self.missing and self.made > 0 and self.failed <= self.max_error_rate * self.rows
                and self.kept >= MIN_KEPT)  # fmt: skip

    def problem(self) -> str:
        """Why it does not fit, in one sentence (empty when it fits)."""
        if self.missing:
            return "no column " + ", ".join(map(repr, self.missing)) + " in the data"
        if self.ok:
            return ""
        top = "; ".join(f"{reason} ({n})" for reason, n in self.reasons.most_common(2))
        return f"{self.rows - self.made} of {self.rows} sampled rows make no example ({top})"

    def summary(self) -> str:
        if self.format == "thread":  # rows were linked first: what is counted are conversations
            return f"{self.made} of {self.rows} conversations linked in the sample become examples ({self.kept:.0%})"
        return f"{self.made} of {self.rows} sampled rows become examples ({self.kept:.0%})"


def check_fit(records: list[Record], fmt: str, recipe: RecipeSection, max_error_rate: float = 0.2) -> RecipeFit:
    """Apply ``recipe`` to the first ``FIT_SAMPLE`` non-blank records as prepare would."""
    from forgellm.data.prepare.recipe import DEFAULT_COLUMNS, REQUIRED_COLUMNS, to_example

    fit = RecipeFit(fmt, recipe, max_error_rate=max_error_rate)
    rows = [r for r in records if not _blank(r)][:FIT_SAMPLE]
    fit.rows = len(rows)
    present = {key for r in rows for key in r.fields}
    named = recipe.column_names() + [
        DEFAULT_COLUMNS[fmt][f] for f in REQUIRED_COLUMNS.get(fmt, ()) if f not in recipe.columns
    ]
    if fmt == "thread" and recipe.columns.get("tree"):  # the other keys are inside each tree's messages
        named = [str(recipe.columns["tree"])]
    fit.missing = [n for n in dict.fromkeys(named) if n not in present]
    if fit.missing or not rows:
        return fit
    if fmt == "thread":
        from forgellm.data.read.threads import link_sample

        rows = link_sample(rows, recipe)  # conversations along the reply links: those are what is counted
        fit.rows = len(rows)
    for record in rows:
        try:
            to_example(record, fmt, recipe)
        except EmptyTextError as exc:
            fit.empty += 1
            fit.reasons[reason_kind(str(exc))] += 1
        except RecipeError as exc:
            fit.failed += 1
            fit.reasons[reason_kind(str(exc))] += 1
        except ForgeError as exc:  # a recipe that cannot apply at all (e.g. a bad transcript pattern)
            fit.failed = fit.rows
            fit.reasons[exc.message[:160]] += fit.rows
            break
        else:
            fit.made += 1
    return fit


def _blank(record: Record) -> bool:
    return all(v is None or (isinstance(v, str) and not v.strip()) for v in record.fields.values())


def first_fitting(
    detection: Detection, records: list[Record], max_error_rate: float = 0.2
) -> tuple[Detection | None, RecipeFit | None, list[tuple[Detection, RecipeFit]]]:
    """The best reading (the detection, then its alternatives in order) whose recipe fits the records,
    its fit, and every reading tried with its fit."""
    tried = []
    for reading in detection.readings():
        if not reading.recipe.columns and reading.format not in ("text", "transcript"):
            continue  # "no known layout": nothing to try
        fit = check_fit(records, reading.format, reading.recipe, max_error_rate)
        tried.append((reading, fit))
        if fit.ok:
            return reading, fit, tried
    return None, None, tried


def no_recipe_error(file_name: str, records: list[Record], tried: list[tuple[Detection, RecipeFit]],
                    proposed: Detection | None = None) -> ForgeError:  # fmt: skip
    """The refusal when no reading fits: what was tried, the columns with samples, the lines to fill in."""
    columns = _column_samples(records)
    why = "; ".join(f"{d.shape}: {f.problem()}" for d, f in tried[:4]) or "no column pairs with an answer, a " \
        "label or speaker labels"
    guess = proposed or (tried[0][0] if tried else None)
    yaml = recipe_lines(guess, list(columns))
    details = [f"{name}: {samples}" for name, samples in columns.items()]
    return ForgeError(
        f"No recipe fits {file_name}: {why}. Nothing was written. The columns, with two sample values each:",
        code=ErrorCode.DATA_NO_RECIPE,
        details=details,
        fix="Say which column holds what: put these lines in forge.yaml (replace each <...> with a column name "
        "above), then run `forge plan` or `forge ignite` again:\n" + yaml,
        data={"columns": list(columns), "yaml": yaml, "tried": [d.shape for d, _ in tried]},
    )


def _column_samples(records: list[Record]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    blank: Counter = Counter()
    for record in records[:FIT_SAMPLE]:
        for key, value in record.fields.items():
            values = out.setdefault(str(key), [])
            text = "" if value is None else str(value).strip()
            if not text:
                blank[str(key)] += 1
            elif len(values) < 2:
                values.append(_short(text))
    shown = {}
    for key, values in out.items():
        if not values:
            shown[key] = f"(empty in all {blank[key]} sampled rows)"
        else:
            shown[key] = " | ".join(values)
    return shown


def _short(text: str, limit: int = 70) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def recipe_lines(guess: Detection | None, columns: list[str]) -> str:
    """forge.yaml's data lines for a reading, with <...> where a column is still to be chosen."""
    fmt = guess.format if guess is not None and guess.format != "text" else "qa"
    known: dict[str, Any] = dict(guess.recipe.columns) if guess is not None and guess.format == fmt else {}
    needed = {"classification": ("user", "label"), "transcript": ("text",), "preference": ("chosen", "rejected"),
              "thread": ("id", "parent", "text"), "messages": ("messages",), "sharegpt": ("messages",)
              }.get(fmt, ("user", "assistant"))  # fmt: skip
    hints = {"user": "the column with the user's message", "assistant": "the column with the answer",
             "label": "the column with the category", "text": "the column with the text",
             "chosen": "the preferred answer", "rejected": "the worse answer", "id": "the message id",
             "parent": "the id of the message it replies to",
             "messages": "the column with the list of turns"}  # fmt: skip
    lines = ["data:", f"  format: {fmt}", "  recipe:", "    columns:"]
    for key in needed:
        value = known.get(key)
        if isinstance(value, list):
            value = "[" + ", ".join(value) + "]"
        ok = value is not None and all(v in columns for v in (known[key] if isinstance(known[key], list)
                                                             else [known[key]]))  # fmt: skip
        lines.append(f"      {key}: {value if ok else '<' + hints[key] + '>'}")
    return "\n".join(lines)


def settle(detection: Detection, records: list[Record], max_error_rate: float = 0.2) -> Detection:
    """The detection re-ordered so that its first reading is the best one that fits the records (with
    how many rows it turns into examples); the others stay as alternatives. When none fits, the detection
    as it was, warning that no reading fits (study reports it; plan refuses with ``no_recipe_error``)."""
    from dataclasses import replace

    reading, fit, tried = first_fitting(detection, records, max_error_rate)
    if reading is None or fit is None:
        why = "; ".join(f"{d.shape}: {f.problem()}" for d, f in tried[:3]) or "no reading recognised the columns"
        return replace(detection, warnings=[*detection.warnings, f"no reading fits the file ({why})"], fits=False)
    others = [d for d in detection.readings() if d is not reading and d.shape != reading.shape]
    unfit = [f"{d.shape} does not fit ({f.problem()})" for d, f in tried if d is not reading]
    return replace(reading, reasons=[*reading.reasons, fit.summary()], warnings=[*reading.warnings, *unfit],
                   alternatives=others, fits=True)  # fmt: skip
