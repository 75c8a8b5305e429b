"""Forgetting measured: the loss of each model on a general held-out slice (conversations that have nothing
to do with the domain), base -> after CPT -> after IFT, and what to do when it rose.

The slice, in this order (the first that has rows):
1. the prepared test rows whose `role` is `general` (a mixture's general source keeps its own held-out rows,
   see the data mixture contract), so the figure is measured on the very data the mixture replays;
2. a general file handed in (`forge pipeline --general FILE`), read with the same format detection as prepare;
3. the small general set shipped with Forge (`general/dolly_sample.jsonl`: databricks-dolly-15k, CC BY-SA 3.0).
Each conversation is rendered with the run's chat template and tokenized as prepare does (loss on the
assistant answer only), so the general loss and the domain test loss are the same kind of number.

Threshold and replay share (one home): a general loss `FORGETTING_THRESHOLD` (5%) above the base's counts
as forgetting. The replay share recommended follows Ibrahim et al. 2024, "Simple and Scalable Strategies to
Continually Pre-train Large Language Models" (arXiv:2403.08763): 5% replay of general data was enough for a
weak distribution shift and 25% for a strong one; a rise up to `STRONG_RISE` (15%) is read as weak, above as
strong; a project already mixing that much gets 10 points more, up to `MAX_REPLAY` (50%), beyond which the
domain data no longer leads the mixture.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from forgellm.inference.engines import TransformersEngine
    from forgellm.training.data import TokenizedSplit

FORGETTING_THRESHOLD = 0.05  # relative rise of the general loss over the base's that counts as forgetting
STRONG_RISE = 0.15  # above: a strong shift (25% replay), below: a weak one (5%)
WEAK_REPLAY, STRONG_REPLAY, MAX_REPLAY = 0.05, 0.25, 0.5
GENERAL_EXAMPLES = 64  # conversations scored per model: ~1 s each for a 135M model on a CPU core
SHIPPED_GENERAL = Path(__file__).parent / "general" / "dolly_sample.jsonl"
SHIPPED_NAME = "databricks-dolly-15k sample (CC BY-SA 3.0, shipped with Forge)"


@dataclass
class GeneralSlice:
    origin: str  # prepared-general | file | shipped
    description: str  # for the report: where the rows came from
    conversations: list[list[dict[str, str]]]


@dataclass
class Forgetting:
    """The eval record's `summary.forgetting`: the general loss of each model, in training order."""

    slice: dict[str, Any]  # origin, description, examples, tokens
    losses: dict[str, float | None]  # model label (base, after CPT, after IFT) -> mean loss per answer token
    rise: float | None  # relative change of the last model's general loss over the first's
    threshold: float = FORGETTING_THRESHOLD
    forgot: bool = False
    message: str = ""
    recommendation: dict[str, Any] | None = None  # {role: general, ratio, current, why}
    models: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepared_general(prepared_dir: Path) -> list[list[dict[str, str]]]:
    """The prepared test rows whose role is `general`, as conversations (none when prepare kept no roles)."""
    from forgellm.project.layout import PreparedLayout

    path = PreparedLayout(prepared_dir).split_jsonl("test")
    rows: list[list[dict[str, str]]] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("role") == "general" and isinstance(row.get("messages"), list):
                rows.append(row["messages"])
    return rows


def file_conversations(path: Path, limit: int, seed: int) -> list[list[dict[str, str]]]:
    """Conversations of a data file (any format prepare reads), detected as prepare detects it."""
    from forgellm.data.prepare.recipe import to_example
    from forgellm.data.read.formats import detect_format
    from forgellm.data.read.readers import open_dataset, sample_records
    from forgellm.data.read.records import RecipeError

    dataset = open_dataset(path)
    records = sample_records(dataset, max(limit * 4, 200))
    detection = detect_format(records, kind=dataset.info.kind)
    conversations = []
    for record in records:
        try:
            example = to_example(record, detection.format, detection.recipe)
        except RecipeError:
            continue
        if example.messages:
            conversations.append([dict(m) for m in example.messages])
    return _sample(conversations, limit, seed)


def _sample(conversations: list[Any], limit: int, seed: int) -> list[Any]:
    if len(conversations) <= limit:
        return conversations
    chosen = sorted(random.Random(seed).sample(range(len(conversations)), limit))
    return [conversations[i] for i in chosen]


