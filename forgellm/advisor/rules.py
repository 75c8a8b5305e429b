"""The offline advisor: format detection, task type from the goal's words and the data, the rules
planner and the known-failure diagnosis. Deterministic: the same input gives the same answer."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from forgellm.advisor.schemas import (
    DataRequest,
    DiagnosisRequest,
    ExamplesProposal,
    ExamplesRequest,
    Fix,
    PlanProposal,
    PlanRequest,
    RecipeProposal,
    ScriptProposal,
    ScriptRequest,
)
from forgellm.config.schema import RecipeSection
from forgellm.data.read.detection import Detection
from forgellm.errors import ErrorCode, ForgeError

# Word stems per task, in a few languages; the first task whose stem starts a word of the goal wins,
# so the specific tasks come before the broad ones ("classify support tickets" is classification).
# fmt: off
_GOAL_STEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("classification", ("classif", "categori", "kategori", "clasific", "classer", "sentiment", "intent",
                        "triage", "routing", "etiquet", "label", "分类")),
    ("summarization", ("summar", "zusammenfass", "resum", "résum", "riassun", "riassum", "摘要", "要約")),
    ("extraction", ("extract", "extrahier", "extrai", "extrae", "estrarre", "estrai", "提取", "抽出")),
    ("code", ("coding", "source code", "write code", "code gen", "code comp", "code review", "programm",
              "python", "javascript", "typescript", "sql", "código", "codigo", "programación", "programacion",
              "代码", "コード")),
    ("chat", ("support", "customer", "chat", "assistant", "bot", "helpdesk", "help desk", "service desk",
              "kundendienst", "kunden", "soporte", "atención", "atencion", "cliente", "client", "assistance",
              "assistenza", "suporte", "atendimento", "conversa", "gespräch", "客服", "聊天", "サポート")),
    ("qa", ("question", "answer", "faq", "frage", "antwort", "pregunta", "respuesta", "réponse", "reponse",
            "domand", "pergunta", "问答", "質問")),
    ("instruction", ("instruction", "anweisung", "instrucc", "istruzion", "指令")),
)
# fmt: on
FORMAT_TASKS = {
    "messages": "chat",
    "sharegpt": "chat",
    "transcript": "chat",
    "alpaca": "instruction",
    "prompt_completion": "instruction",
    "qa": "qa",
    "text": "cpt",
    "classification": "classification",
    "preference": "chat",
    "thread": "chat",
}
_CODE = re.compile(
    r"```|^\s*(?:def |class |import |from \w+ import|#include|public static|function\b|const \w+ =|SELECT\b)"
    r"|;\s*$|=>|\{\s*$",
    re.MULTILINE,
)
SHORT_ANSWER_CHARS = 40  # a label, not a sentence


def _stem_pattern(stem: str) -> re.Pattern[str]:
    # A stem must start a word; scripts without spaces (Chinese, Japanese) match anywhere.
    # Short stems must be whole words: "bot" is not "both".
    end = r"(?![a-zà-ÿ])" if len(stem) <= 3 and stem.isascii() else ""
    return re.compile(r"(?<![a-zà-ÿ])" + re.escape(stem) + end, re.IGNORECASE)


_GOAL_PATTERNS = [(task, [_stem_pattern(s) for s in stems]) for task, stems in _GOAL_STEMS]


def task_from_goal(goal: str | None) -> str | None:
    """The task a goal's words name, or None when they name none."""
    if not goal:
        return None
    return next((task for task, patterns in _GOAL_PATTERNS if any(p.search(goal) for p in patterns)), None)


