"""What each column of a sample holds, judged by its name and its content: the evidence format detection
weighs to decide which column is the user's side, which the answer, which a label and which metadata.

Names are matched in many languages and conventions (``Ticket Subject``, ``betreff``, ``respuesta``,
``回答``): a hint matches the whole normalised name or one of its words (``customer_question``); CJK hints
match anywhere in the name, as those names have no spaces. Content is read from the values: length,
question marks and question words, reply phrases ("Thank you for contacting", "I'm sorry", "Lo
sentimos"), greetings, and the shapes of metadata (ids, dates, URLs, e-mails, numbers, low-cardinality
labels). Every score is in [0, 1] and explained by the caller's reasons, never used silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from forgellm.data.read.records import Record

# fmt: off
# Name hints per side, strongest first (a hint's weight falls with its position). Several languages:
# en, de, es, fr, it, pt, nl, ru, ja, zh, ko.
USER_HINTS = (
    "question", "query", "prompt", "instruction", "request", "inquiry", "enquiry", "utterance", "customer",
    "problem", "issue", "complaint", "ticket", "description", "message", "body", "input", "user", "human", "q",
    "frage", "anfrage", "anliegen", "nachricht", "beschreibung", "kunde", "vraag", "bericht",
    "pregunta", "consulta", "solicitud", "mensaje", "descripcion", "descripción", "cliente",
    "demande", "requête", "requete", "domanda", "richiesta", "messaggio", "descrizione",
    "pergunta", "pedido", "mensagem", "descricao", "descrição", "вопрос", "сообщение", "описание",
    "質問", "問い合わせ", "問合せ", "相談", "问题", "提问", "咨询", "질문", "문의",
)
ASSISTANT_HINTS = (
    "answer", "response", "reply", "resolution", "solution", "output", "completion", "agent", "assistant",
    "bot", "target", "support", "a", "antwort", "lösung", "loesung", "antwoord", "oplossing",
    "respuesta", "solución", "solucion", "réponse", "reponse", "risposta", "soluzione", "resposta",
    "solução", "solucao", "ответ", "решение", "回答", "答え", "返答", "返信", "答案", "回复", "答复", "답변",
)
SUBJECT_HINTS = ("subject", "title", "headline", "topic line", "betreff", "asunto", "sujet", "objet", "oggetto",
                 "assunto", "onderwerp", "тема", "件名", "标题", "제목")
CONTEXT_HINTS = ("context", "kontext", "contexto", "contexte", "contesto", "背景", "上下文")
LABEL_HINTS = ("label", "category", "intent", "class", "topic", "type", "tag", "sentiment", "department",
               "queue", "priority", "kategorie", "categoría", "categoria", "catégorie", "etiqueta", "klasse",
               "ラベル", "カテゴリ", "分类", "类别", "标签")
TEXT_HINTS = ("text", "content", "body", "document", "article", "passage", "markdown", "inhalt", "texto",
              "texte", "testo", "本文", "内容", "正文")
METADATA_HINTS = ("id", "uuid", "key", "date", "time", "created", "updated", "timestamp", "url", "link", "email",
                  "mail", "name", "author", "user id", "phone", "status", "score", "rating", "lang", "language",
                  "source", "version", "flags", "count", "number", "age", "gender", "country", "channel",
                  "synthetic", "seeds")  # synthetic, synthetic_seeds: the marks of `forge expand`
# fmt: on
_WEAK_ALONE = frozenset({"a", "q", "input", "output", "user", "bot", "human", "agent", "body", "message"})
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_QUESTION = re.compile(
    r"[?？¿]|^(?:how|what|why|when|where|who|which|can|could|is|are|do|does|should|would|i need|i want|please|"
    r"help|wie|was|warum|wann|wo|kann|können|cómo|como|qué|que|por qué|cuándo|dónde|puedo|comment|pourquoi|"
    r"quand|où|est-ce|puis-je|come|perché|quando|dove|posso|o que|por que|onde|hoe|wat|waarom|как|что|почему)\b",
    re.IGNORECASE,
)
_REPLY = re.compile(
    r"\b(?:sorry|apologi[sz]e|thank you for|thanks for|we(?:'re| are| will| have)|our team|you can|you could|"
    r"please (?:try|note|contact|follow|visit)|happy to help|glad to|i understand|i'd be|i would be|"
    r"to (?:do|fix|resolve|reset|change) (?:this|that|it)|here(?:'s| is| are)|dear |hello|hi there|"
    r"entschuldig|vielen dank|gerne|wir (?:haben|werden|sind)|sie können|lo sentimos|disculp|gracias por|"
    r"puede|podemos|nous (?:avons|allons|sommes)|désolé|merci (?:de|pour)|vous pouvez|ci scusiamo|grazie per|"
    r"obrigad|desculp|você pode)\b|申し訳|ありがとうございます|お問い合わせいただ|ご連絡|承知|您好|感谢|抱歉|请您",
    re.IGNORECASE,
)
_HTML_TAG = re.compile(r"<(?:div|p|a|span|br|h\d|ul|ol|li|table|strong|em|b|i)\b[^>]*>", re.IGNORECASE)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}|^\d{1,2}[/.]\d{1,2}[/.]\d{2,4}(?:\s|$)")
_URL = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_EMAIL = re.compile(r"^[\w.+-]+@[\w-]+\.[\w.-]+$")
_ID = re.compile(r"^[\w\-:.#/]{1,64}$")
_NUMBER = re.compile(r"^[-+]?\d[\d,_ ]*(?:\.\d+)?(?:[eE][-+]?\d+)?%?$")
LABEL_MAX_DISTINCT = 100  # more distinct values than this is not a label set a classifier could learn
LABEL_MAX_CHARS = 40  # a label, not a sentence


def normalise(name: Any) -> str:
    """Lower-case words: ``answerText`` / ``answer_text`` / ``Answer-Text`` -> ``answer text``."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(name))
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", spaced)).strip().lower()