def general_slice(prepared_dir: Path | None, general_file: Path | None, limit: int, seed: int) -> GeneralSlice:
    """The general held-out slice (see the module docstring for the order)."""
    rows = prepared_general(prepared_dir) if prepared_dir is not None else []
    if rows:
        return GeneralSlice("prepared-general", "prepared test rows of the general source", _sample(rows, limit, seed))
    if general_file is not None:
        rows = file_conversations(general_file, limit, seed)
        return GeneralSlice("file", f"{general_file.name} (the general source)", rows)
    with open(SHIPPED_GENERAL, encoding="utf-8") as handle:
        rows = [json.loads(line)["messages"] for line in handle if line.strip()]
    return GeneralSlice("shipped", SHIPPED_NAME, _sample(rows, limit, seed))


def tokenize_slice(chosen: GeneralSlice, chat_format: Any, tokenizer: Any, max_length: int) -> TokenizedSplit:
    """The slice as a TokenizedSplit (loss on the answers), cut to max_length as training cuts."""
    from forgellm.data.prepare.tokenize import Encoded, encode_conversations
    from forgellm.training.data import TokenizedSplit

    encoded = [e for e in encode_conversations(chat_format, tokenizer, chosen.conversations) if isinstance(e, Encoded)]
    pieces = [(e.input_ids[:max_length], e.labels[:max_length]) for e in encoded]
    pieces = [(ids, labels) for ids, labels in pieces if any(label != -100 for label in labels[1:])]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids, _ in pieces], out=offsets[1:])
    ids = np.asarray([t for p in pieces for t in p[0]], dtype=np.int32)
    targets = np.asarray([t for p in pieces for t in p[1]], dtype=np.int32)
    return TokenizedSplit("general", ids, targets, offsets)


def general_loss(engine: TransformersEngine, split: TokenizedSplit) -> float | None:
    from forgellm.evaluation.loss import score_losses

    if len(split) == 0:
        return None
    indices = np.arange(len(split), dtype=np.int64)
    return score_losses(engine, split, indices, advance=lambda _d, _t: None).mean


def judge_forgetting(
    losses: dict[str, float | None], chosen: GeneralSlice, split: TokenizedSplit, current_share: float | None
) -> Forgetting:
    """The figure, whether it counts as forgetting, and the replay share to mix in when it does."""
    from forgellm.evaluation.stats import relative_change

    labels = list(losses)
    first, last = losses[labels[0]], losses[labels[-1]]
    rise = relative_change(first, last) if first is not None and last is not None else None
    described = {"origin": chosen.origin, "description": chosen.description}
    described |= {"examples": len(split), "tokens": split.tokens}
    result = Forgetting(described, losses, rise, models=labels)
    if rise is None:
        result.message = "The general loss could not be measured (no general conversation with an answer)."
        return result
    path = " -> ".join(f"{label} {value:.3f}" if value is not None else f"{label} –" for label, value in losses.items())
    result.forgot = rise > FORGETTING_THRESHOLD
    if not result.forgot:
        result.message = f"No forgetting: general loss {path} ({rise:+.1%}, threshold +{FORGETTING_THRESHOLD:.0%})."
        return result
    share = replay_share(rise, current_share)
    result.recommendation = {
        "role": "general",
        "ratio": share,
        "current": current_share or 0.0,
        "why": f"general loss rose {rise:+.1%} (over the +{FORGETTING_THRESHOLD:.0%} threshold); Ibrahim et al. "
        f"2024 found {WEAK_REPLAY:.0%} replay enough for a weak shift and {STRONG_REPLAY:.0%} for a strong one",
    }
    result.message = (
        f"Forgetting: general loss {path} ({rise:+.1%}, over the +{FORGETTING_THRESHOLD:.0%} threshold). "
        f"Mix {share:.0%} general data into the instruction tuning: `forge plan --apply-replay` writes it into "
        f"forge.yaml (data.sources: a source with role general and ratio {share:g})."
    )
    return result


def replay_share(rise: float, current: float | None) -> float:
    """The general/replay share to recommend for a relative general-loss rise (see the module docstring)."""
    wanted = STRONG_REPLAY if rise > STRONG_RISE else WEAK_REPLAY
    current = current or 0.0
    if current >= wanted:
        wanted = current + 0.10
    return round(min(MAX_REPLAY, wanted), 2)