def _answers(rows: list[dict[str, Any]], columns: dict[str, str]) -> list[str]:
    column = columns.get("assistant")
    values = [row.get(column) for row in rows] if column else []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def task_from_data(fmt: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """The task the data shows: short repeated answers are labels, code-looking answers are code."""
    if fmt in ("text", "classification"):
        return FORMAT_TASKS[fmt]
    answers = _answers(rows, columns)
    if answers:
        short = all(len(a) <= SHORT_ANSWER_CHARS and "\n" not in a for a in answers)
        repeated = len(set(answers)) <= max(1, len(answers) // 2)
        if short and ("label" in columns or repeated):
            return "classification"
        if sum(1 for a in answers if _CODE.search(a)) * 2 > len(answers):
            return "code"
    return FORMAT_TASKS.get(fmt, "other")


def choose_task(goal: str | None, fmt: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> str:
    """Raw text trains by continued pre-training whatever the goal; else the goal's words, then the data."""
    if fmt == "text":
        return "cpt"
    return task_from_goal(goal) or task_from_data(fmt, columns, rows)


def choose_reading(detection: Detection, goal: str | None, columns: list[str] = ()) -> Detection:  # type: ignore[assignment]
    """The detection's best reading, unless the goal names a task another reading serves: a goal that asks
    to classify takes a classification reading (a label column next to text) when there is one, the one whose
    label column the goal names first. Columns the goal names that the reading leaves out (metadata such as
    a product or a priority) join the user's turn."""
    chosen = detection
    if task_from_goal(goal) == "classification":
        readings = [d for d in detection.readings() if d.format == "classification"]
        named = [d for d in readings if _named_in(goal, str(d.recipe.columns.get("label")))]
        found = (named or readings or [None])[0]
        if found is not None and found.shape != detection.shape:
            why = "the goal asks to classify: " + (found.reasons[0] if found.reasons else "")
            chosen = replace(found, reasons=[why, *found.reasons[1:]], alternatives=[])
    return _with_goal_columns(chosen, goal, columns)


def _named_in(goal: str | None, column: str) -> bool:
    """Whether the goal names the column: all the words of its name appear in the goal."""
    from forgellm.data.read.columns import normalise

    words = normalise(column).split()
    goal_words = set(re.findall(r"\w+", (goal or "").lower()))
    return bool(words) and all(w in goal_words or f"{w}s" in goal_words for w in words)


def _with_goal_columns(reading: Detection, goal: str | None, columns: list[str]) -> Detection:
    if not goal or reading.format not in ("qa", "classification", "alpaca", "prompt_completion"):
        return reading
    used = set(reading.recipe.column_names())
    wanted = [c for c in columns if c not in used and _named_in(goal, c)]
    if not wanted:
        return reading
    user = reading.recipe.columns.get("user")
    users = [*(user if isinstance(user, list) else [user] if user else []), *wanted]
    recipe = reading.recipe.model_copy(update={"columns": {**reading.recipe.columns, "user": users}})
    why = f"the goal names {', '.join(map(repr, wanted))}: added to the user's turn under their names"
    return replace(reading, recipe=RecipeSection.model_validate(recipe.model_dump()), reasons=[*reading.reasons, why])


def _detection(request: DataRequest) -> Detection:
    if request.hint:
        return Detection.from_dict(request.hint)
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.records import Record

    records = [Record(line=i + 1, fields=dict(row)) for i, row in enumerate(request.rows)]
    return detect_format(records, kind=request.kind)


class RulesAdvisor:
    """Offline and deterministic; the default backend and the fallback of the LLM backends."""

    name = "rules"

    def __init__(self) -> None:
        self.notes: list[str] = []

    def understand_data(self, request: DataRequest) -> RecipeProposal:
        from forgellm.advisor.recipes import proposal_parts

        names = [str(c.get("name")) for c in request.columns if isinstance(c, dict) and c.get("name")]
        detection = choose_reading(_detection(request), request.goal, names)
        recipe, fmt = detection.recipe, detection.format
        columns, speakers = proposal_parts(recipe)
        task = choose_task(request.goal, fmt, dict(recipe.columns), request.rows)
        reasons = "; ".join([*detection.reasons, f"task type {task}"])
        return RecipeProposal(
            format=fmt,
            task_type=task,  # type: ignore[arg-type]
            columns=columns,
            role_map=speakers,
            system_prompt=recipe.system_prompt,
            instruction=recipe.instruction,
            faq_headings=recipe.transcript.faq_headings,
            cleaning=list(recipe.cleaning),
            reasons=reasons[:2000],
        )

    def propose_plan(self, request: PlanRequest) -> PlanProposal:
        from forgellm.advisor.rules_plan import propose_plan

        return propose_plan(request)

    def diagnose(self, request: DiagnosisRequest) -> Fix | None:
        from pydantic import ValidationError

        from forgellm.advisor.diagnosis import diagnose_failure
        from forgellm.config.schema import ForgeConfig

        try:
            config = ForgeConfig.model_validate(request.config)
        except ValidationError as exc:
            raise ForgeError(
                f"Cannot diagnose the failure: the configuration is invalid ({exc.error_count()} problems).",
                fix="Check forge.yaml with `forge status`.",
                code=ErrorCode.CONFIG_INVALID,
            ) from None
        if request.code is not None:  # a ForgeError: its code says what it is; only a wrapped cause is text
            error = str(request.data.get("cause") or "")
            return diagnose_failure(
                request.stage, error, request.log_tail, config, code=request.code, data=request.data
            )
        return diagnose_failure(request.stage, request.error, request.log_tail, config)

    def write_script(self, request: ScriptRequest) -> ScriptProposal:
        raise ForgeError(
            "The offline rules advisor cannot write scripts.",
            fix="Set advisor.provider to gemini or openai in forge.yaml (`forge init --advisor gemini`), "
            "then store a key with `forge login --provider gemini`.",
            code=ErrorCode.ADVISOR_CANNOT,
        )

    def write_examples(self, request: ExamplesRequest) -> ExamplesProposal:
        raise ForgeError(
            "The offline rules advisor cannot write new examples: synthetic expansion needs an LLM advisor.",
            fix="Configure one in forge.yaml: advisor.provider: openai with advisor.base_url (any OpenAI-compatible "
            "server, e.g. a local llama.cpp or Ollama at http://127.0.0.1:11434/v1) and advisor.model, or "
            "advisor.provider: gemini and `forge login --provider gemini`; or pass --advisor openai|gemini.",
            code=ErrorCode.ADVISOR_CANNOT,
        )