@dataclass
class Column:
    name: str
    values: list[Any] = field(default_factory=list)  # non-missing values
    rows: int = 0  # rows in the sample

    @cached_property
    def norm(self) -> str:
        return normalise(self.name)

    @cached_property
    def words(self) -> list[str]:
        return self.norm.split(" ")

    @cached_property
    def texts(self) -> list[str]:
        """The non-blank string values, stripped (numbers as their text)."""
        out = []
        for v in self.values:
            if isinstance(v, bool):
                continue
            if isinstance(v, int | float):
                out.append(str(v))
            elif isinstance(v, str) and v.strip():
                out.append(v.strip())
        return out

    @cached_property
    def filled(self) -> float:
        """Share of sampled rows with a non-blank value."""
        blank = sum(1 for v in self.values if isinstance(v, str) and not v.strip())
        return (len(self.values) - blank) / max(1, self.rows)

    @cached_property
    def string_share(self) -> float:
        return sum(1 for v in self.values if isinstance(v, str)) / max(1, self.rows)

    @cached_property
    def avg_len(self) -> float:
        return sum(map(len, self.texts)) / len(self.texts) if self.texts else 0.0

    @cached_property
    def distinct(self) -> int:
        return len(set(self.texts))

    def share(self, test: Any) -> float:
        return sum(1 for t in self.texts if test(t)) / max(1, len(self.texts))

    @cached_property
    def question_share(self) -> float:
        return self.share(lambda t: bool(_QUESTION.search(t[:300])))

    @cached_property
    def reply_share(self) -> float:
        return self.share(lambda t: bool(_REPLY.search(t[:600])))

    @cached_property
    def markup_share(self) -> float:
        """Share of values holding HTML tags: a raw copy of a cleaner text column, when both exist."""
        return self.share(lambda t: bool(_HTML_TAG.search(t[:2000])))

    @cached_property
    def multiline_share(self) -> float:
        return self.share(lambda t: "\n" in t)

    @cached_property
    def list_share(self) -> float:
        """Share of rows whose value is a list (or a JSON list in a string), e.g. conversations."""
        return sum(1 for v in self.values if isinstance(as_list(v), list)) / max(1, self.rows)

    @cached_property
    def metadata(self) -> str | None:
        """What kind of metadata the column holds (id, date, url, email, number, bool), or None for content."""
        texts = self.texts
        if not texts:
            return "empty"
        if all(isinstance(v, bool) for v in self.values) or {t.lower() for t in texts} <= {"true", "false", "0", "1",
                                                                                           "yes", "no"}:
            return "bool"
        for kind, pattern in (("date", _ISO_DATE), ("url", _URL), ("email", _EMAIL), ("number", _NUMBER)):
            if self.share(lambda t, p=pattern: bool(p.match(t))) >= 0.9:
                return kind
        unique = self.distinct >= 0.95 * len(texts)
        if unique and self.avg_len <= 40 and self.share(lambda t: bool(_ID.match(t))) >= 0.95:
            return "id"
        if any(w in ("id", "uuid") for w in self.words) and self.avg_len <= 64 and " " not in "".join(texts[:50]):
            return "id"
        return None

    @cached_property
    def label_like(self) -> bool:
        """Short values from a small set that repeat: a category a classifier could learn."""
        if self.metadata not in (None, "bool") or self.filled < 0.8 or not self.texts:
            return False
        if self.avg_len > LABEL_MAX_CHARS or self.distinct > LABEL_MAX_DISTINCT or self.distinct < 2:
            return False
        return self.distinct * 3 <= len(self.texts)  # each label seen ~3 times or more in the sample

    @cached_property
    def texty(self) -> bool:
        """Free text worth training on: mostly strings, not metadata, not a label, at least a few words."""
        return (self.string_share >= 0.5 and self.metadata is None and not self.label_like
                and self.avg_len >= 8 and self.list_share < 0.5)  # fmt: skip

    def name_score(self, hints: tuple[str, ...]) -> float:
        """1.0 for the strongest hint as the whole name, less for later hints and for a hint that is only
        one word of the name; 0 when no hint matches. Weak one-letter/generic names count only alone."""
        best = 0.0
        for rank, hint in enumerate(hints):
            weight = 1.0 - 0.3 * rank / len(hints)
            if self.norm == hint:
                best = max(best, weight)
            elif _CJK.search(hint) and hint in self.norm:
                best = max(best, 0.9 * weight)
            elif hint not in _WEAK_ALONE and (hint in self.words or (" " in hint and hint in self.norm)):
                best = max(best, 0.8 * weight)
        return best

    @cached_property
    def metadata_name(self) -> bool:
        """Named as metadata: the name is a metadata word, or ends in one (``customer_email``, ``user id``:
        compound names are head-last), unless it is named as content outright."""
        head = self.words[-1]
        named_content = self.name_score(USER_HINTS + ASSISTANT_HINTS + TEXT_HINTS) >= 0.95
        return not named_content and (self.norm in METADATA_HINTS or head in METADATA_HINTS)


def as_list(value: Any) -> Any:
    """A list, or a JSON list in a string parsed; anything else as it is."""
    if isinstance(value, str) and value.lstrip()[:1] == "[":
        try:
            return json.loads(value)
        except (json.JSONDecodeError, RecursionError):  # not a list after all, or one too deep to read
            return value
    return value


def columns_of(sample: list[Record]) -> dict[str, Column]:
    cols: dict[str, Column] = {}
    for record in sample:
        for key, value in record.fields.items():
            col = cols.setdefault(key, Column(key, [], len(sample)))
            if value is not None and not (isinstance(value, float) and value != value):  # NaN is missing
                col.values.append(value)
    return cols


def find(cols: dict[str, Column], *names: str) -> str | None:
    """The column whose normalised name is one of ``names`` (first name wins)."""
    by_norm = {c.norm: c.name for c in cols.values()}
    return next((by_norm[n] for n in names if n in by_norm), None)
