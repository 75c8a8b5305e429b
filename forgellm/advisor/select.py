"""Which advisor answers: forge.yaml's ``advisor`` section (or ``--advisor``) -> an Advisor.

An LLM backend is always wrapped in ``FallbackAdvisor``: an unusable answer or an unreachable server
never breaks a command; the offline rules answer instead, with a visible note. A rejected key stops
with a clear message unless ``advisor.fallback_on_auth_error`` allows going on offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from forgellm.advisor.errors import AdvisorAnswerError, AdvisorAuthError, AdvisorError, AdvisorUnavailable
from forgellm.advisor.rules import RulesAdvisor
from forgellm.errors import ErrorCode, ForgeError

if TYPE_CHECKING:
    from forgellm.advisor.protocol import Advisor, JsonClient
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
    from forgellm.config.schema import AdvisorSection

_MASK = "[API key]"


class FallbackAdvisor:
    """``primary`` (an LLM) first; the offline ``fallback`` when its answer is unusable or it is down."""

    def __init__(
        self,
        primary: Advisor,
        fallback: Advisor,
        *,
        allow_auth_fallback: bool = False,
        secret: str | None = None,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.allow_auth_fallback = allow_auth_fallback
        self._secret = secret  # only to mask it, should a client ever echo it in a message
        self.name = primary.name
        self.answered_by = primary.name  # who gave the last answer: the rules after a fall back
        # One list for everyone, so the notes read in the order things happened.
        self.notes: list[str] = primary.notes
        fallback.notes = self.notes

    def understand_data(self, request: DataRequest) -> RecipeProposal:
        self.answered_by = self.primary.name
        try:
            return self.primary.understand_data(request)
        except AdvisorError as exc:
            self._fall_back(exc)
        self.answered_by = self.fallback.name
        return self.fallback.understand_data(request)

    def propose_plan(self, request: PlanRequest) -> PlanProposal:
        try:
            return self.primary.propose_plan(request)
        except AdvisorError as exc:
            self._fall_back(exc)
        return self.fallback.propose_plan(request)

    def diagnose(self, request: DiagnosisRequest) -> Fix | None:
        # Known failures get the rules' deterministic fix without a network round trip.
        known = self.fallback.diagnose(request)
        if known is not None:
            return known
        try:
            return self.primary.diagnose(request)
        except AdvisorError as exc:
            self._fall_back(exc)
        return None

    def write_script(self, request: ScriptRequest) -> ScriptProposal:
        try:
            return self.primary.write_script(request)
        except AdvisorAuthError as exc:
            raise self._auth_error(exc) from None
        except AdvisorError as exc:
            # The rules cannot write scripts: there is nothing to fall back to.
            masked_fix = self._masked(exc.fix or "") or None
            raise type(exc)(self._masked(exc.message), fix=masked_fix, data=exc.data) from None

    def write_examples(self, request: ExamplesRequest) -> ExamplesProposal:
        try:
            return self.primary.write_examples(request)
        except AdvisorAuthError as exc:
            raise self._auth_error(exc) from None
        except AdvisorError as exc:
            # The rules cannot write examples: nothing to fall back to (the expander counts the failure).
            masked_fix = self._masked(exc.fix or "") or None
            raise type(exc)(self._masked(exc.message), fix=masked_fix, data=exc.data) from None

    def _masked(self, text: str) -> str:
        return text.replace(self._secret, _MASK) if self._secret else text

    def _auth_error(self, exc: AdvisorAuthError) -> AdvisorAuthError:
        provider = self.primary.name
        return AdvisorAuthError(
            self._masked(exc.message),  # the client's message names the provider and the HTTP status
            fix=f"Store a valid key with `forge login --provider {provider}`, use --advisor rules, or set "
            "advisor.fallback_on_auth_error: true in forge.yaml to go on with the offline rules.",
        )

    def _fall_back(self, exc: AdvisorError) -> None:
        """Note why the rules answer instead, or raise when the user did not allow it."""
        name, reason = self.primary.name, self._masked(exc.message)
        if isinstance(exc, AdvisorAuthError):
            if not self.allow_auth_fallback:
                raise self._auth_error(exc) from None
            self.notes.append(f"Warning: {name} rejected the API key ({reason}); used the offline rules instead.")
        elif isinstance(exc, AdvisorUnavailable):
            self.notes.append(f"Warning: {name} was unavailable ({reason}); used the offline rules instead.")
        elif isinstance(exc, AdvisorAnswerError):
            self.notes.append(f"Warning: {reason.rstrip('.')}; used the offline rules instead.")
        else:
            self.notes.append(f"Warning: {name} gave no answer ({reason}); used the offline rules instead.")


def make_advisor(section: AdvisorSection, project_dir: Path | None, *, provider: str | None = None) -> Advisor:
    """The advisor forge.yaml (or the ``provider`` override, e.g. --advisor) asks for."""
    chosen = provider or section.provider
    if chosen == "rules":
        return RulesAdvisor()
    if chosen not in ("gemini", "openai"):
        raise ForgeError(
            f"Unknown advisor '{chosen}'.", fix="Use one of: rules, gemini, openai.", code=ErrorCode.ADVISOR_UNKNOWN
        )
    from forgellm.advisor.cache import AdvisorCache, default_cache_dir
    from forgellm.advisor.llm import LLMAdvisor
    from forgellm.config.key_hosts import key_refusal
    from forgellm.config.settings import api_key
    from forgellm.project import DEFAULT_ADVISOR_MODELS, DEFAULT_OPENAI_BASE_URL

    # Model and URL of the section belong to its provider; an override to another provider uses defaults.
    own = chosen == section.provider
    model = (section.model if own else None) or DEFAULT_ADVISOR_MODELS[chosen]
    base_url = section.base_url if own else None
    key = api_key(chosen)
    withheld = key_refusal(chosen, base_url) if key else None
    if withheld:
        key = None  # a forge.yaml or environment URL never receives the user's key unasked
    if chosen == "gemini":
        if withheld:
            raise _withheld_error(chosen, base_url, withheld)
        if not key:
            raise ForgeError(
                "The Gemini advisor needs an API key, and none is stored.",
                fix="Run `forge login --provider gemini` (or set GEMINI_API_KEY), "
                "or use the offline advisor: --advisor rules.",
                code=ErrorCode.ADVISOR_KEY_MISSING,
            )
        from forgellm.advisor.gemini import GeminiClient

        client: JsonClient = GeminiClient(
            api_key=key,
            model=model,
            base_url=base_url,
            timeout_seconds=section.timeout_seconds,
            max_retries=section.max_retries,
        )
    else:
        from forgellm.advisor.openai_compat import OpenAICompatClient

        client = OpenAICompatClient(
            base_url=base_url or DEFAULT_OPENAI_BASE_URL,
            model=model,
            api_key=key,  # None is fine for a local server
            timeout_seconds=section.timeout_seconds,
            max_retries=section.max_retries,
        )
    primary = LLMAdvisor(client, AdvisorCache(default_cache_dir(project_dir)), name=chosen)
    advisor = FallbackAdvisor(primary, RulesAdvisor(), allow_auth_fallback=section.fallback_on_auth_error, secret=key)
    if withheld:  # an OpenAI-compatible server may need no key (a local one): ask it without, and say so
        error = _withheld_error(chosen, base_url, withheld)
        advisor.notes.append(f"Warning: {error.message} {error.fix}")
    return advisor


def _withheld_error(provider: str, url: str | None, why: str) -> ForgeError:
    return ForgeError(
        f"Forge did not send your {provider} API key to {url}: {why}.",
        fix=f"If you trust that server, allow it once: `forge login --provider {provider} --base-url {url}`; "
        "otherwise remove advisor.base_url from forge.yaml (or FORGE_ADVISOR__BASE_URL from the environment).",
        code=ErrorCode.ADVISOR_KEY_WITHHELD,
        data={"provider": provider, "url": url},
    )
