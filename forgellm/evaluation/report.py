"""reports/eval.json and a self-contained reports/eval.html (inline CSS and SVG charts, no scripts, nothing
loaded from elsewhere), in the style of the data study's report. Every model answer and every piece of
data is escaped: a `<script>` a model writes stays text."""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING, Any

from forgellm.data.study.html import _CSS as _STUDY_CSS
from forgellm.evaluation.verdict import loss_change_text, stop_rate_text

if TYPE_CHECKING:
    from forgellm.evaluation.result import EvalResult

_BASE, _TUNED = "#9e9e9e", "#3949ab"
_CSS = (
    _STUDY_CSS
    + """
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
pre.msg{white-space:pre-wrap;word-break:break-word;margin:0;font:13px/1.4 ui-monospace,monospace}
div.sc{font-size:12px;color:#555;margin-top:4px}.win{color:#2e7d32;font-weight:600}
table.sbs{table-layout:fixed}.card .s{font-size:12px;color:#555;margin-top:2px}
.verdict{border-left:6px solid;border-radius:6px;padding:10px 16px;margin:16px 0;background:#fafafa}
.verdict p{margin:0;font-size:16px;font-weight:600}.verdict ul{margin:8px 0 0}
.v-better{border-color:#2e7d32}.v-no_better{border-color:#ef6c00}.v-worse{border-color:#c62828}
"""
)
# (key in the summary, label, factor to a 0-100 scale)
_SCORES = (
    ("stop_rate", "stop rate", 100.0),
    ("exact_match", "exact match", 100.0),
    ("rouge_l", "ROUGE-L", 100.0),
    ("chrf", "chrF", 1.0),
)


def write_reports(result: EvalResult) -> None:
    """Both files, each written atomically (temp file + rename); eval.json is the EvalRecord."""
    from forgellm.files import atomic_write_text

    record = result.to_record()
    record.save(result.files["json"])
    atomic_write_text(result.files["html"], render_html(record.to_dict()))


