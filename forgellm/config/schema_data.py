"""The data part of forge.yaml's schema: formats, recipes, transcripts and the sources of a mixture
(re-exported by forgellm.config.schema, where callers import them from)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from forgellm.config.section import Section

RecipeField = Literal[
    "messages", "system", "user", "assistant", "input", "history", "text", "label", "date",
    "chosen", "rejected",  # preference pairs
    "id", "parent", "author", "role", "tree",  # reply threads linked by ids, or nested in a tree field
]  # fmt: skip
CleaningStepName = Literal["unicode_nfc", "strip_whitespace", "collapse_spaces", "strip_html", "unescape_newlines"]
DataFormat = Literal[
    "messages", "sharegpt", "alpaca", "prompt_completion", "qa", "text", "transcript",
    "classification", "preference", "thread",
]  # fmt: skip
Role = Literal["system", "user", "assistant"]


class TranscriptSection(BaseModel):
    """How speakers are recognised in markdown/plain-text chat transcripts."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    speakers: dict[Role, list[str]] = Field(
        default_factory=dict,
        description="Speaker labels per role, e.g. {user: ['**User**:', 'Human:'], assistant: ['## chatgpt']}; "
        "a line starting with one of them opens that speaker's turn.",
    )
    regex: bool = Field(default=False, description="Treat the speaker labels as regular expressions.")
    ignore_case: bool = Field(default=True, description="Match speaker labels regardless of case.")
    faq_headings: bool = Field(
        default=False,
        description="A markdown FAQ: each heading that ends in '?' is the user's question and the text under it "
        "(up to the next heading of the same or a higher level) the answer; no speaker labels needed.",
    )


class RecipeSection(BaseModel):
    """How raw records become conversations or documents. Filled by detection; editable by hand."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    columns: dict[RecipeField, str | list[str]] = Field(
        default_factory=dict,
        description="Which column/field holds what, e.g. {user: instruction, assistant: response, label: category}. "
        "`user` may list several columns (e.g. [subject, body]): they form one user turn, each under its name.",
    )
    role_map: dict[str, Literal["system", "user", "assistant", "drop"]] = Field(
        default_factory=dict,
        description="Speaker names in the data -> chat roles, e.g. {human: user, gpt: assistant, observation: user}.",
    )
    system_prompt: str | None = Field(default=None, description="System prompt added to every conversation.")
    cleaning: list[CleaningStepName] = Field(
        default_factory=lambda: ["unicode_nfc", "strip_whitespace"],
        description="Cleaning steps, in order. `unescape_newlines` turns literal \\n / \\t into real ones in "
        "texts that have no real line break (exports that escaped them); code in quotes or backticks is kept.",
    )
    transcript: TranscriptSection = Field(
        default_factory=TranscriptSection, description="Speaker patterns for transcript files."
    )
    instruction: str | None = Field(
        default=None,
        description="For `classification`: the request put before each text, e.g. 'Classify this ticket as "
        "one of: billing, refund. Answer with the label only.'",
    )

    @field_validator("columns")
    @classmethod
    def _only_user_lists(cls, columns: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key, value in columns.items():
            if isinstance(value, list):
                if key != "user":
                    raise ValueError(f"only `user` may list several columns; `{key}` names one column")
                if not value or not all(isinstance(v, str) and v for v in value):
                    raise ValueError("`user` lists no columns, or an empty column name")
                if len(set(value)) != len(value):
                    raise ValueError("`user` lists a column twice")
            elif not value:
                raise ValueError(f"`{key}` names an empty column")
        return columns

    def column_names(self) -> list[str]:
        """Every column the recipe reads, in order, lists flattened."""
        names: list[str] = []
        for value in self.columns.values():
            names.extend(value if isinstance(value, list) else [value])
        return names


HUB_PREFIX = "hf:"  # a data source on the Hugging Face hub: hf:owner/name


def source_name_of(path: str) -> str:
    """The default name of a mixture source: the file's or folder's stem (the hub id's name), lower-cased,
    other characters than [a-z0-9_-] made '-'."""
    stem = path.removeprefix(HUB_PREFIX).rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    stem = stem.split(".", 1)[0] if not path.startswith(HUB_PREFIX) else stem
    return re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-") or "source"


class DataSourceSection(BaseModel):
    """One source of a mixture (data.sources). How ratios and counts become numbers of examples is
    `data/prepare/mixture.py`'s rule (documented there and in the README)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(
        default="", pattern=r"^[a-z0-9_-]*$", description="Unique name, [a-z0-9_-]; default: the path's stem."
    )
    path: str = Field(min_length=1, description="A file, a folder, or a hub data set `hf:owner/name`.")
    role: Literal["domain", "general", "replay"] = Field(
        default="domain", description="domain (your data), general (keeps general skills), replay (earlier data)."
    )
    format: Literal["auto"] | DataFormat = Field(default="auto", description="As data.format; `auto` detects it.")
    recipe: RecipeSection = Field(default_factory=RecipeSection, description="As data.recipe, for this source.")
    ratio: float | None = Field(
        default=None, gt=0, le=1, description="Share of the training examples among the sources given by ratio."
    )
    count: int | None = Field(default=None, ge=1, description="Exactly this many training examples.")
    required: bool = Field(default=True, description="false: a missing source is skipped with a warning.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, value: object) -> object:
        if isinstance(value, dict) and not value.get("name") and isinstance(value.get("path"), str):
            value = {**value, "name": source_name_of(value["path"])}
        return value

    @model_validator(mode="after")
    def _ratio_or_count(self) -> DataSourceSection:
        if (self.ratio is None) == (self.count is None):
            both = "both" if self.ratio is not None else "neither"
            raise ValueError(
                f"source '{self.name}' has {both} `ratio` and `count`: give one (ratio: a share such as 0.3, "
                "or count: an exact number of examples)"
            )
        return self


class DataSection(Section):
    source: str | None = Field(default=None, description="Path of the training data (file or folder).")
    format: Literal["auto"] | DataFormat = Field(default="auto", description="Layout of the data; `auto` detects it.")
    recipe: RecipeSection = Field(default_factory=RecipeSection, description="Mapping from records to conversations.")
    sources: list[DataSourceSection] = Field(
        default_factory=list,
        description="A mixture of several sources (each with a role and a ratio or count); when set, "
        "`forge prepare` without FILE prepares it instead of `source`.",
    )
    mixture_seed: int | None = Field(
        default=None, description="Seed that picks each source's examples (null = preprocessing.seed)."
    )

    @model_validator(mode="after")
    def _sources_fit_together(self) -> DataSection:
        names = [s.name for s in self.sources]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sources share the name {', '.join(twice)}: give each a unique `name`")
        ratios = [s.ratio for s in self.sources if s.ratio is not None]
        if ratios and abs(sum(ratios) - 1.0) > 1e-6:
            scaled = [r / sum(ratios) for r in ratios]
            shares = ", ".join(
                f"{s.name}: {round(r, 4):g}" for s, r in zip([s for s in self.sources if s.ratio], scaled, strict=True)
            )
            raise ValueError(f"the sources' ratios add up to {sum(ratios):g}, not 1; scaled to 1 they are {shares}")
        return self
