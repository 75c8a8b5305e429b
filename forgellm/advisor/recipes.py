"""A data-understanding answer -> forge.yaml's ``data.format`` and ``data.recipe``, checked against the
columns that really exist: an advisor cannot map a column the data does not have."""

from __future__ import annotations

from forgellm.advisor.errors import AdvisorAnswerError
from forgellm.advisor.schemas import ColumnRole, RecipeProposal, SpeakerRole
from forgellm.config.schema import RecipeSection, TranscriptSection
from forgellm.data.prepare.recipe import DEFAULT_COLUMNS
from forgellm.data.prepare.recipe import REQUIRED_COLUMNS as REQUIRED_FIELDS

_FIX = "Run `forge plan` again, or set data.format and data.recipe.columns in forge.yaml by hand."
_TEXT_FIELDS = ("user", "assistant", "text", "input", "chosen", "rejected")  # fields whose columns must not coincide


def _reject(reason: str) -> AdvisorAnswerError:
    return AdvisorAnswerError(f"the proposed recipe {reason}", fix=_FIX)


def _column_map(proposal: RecipeProposal, columns: list[str]) -> dict[str, str | list[str]]:
    mapping: dict[str, str | list[str]] = {}
    users: list[str] = []
    for role in proposal.columns:
        if role.column not in columns:
            known = ", ".join(map(repr, columns)) or "none"
            raise _reject(f"maps {role.field!r} to column {role.column!r}, which the data does not have ({known})")
        if role.field == "user":  # several user columns form one user turn
            if role.column in users:
                raise _reject(f"maps column {role.column!r} to user twice")
            users.append(role.column)
            mapping["user"] = users if len(users) > 1 else role.column
            continue
        if role.field in mapping:
            raise _reject(f"maps {role.field!r} twice ({mapping[role.field]!r} and {role.column!r})")
        mapping[role.field] = role.column
    # Every required field must resolve: mapped explicitly, or by the format's default column name.
    for needed in REQUIRED_FIELDS[proposal.format]:
        if needed not in mapping:
            default = DEFAULT_COLUMNS[proposal.format][needed]
            if default not in columns:
                raise _reject(f"for format {proposal.format!r} does not say which column holds {needed!r}")
            mapping[needed] = default
    # Ranked answers: chosen and rejected may name one column (the first answer and the second).
    fields = [f for f in _TEXT_FIELDS if f != "rejected" or mapping.get("rejected") != mapping.get("chosen")]
    texts = [name for f in fields if f in mapping for name in _names(mapping[f])]
    if len(texts) != len(set(texts)):
        raise _reject("uses one column for two of user, assistant, input and text")
    return mapping


def _names(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def recipe_from_proposal(proposal: RecipeProposal, columns: list[str]) -> tuple[str, RecipeSection]:
    """(data.format, data.recipe) for ``proposal``; AdvisorAnswerError when it does not fit ``columns``."""
    mapping = _column_map(proposal, columns)
    role_map = {s.name: s.role for s in proposal.role_map}
    transcript = TranscriptSection()
    # Transcripts (and preference pairs written as transcripts) name speakers by their labels in the text
    # ('## chatgpt', 'Human:'): those open turns.
    if proposal.format == "transcript" and proposal.faq_headings:
        transcript = TranscriptSection(faq_headings=True)
    elif proposal.format == "transcript" or (proposal.format == "preference" and role_map):
        speakers: dict[str, list[str]] = {}
        for label, role in role_map.items():
            if role != "drop":
                speakers.setdefault(role, []).append(label)
        if not {"user", "assistant"} <= set(speakers):
            raise _reject("for a transcript needs the speaker labels of both the user and the assistant")
        transcript = TranscriptSection(speakers=speakers)
        role_map = {}
    recipe = RecipeSection(
        columns=mapping,
        role_map=role_map,
        system_prompt=proposal.system_prompt or None,
        instruction=proposal.instruction or None,
        cleaning=list(proposal.cleaning),
        transcript=transcript,
    )
    return proposal.format, recipe


def proposal_parts(recipe: RecipeSection) -> tuple[list[ColumnRole], list[SpeakerRole]]:
    """The reverse: a recipe's columns and speakers as answer parts (transcript labels become speakers)."""
    columns = [ColumnRole(field=k, column=name) for k, v in recipe.columns.items() for name in _names(v)]
    speakers = [SpeakerRole(name=k, role=v) for k, v in recipe.role_map.items()]
    for role, labels in recipe.transcript.speakers.items():
        speakers += [SpeakerRole(name=label, role=role) for label in labels]
    return columns, speakers
