"""An advisor backed by an LLM behind a ``JsonClient``: prompts out, JSON text in, and every answer
parsed, schema-validated and checked by rules before anyone uses it. Only checked answers are cached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from forgellm.advisor import prompts
from forgellm.advisor.cache import AdvisorCache, request_key
from forgellm.advisor.errors import AdvisorAnswerError
from forgellm.advisor.recipes import recipe_from_proposal
from forgellm.advisor.sampling import describe_sent
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
from forgellm.errors import ForgeError

if TYPE_CHECKING:
    from forgellm.advisor.protocol import JsonClient

AnswerT = TypeVar("AnswerT", bound=BaseModel)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_FIX = "Run the command again, or use the offline advisor: --advisor rules (advisor.provider: rules)."


def parse_answer(text: str, schema: type[AnswerT]) -> AnswerT:
    """``text`` as a validated ``schema``; AdvisorAnswerError with a short reason for anything else."""
    stripped = (text or "").strip()
    if (fenced := _FENCE.match(stripped)) is not None:
        stripped = fenced.group(1).strip()
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        what = "empty" if not stripped else f"not valid JSON ({exc.msg} at position {exc.pos})"
        raise AdvisorAnswerError(what, fix=_FIX) from None
    if not isinstance(data, dict):
        raise AdvisorAnswerError(f"a JSON {type(data).__name__}, not an object", fix=_FIX)
    return validate_answer(data, schema)


def validate_answer(data: dict[str, Any], schema: type[AnswerT]) -> AnswerT:
    from pydantic import ValidationError

    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        # Locations and messages only: the offending values may be long or hostile.
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in exc.errors()[:3])
        more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        raise AdvisorAnswerError(f"does not match the {schema.__name__} schema: {problems}{more}", fix=_FIX) from None


def _check_fix(request: DiagnosisRequest) -> Callable[[Fix], None]:
    def check(fix: Fix) -> None:
        from forgellm.advisor.fixes import apply_fix
        from forgellm.config.schema import ForgeConfig

        try:
            apply_fix(ForgeConfig.model_validate(request.config), fix)
        except ForgeError as exc:
            raise AdvisorAnswerError(f"proposes an invalid change: {exc.message}", fix=_FIX) from None

    return check


def _check_script(script: ScriptProposal) -> None:
    if not script.code.strip():
        raise AdvisorAnswerError("an empty script", fix=_FIX)
    try:
        compile(script.code, "<advisor script>", "exec")  # parses only; nothing runs here
    except (SyntaxError, ValueError) as exc:
        raise AdvisorAnswerError(f"a script that is not valid Python ({exc.__class__.__name__})", fix=_FIX) from None


def _without_free_memory(value: Any) -> Any:
    """The hardware summary without the amounts of memory free right now (RAM available, GPU memory free)."""
    if isinstance(value, dict):
        return {k: _without_free_memory(v) for k, v in value.items()
                if not (k.endswith(("_available_bytes", "_free_bytes")))}  # fmt: skip
    return [_without_free_memory(v) for v in value] if isinstance(value, list) else value


class LLMAdvisor:
    """Implements the Advisor protocol through ``client``; answers are cached in ``cache`` when given."""

    def __init__(self, client: JsonClient, cache: AdvisorCache | None = None, *, name: str | None = None) -> None:
        self.client = client
        self.cache = cache
        self.name = name or client.provider
        self.notes: list[str] = []

    def understand_data(self, request: DataRequest) -> RecipeProposal:
        columns = [str(c.get("name")) for c in request.columns]
        system, prompt = prompts.data_prompt(request)
        sent = describe_sent(request, self.client.provider, self.client.model)
        return self._ask("data", system, prompt, RecipeProposal, lambda p: recipe_from_proposal(p, columns), sent=sent)

    def propose_plan(self, request: PlanRequest) -> PlanProposal:
        system, prompt = prompts.plan_prompt(request)
        sent = f"the goal, the hardware summary, {len(request.candidates)} candidate models"
        if request.data is not None:
            sent += " and the data summary"
        # Free memory moves from one run to the next; a re-plan of the same project is answered from the
        # cache all the same. That is safe: planning checks every answer, cached or not, against the memory
        # free now (planning/guards.py), and a change in what fits changes the candidates' verdicts, so the key.
        steady = replace(request, hardware=_without_free_memory(request.hardware))
        key_prompt = prompts.plan_prompt(steady)[1]
        return self._ask("plan", system, prompt, PlanProposal, None, sent=self._sent(sent), key_prompt=key_prompt)

    def diagnose(self, request: DiagnosisRequest) -> Fix | None:
        system, prompt = prompts.diagnosis_prompt(request)
        sent = self._sent("the error, the end of the log and forge.yaml")
        return self._ask("diagnosis", system, prompt, Fix, _check_fix(request), sent=sent)

    def write_script(self, request: ScriptRequest) -> ScriptProposal:
        system, prompt = prompts.script_prompt(request)
        sent = self._sent(f"the instructions and {len(request.rows)} records of {request.input_name}")
        return self._ask("script", system, prompt, ScriptProposal, _check_script, sent=sent)

    def write_examples(self, request: ExamplesRequest) -> ExamplesProposal:
        """Not cached: each batch is asked with other seeds, and a repeat should bring new examples."""
        system, prompt = prompts.examples_prompt(request)
        note = self._sent(f"{len(request.seeds)} records of the data per request, as seeds for new examples")
        if note not in self.notes:
            self.notes.append(note)
        text = self.client.generate_json(system=system, prompt=prompt, schema=request.answer_schema())
        try:
            return parse_answer(text, ExamplesProposal)
        except AdvisorAnswerError as exc:
            raise AdvisorAnswerError(f"{self.name}'s examples were unusable: {exc.message}", fix=exc.fix) from None

    def _sent(self, what: str) -> str:
        return f"Sent to {self.client.model} ({self.client.provider}): {what}."

    def _ask(
        self,
        task: str,
        system: str,
        prompt: str,
        schema: type[AnswerT],
        check: Callable[[AnswerT], Any] | None,
        *,
        sent: str,
        key_prompt: str | None = None,
    ) -> AnswerT:
        """``key_prompt``: the prompt the cache key is made of, when it should not follow every byte of the
        prompt sent (see propose_plan)."""
        client = self.client
        key = request_key(
            provider=client.provider, model=client.model, task=task, system=system, prompt=key_prompt or prompt,
            schema=schema,
        )
        cached = self._from_cache(key, schema, check)
        if cached is not None:
            self.notes.append(
                f"{client.model} ({client.provider}): the {task} question was answered from cache; nothing was sent."
            )
            return cached
        self.notes.append(sent)
        try:
            answer = parse_answer(client.generate_json(system=system, prompt=prompt, schema=schema), schema)
            if check is not None:
                check(answer)
        except AdvisorAnswerError as exc:
            raise AdvisorAnswerError(f"{self.name}'s {task} answer was unusable: {exc.message}", fix=exc.fix) from None
        if self.cache is not None:
            self.cache.put(key, answer.model_dump(mode="json"), provider=client.provider, model=client.model, task=task)
        return answer

    def _from_cache(self, key: str, schema: type[AnswerT], check: Callable[[AnswerT], Any] | None) -> AnswerT | None:
        if self.cache is None or (data := self.cache.get(key)) is None:
            return None
        try:
            answer = validate_answer(data, schema)
            if check is not None:
                check(answer)
        except AdvisorAnswerError:
            return None  # an entry that no longer passes the checks is asked again
        return answer
