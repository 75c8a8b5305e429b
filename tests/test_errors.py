"""Error codes: stable, unique, each one raised somewhere, and every ForgeError carries one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import forgellm
from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorUnavailable
from forgellm.errors import ErrorCode, ForgeError

PACKAGE = Path(forgellm.__file__).parent


def _sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in PACKAGE.rglob("*.py")}


def test_every_code_is_unique_and_kebab_case():
    # A repeated value would silently make the second name an alias of the first.
    assert len(ErrorCode.__members__) == len({code.value for code in ErrorCode})
    for code in ErrorCode:
        assert re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", code.value), code


def test_every_code_is_used_somewhere():
    sources = _sources().items()
    text = "\n".join(source for path, source in sources if path.name != "errors.py" or "advisor" in path.parts)
    unused = [code.name for code in ErrorCode if not re.search(rf"\bErrorCode\.{code.name}\b", text)]
    assert unused == []


def test_every_forge_error_raised_in_forge_names_its_code():
    missing = []
    for path, source in _sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ForgeError":
                if not any(keyword.arg == "code" for keyword in node.keywords):
                    missing.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert missing == []


def test_the_code_is_required():
    with pytest.raises(TypeError):
        ForgeError("no code")  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        ForgeError("an unknown code", code="no-such-code")  # type: ignore[arg-type]


def test_fields_travel_as_data():
    error = ForgeError(
        "The 'x' template is unknown.", code=ErrorCode.TEMPLATE_UNKNOWN, fix="Use chatml.", data={"template": "x"}
    )
    assert error.to_dict() == {
        "code": "template-unknown",
        "message": "The 'x' template is unknown.",
        "fix": "Use chatml.",
        "details": [],
        "data": {"template": "x"},
    }
    assert str(error) == "The 'x' template is unknown.\nFix: Use chatml."  # the text for people, unchanged


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (AdvisorUnavailable, ErrorCode.ADVISOR_UNAVAILABLE),
        (AdvisorAuthError, ErrorCode.ADVISOR_AUTH),
        (AdvisorAnswerError, ErrorCode.ADVISOR_ANSWER_INVALID),
    ],
)
def test_advisor_errors_have_the_code_of_their_class(cls, code):
    assert cls("why", fix="what to do").code == code
    assert type(cls("x"))("masked").code == code  # re-raised with a masked message, as select.py does


def test_the_worker_error_event_carries_code_fix_and_data_as_fields():
    from forgellm.training.protocol import error_event, parse_event

    error = ForgeError(
        "No prepared data.", code=ErrorCode.PREPARED_DATA_MISSING, fix="Run `forge prepare FILE`.", data={"n": 1}
    )
    event = parse_event(error_event("config", error, step=3))
    assert event == {
        "event": "error",
        "kind": "config",
        "code": "prepared-data-missing",
        "message": "No prepared data.",  # the message alone: no "Fix:" to split off
        "fix": "Run `forge prepare FILE`.",
        "details": [],
        "data": {"n": 1},
        "step": 3,
        "traceback": None,
    }