def _fmt(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "–"


# ---------------------------------------------------------------- SVG charts


def svg_grouped_bars(
    rows: list[tuple[str, float | None, float | None]], *, label: str, unit: str = "", spec: str = ".1f"
) -> str:
    """Per row a grey (base) and a blue (fine-tuned) horizontal bar, on one shared scale."""
    shown = [r for r in rows if r[1] is not None or r[2] is not None]
    if not shown:
        return "<p class='muted'>No data.</p>"
    width, label_w, row_h = 560, 110, 44
    height = row_h * len(shown) + 6
    peak = max(v for _, b, t in shown for v in (b, t) if v is not None) or 1.0
    space = width - label_w - 90
    parts = [f"<svg class='chart' role='img' aria-label='{escape(label)}' width='{width}' height='{height}'>"]
    for i, (name, base, tuned) in enumerate(shown):
        y = 3 + i * row_h
        parts.append(f"<text x='{label_w - 8}' y='{y + 25}' font-size='12' text-anchor='end'>{escape(name)}</text>")
        for offset, value, color, who in ((2, base, _BASE, "base"), (21, tuned, _TUNED, "fine-tuned")):
            w = space * (value or 0.0) / peak
            text = f"{_fmt(value, spec)}{unit}" if value is not None else "–"
            parts.append(
                f"<rect x='{label_w}' y='{y + offset}' width='{max(w, 1):.1f}' height='17' fill='{color}'>"
                f"<title>{who}: {escape(text)}</title></rect>"
                f"<text x='{label_w + w + 6:.1f}' y='{y + offset + 13}' font-size='11'>{escape(text)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_loss_scatter(pairs: list[tuple[float, float]], *, label: str) -> str:
    """Each test example's loss: base (x) against fine-tuned (y). Points under the diagonal improved."""
    if not pairs:
        return "<p class='muted'>No data.</p>"
    size, pad = 320, 40
    low = min(min(p) for p in pairs)
    high = max(max(p) for p in pairs)
    low, high = max(0.0, low - 0.05 * (high - low + 1e-9)), high + 0.05 * (high - low + 1e-9)
    span = (high - low) or 1.0

    def at(value: float, flip: bool = False) -> float:
        share = (value - low) / span
        return pad + (1 - share if flip else share) * (size - 2 * pad)

    parts = [
        f"<svg class='chart' role='img' aria-label='{escape(label)}' width='{size}' height='{size}'>",
        f"<line x1='{at(low)}' y1='{at(low, True)}' x2='{at(high)}' y2='{at(high, True)}' stroke='#bbb' "
        "stroke-dasharray='4 3'/>",
        f"<line x1='{pad}' y1='{size - pad}' x2='{size - pad}' y2='{size - pad}' stroke='#888'/>",
        f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{size - pad}' stroke='#888'/>",
    ]
    for base, tuned in pairs:
        color = "#2e7d32" if tuned < base else "#c62828"
        parts.append(
            f"<circle cx='{at(base):.1f}' cy='{at(tuned, True):.1f}' r='3' fill='{color}' fill-opacity='0.6'>"
            f"<title>base {base:.3f} → fine-tuned {tuned:.3f}</title></circle>"
        )
    for value in (low, (low + high) / 2, high):
        parts.append(
            f"<text x='{at(value):.1f}' y='{size - pad + 16}' font-size='10' text-anchor='middle'>{value:.2f}</text>"
        )
        parts.append(
            f"<text x='{pad - 4}' y='{at(value, True) + 4:.1f}' font-size='10' text-anchor='end'>{value:.2f}</text>"
        )
    parts.append(f"<text x='{size / 2}' y='{size - 6}' font-size='11' text-anchor='middle'>base loss</text>")
    parts.append(
        f"<text x='12' y='{size / 2}' font-size='11' transform='rotate(-90 12 {size / 2})' "
        "text-anchor='middle'>fine-tuned loss</text></svg>"
    )
    return "".join(parts)


# ---------------------------------------------------------------- HTML


def _card(key: str, value: str, sub: str = "") -> str:
    below = f"<div class='s'>{escape(sub)}</div>" if sub else ""
    return f"<div class='card'><div class='k'>{escape(key)}</div><div class='v'>{escape(value)}</div>{below}</div>"


def _verdict_section(data: dict[str, Any]) -> str:
    """The verdict first, in words, so no chart can be read as a success it is not."""
    verdict = data["summary"].get("verdict")
    if not verdict:
        return ""
    items = "".join(f"<li>{escape(s)}</li>" for s in verdict.get("suggestions", []))
    suggestions = f"<ul>{items}</ul>" if items else ""
    status = verdict["status"] if verdict.get("status") in ("better", "no_better", "worse") else "no_better"
    return f"<div class='verdict v-{status}'><p>{escape(verdict['message'])}</p>{suggestions}</div>"


def _arrow(base: Any, tuned: Any, spec: str) -> str:
    return f"{_fmt(base, spec)} → {_fmt(tuned, spec)}"


def _summary_section(data: dict[str, Any]) -> str:
    s = data["summary"]
    base, tuned = s["base"], s["tuned"]
    relative = (s.get("loss_change") or {}).get("relative")
    cards = [
        _card("test loss", _arrow(base["loss"], tuned["loss"], ".3f"), _fmt(relative, "+.1%") if relative else ""),
        _card("perplexity", _arrow(base["perplexity"], tuned["perplexity"], ".2f")),
        _card("stop rate", _arrow(base["stop_rate"], tuned["stop_rate"], ".0%"), _stop_detail(base, tuned)),
        _card("ROUGE-L", _arrow(base["rouge_l"], tuned["rouge_l"], ".3f")),
        _card("chrF", _arrow(base["chrf"], tuned["chrf"], ".1f")),
        _card("exact match", _arrow(base["exact_match"], tuned["exact_match"], ".0%")),
        _card("judge win rate", _fmt(s["judge_win_rate"], ".0%")),
        _card("examples scored", str(s["examples_scored"])),
        _card("answers compared", str(s["samples_generated"])),
    ]
    legend = (
        f"<p class='legend muted'><span style='background:{_BASE}'></span>base model"
        f"<span style='background:{_TUNED}'></span>fine-tuned (run {escape(data['run_id'])})</p>"
    )
    return "<h2>Summary</h2><div class='cards'>" + "".join(cards) + "</div>" + legend


def _stop_detail(base: dict[str, Any], tuned: dict[str, Any]) -> str:
    if not base.get("answers"):  # no answers, or an eval.json written before the counts were kept
        return ""
    return f"base {stop_rate_text(base)} · fine-tuned {stop_rate_text(tuned)}"


def _charts_section(data: dict[str, Any]) -> str:
    base, tuned = data["summary"]["base"], data["summary"]["tuned"]
    scores = [(name, _pct(base[k], scale), _pct(tuned[k], scale)) for k, name, scale in _SCORES]
    losses = [("test loss", base["loss"], tuned["loss"])]
    pairs = [
        (e["base"], e["tuned"]) for e in data["example_losses"] if e["base"] is not None and e["tuned"] is not None
    ]
    share = loss_change_text(data["summary"].get("loss_change"))
    return (
        "<h2>Base vs fine-tuned</h2><div class='grid'>"
        f"<div class='panel'><h3>Answer scores (0–100, higher is better)</h3>"
        f"{svg_grouped_bars(scores, label='answer scores')}</div>"
        f"<div class='panel'><h3>Mean test loss per trained token (lower is better)</h3>"
        f"{svg_grouped_bars(losses, label='test loss', spec='.3f')}</div>"
        f"<div class='panel'><h3>Loss of each test example</h3><p class='muted'>{escape(share)} Green: improved; "
        f"red: worse; the dashed line is no change.</p>{svg_loss_scatter(pairs, label='loss per example')}</div>"
        "</div>"
    )


def _pct(value: Any, scale: float) -> float | None:
    return value * scale if isinstance(value, (int, float)) else None


def _conversation(prompt: list[dict[str, str]]) -> str:
    return "".join(
        f"<pre class='msg'><b>{escape(str(m.get('role', '')))}:</b> {escape(str(m.get('content', '')))}</pre>"
        for m in prompt
    )


def _answer_cell(example: dict[str, Any], who: str) -> str:
    scores = example["scores"][who]
    stopped = "ended its turn" if example[f"{who}_stopped"] else "cut at the token limit"
    detail = " · ".join(
        [f"ROUGE-L {_fmt(scores.get('rouge_l'), '.2f')}", f"chrF {_fmt(scores.get('chrf'), '.1f')}", stopped]
    )
    verdict = example.get("judge") or {}
    won = " <span class='win'>judge: better</span>" if verdict.get("winner") == who else ""
    return f"<td><pre class='msg'>{escape(example[who])}</pre><div class='sc'>{escape(detail)}{won}</div></td>"


def _examples_section(data: dict[str, Any]) -> str:
    examples = data["examples"]
    if not examples:
        return "<h2>Answers side by side</h2><p class='muted'>No answers were generated.</p>"
    rows = []
    for number, example in enumerate(examples, 1):
        verdict = example.get("judge")
        reason = (
            f"<div class='sc'>judge: {escape(verdict['winner'])} — {escape(verdict['reason'])}</div>" if verdict else ""
        )
        rows.append(
            f"<tr><td>{number}</td><td>{_conversation(example['prompt'])}{reason}</td>"
            f"<td><pre class='msg'>{escape(example['reference'])}</pre></td>"
            f"{_answer_cell(example, 'base')}{_answer_cell(example, 'tuned')}</tr>"
        )
    widths = "<colgroup><col style='width:3%'><col style='width:22%'><col span='3' style='width:25%'></colgroup>"
    head = "<tr><th>#</th><th>Conversation</th><th>Reference</th><th>Base model</th><th>Fine-tuned</th></tr>"
    return f"<h2>Answers side by side</h2><table class='sbs'>{widths}{head}{''.join(rows)}</table>"


def _notes_section(data: dict[str, Any]) -> str:
    settings = data["settings"]
    lines = [
        f"Loss: mean cross-entropy over the trained (assistant) tokens of {data['summary']['examples_scored']} "
        f"test examples (of {settings['test_examples']}); perplexity = exp(loss).",
        f"Answers: greedy, at most {settings['max_new_tokens']} new tokens, {data['summary']['samples_generated']} "
        f"conversations drawn with seed {settings['seed']}. ROUGE-L and exact match are means over the answers; "
        "chrF is pooled over all answers (sacrebleu's corpus chrF).",
        *([f"Token limit: {settings['max_new_tokens_reason']}."] if settings.get("max_new_tokens_reason") else []),
        "Intervals: the stop rate's is the 95% Wilson score interval; the loss change's is a 95% t-interval of "
        "the per-example differences (fine-tuned minus base). The verdict calls a model better only when its "
        "test loss is at least 2% lower and that interval lies below 0.",
        f"Base: {settings['base_label']}. Fine-tuned: {settings['tuned_label']}.",
        *data["notes"],
    ]
    warnings = "".join(f"<li class='warning'>{escape(w)}</li>" for w in data["warnings"])
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f"<h2>How this was measured</h2><ul>{warnings}{items}</ul>"


def render_html(data: dict[str, Any]) -> str:
    """The page for one eval.json's content."""
    title = f"Evaluation of run {data['run_id']}"
    sections = [
        _verdict_section(data), _summary_section(data), _charts_section(data), _examples_section(data),
        _notes_section(data),
    ]  # fmt: skip
    sub = (
        f"{escape(data['base_model'])} · checkpoint {escape(data['checkpoint'])} · {escape(data['created_at'])} · "
        f"{_fmt(data['seconds'].get('total'), '.0f')} s"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1><p class='muted'>{sub}</p>"
        + "".join(sections)
        + "<p class='muted'>Made by forge eval.</p></body></html>\n"
    )
