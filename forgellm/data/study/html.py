"""Renderings of a data study: reports/study.json, a self-contained reports/study.html, a rich summary.

The HTML has no scripts and loads nothing: inline CSS, inline SVG charts drawn here. Every piece of
user data is escaped with html.escape.
"""

from __future__ import annotations

import json
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

from forgellm.data.study.report import SEVERITY_ORDER, StudyReport
from forgellm.data.token_stats import text_totals

_COLORS = {"error": "#c62828", "warning": "#ef6c00", "info": "#1565c0"}
_BAR = "#5c6bc0"
_PLURAL = {"error": "errors", "warning": "warnings", "info": "info"}


def _write_atomic(path: Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_study_json(report: StudyReport, path: Path) -> Path:
    """reports/study.json: report.to_dict(), written atomically."""
    return _write_atomic(Path(path), json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


def write_study_html(report: StudyReport, path: Path, *, title: str = "Data study") -> Path:
    """A self-contained HTML page (no external resources), written atomically."""
    return _write_atomic(Path(path), render_study_html(report, title=title))


# ---------------------------------------------------------------- SVG charts


def svg_histogram(histogram: dict[str, list[float]], *, label: str, width: int = 560, height: int = 200) -> str:
    """Vertical bars of a histogram {'edges': [...], 'counts': [...]} with an x axis of bin edges."""
    counts, edges = histogram.get("counts") or [], histogram.get("edges") or []
    if not counts:
        return "<p class='muted'>No data.</p>"
    left, bottom, top = 50, 30, 10
    plot_w, plot_h = width - left - 26, height - bottom - top
    peak = max(counts) or 1
    bar_w = plot_w / len(counts)
    parts = [
        f"<svg class='chart' role='img' aria-label='{escape(label)}' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>"
    ]
    for i, count in enumerate(counts):
        h = plot_h * count / peak
        x, y = left + i * bar_w, top + plot_h - h
        tip = f"{edges[i]:g}-{edges[i + 1]:g}: {count}"
        parts.append(
            f"<rect x='{x + 1:.1f}' y='{y:.1f}' width='{max(bar_w - 2, 1):.1f}' height='{h:.1f}' "
            f"fill='{_BAR}'><title>{escape(tip)}</title></rect>"
        )
    axis_y = top + plot_h
    parts.append(f"<line x1='{left}' y1='{axis_y}' x2='{width - 10}' y2='{axis_y}' stroke='#888'/>")
    for i in range(0, len(edges), max(1, len(edges) // 5)):
        x = left + i * bar_w
        parts.append(f"<text x='{x:.1f}' y='{axis_y + 16}' font-size='11' text-anchor='middle'>{edges[i]:g}</text>")
    parts.append(f"<text x='{left - 6}' y='{top + 10}' font-size='11' text-anchor='end'>{peak}</text>")
    parts.append(f"<text x='{left - 6}' y='{axis_y}' font-size='11' text-anchor='end'>0</text>")
    parts.append("</svg>")
    return "".join(parts)


def svg_bars(items: list[tuple[str, float, str]], *, label: str, width: int = 560, share: bool = False) -> str:
    """Horizontal bars: (name, value, text shown at the bar's end)."""
    if not items:
        return "<p class='muted'>No data.</p>"
    row_h, label_w = 22, 200
    height = row_h * len(items) + 6
    peak = max(v for _, v, _ in items) or 1
    scale = 1.0 if share else peak
    bar_space = width - label_w - 80
    parts = [
        f"<svg class='chart' role='img' aria-label='{escape(label)}' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>"
    ]
    for i, (name, value, text) in enumerate(items):
        y = 3 + i * row_h
        w = bar_space * value / scale
        short = name if len(name) <= 30 else name[:29] + "…"
        parts.append(
            f"<text x='{label_w - 6}' y='{y + 15}' font-size='12' text-anchor='end'>"
            f"<title>{escape(name)}</title>{escape(short)}</text>"
        )
        parts.append(f"<rect x='{label_w}' y='{y + 3}' width='{max(w, 1):.1f}' height='{row_h - 6}' fill='{_BAR}'/>")
        parts.append(f"<text x='{label_w + w + 6:.1f}' y='{y + 15}' font-size='12'>{escape(text)}</text>")
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#777}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 16px;min-width:130px;background:#fafafa}
.card .v{font-size:24px;font-weight:600}.card .k{font-size:12px;color:#666;text-transform:uppercase}
table{border-collapse:collapse;width:100%;font-size:14px}th,td{border-bottom:1px solid #eee;padding:6px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}
.sev{color:#fff;border-radius:4px;padding:1px 8px;font-size:12px;font-weight:600}
.sev-error{background:#c62828}.sev-warning{background:#ef6c00}.sev-info{background:#1565c0}
tr.error td:first-child{border-left:4px solid #c62828}tr.warning td:first-child{border-left:4px solid #ef6c00}
tr.info td:first-child{border-left:4px solid #1565c0}
.grid{display:grid;align-items:start;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:16px}
.panel{border:1px solid #eee;border-radius:8px;padding:12px}.panel h3{margin:0 0 8px;font-size:15px}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
"""


def render_study_html(report: StudyReport, *, title: str = "Data study") -> str:
    sections = [
        _summary_cards(report),
        _shape_section(report),
        _findings_table(report),
        _length_section(report),
        _labels_section(report),
        _columns_section(report),
    ]
    note = f"<p class='muted'>{escape(report.sample_note)}</p>" if report.sample_note else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{note}"
        + "".join(sections)
        + "<p class='muted'>Made by forge study. Line numbers point into the input file.</p></body></html>\n"
    )


def _card(key: str, value: Any, color: str | None = None) -> str:
    style = f" style='color:{color}'" if color else ""
    return f"<div class='card'><div class='k'>{escape(key)}</div><div class='v'{style}>{escape(str(value))}</div></div>"


def _summary_cards(report: StudyReport) -> str:
    tokens = report.lengths["tokens"]
    dupes = report.duplicates["records"]["rows"] + report.duplicates["texts"]["rows"]
    cards = [
        _card("rows", f"{report.rows:,}"),
        _card("columns", len(report.columns)),
        _card("unreadable", report.unreadable["rows"]),
    ]
    if report.examples is not None:
        cards.append(_card("examples", f"{report.examples['made']:,}"))
    cards += [
        _card("duplicates", f"{dupes:,}"),
        _card("near-duplicates", f"{report.duplicates['near']['rows']:,}"),
        _card("tokens p50 / p99", f"{tokens.get('p50', 0):g} / {tokens.get('p99', 0):g}" if tokens["count"] else "-"),
    ]
    for severity in ("error", "warning", "info"):
        cards.append(_card(_PLURAL[severity], len(report.by_severity(severity)), _COLORS[severity]))
    counter = f"<p class='muted'>Token counts: <code>{escape(report.token_counter)}</code>"
    if report.text_stats:
        counter += f" ({escape(report.text_stats.get('reason', ''))})<br>{escape(text_totals(report.text_stats))}"
    counter += "</p>"
    return "<h2>Summary</h2><div class='cards'>" + "".join(cards) + "</div>" + counter


def _shape_section(report: StudyReport) -> str:
    """The reading chosen for the file and the others weighed, with scores: why this recipe."""
    shape = report.shape
    if not shape:
        return ""
    rows = [(shape["format"], shape["confidence"], "; ".join(shape["reasons"]), "chosen")]
    rows += [(a["shape"], a["confidence"], a["why"], "alternative") for a in shape.get("alternatives", [])]
    body = "".join(
        f"<tr><td>{escape(str(name))}</td><td>{score:.2f}</td><td>{escape(kind)}</td><td>{escape(why)}</td></tr>"
        for name, score, why, kind in rows
    )
    warnings = "".join(f"<li>{escape(w)}</li>" for w in shape.get("warnings", []))
    return (
        "<h2>Shape</h2><table><tr><th>reading</th><th>score</th><th></th><th>why</th></tr>" + body + "</table>"
        + (f"<ul>{warnings}</ul>" if warnings else "")
    )


def _findings_table(report: StudyReport) -> str:
    if not report.findings:
        return "<h2>Findings</h2><p>No problems found.</p>"
    rows = []
    for f in sorted(report.findings, key=lambda f: SEVERITY_ORDER[f.severity]):
        lines = ", ".join(str(n) for n in f.examples[:10])
        rows.append(
            f"<tr class='{escape(f.severity)}'><td><span class='sev sev-{escape(f.severity)}'>{escape(f.severity)}"
            f"</span></td><td><b>{escape(f.title)}</b><br><span class='muted'>{escape(f.detail)}</span></td>"
            f"<td>{escape(f.fix)}</td><td>{f.count:,}</td><td>{escape(lines)}</td></tr>"
        )
    head = "<tr><th>Severity</th><th>Finding</th><th>Fix</th><th>Rows</th><th>Example lines</th></tr>"
    return f"<h2>Findings</h2><table>{head}{''.join(rows)}</table>"


def _stats_line(stats: dict[str, Any]) -> str:
    if not stats.get("count"):
        return ""
    keys = ("mean", "p50", "p90", "p99", "max")
    return "<p class='muted'>" + " · ".join(f"{k} {stats[k]:g}" for k in keys) + "</p>"


def _length_section(report: StudyReport) -> str:
    chars, tokens = report.lengths["chars"], report.lengths["tokens"]
    panels = [
        f"<div class='panel'><h3>Characters per record</h3>{_stats_line(chars)}"
        f"{svg_histogram(chars.get('histogram', {}), label='characters per record')}</div>",
        f"<div class='panel'><h3>Tokens per record ({escape(report.token_counter)})</h3>{_stats_line(tokens)}"
        f"{svg_histogram(tokens.get('histogram', {}), label='tokens per record')}</div>",
    ]
    if report.truncation:
        t = report.truncation
        panels.append(
            f"<div class='panel'><h3>Truncation at max_length {t['max_length']}</h3>"
            f"<p>{t['examples_share']:.1%} of examples and {t['tokens_share']:.1%} of tokens lie past it.</p></div>"
        )
    if report.suggested_max_length:
        s = report.suggested_max_length
        panels.append(
            f"<div class='panel'><h3>Suggested max_length</h3><p><code>model.max_length: {s['value']}</code> "
            f"covers {s['covers']:.1%} of examples.</p></div>"
        )
    if report.examples and report.examples["turns"]:
        turns = [(f"{k} messages", v, f"{v:,}") for k, v in report.examples["turns"].items()]
        panels.append(f"<div class='panel'><h3>Messages per example</h3>{svg_bars(turns, label='turns')}</div>")
    return "<h2>Lengths</h2><div class='grid'>" + "".join(panels) + "</div>"


def _labels_section(report: StudyReport) -> str:
    panels = []
    ordered = sorted(report.labels.items(), key=lambda item: item[0] != report.label_column)
    for name, label in ordered[:6]:
        total = sum(label["counts"].values())
        items = [(k, v, f"{v:,} ({v / total:.0%})") for k, v in list(label["counts"].items())[:15]]
        mark = " (label)" if name == report.label_column else ""
        panels.append(
            f"<div class='panel'><h3>{escape(name)}{mark} · imbalance {label['imbalance_ratio']:g}x</h3>"
            f"{svg_bars(items, label=name)}</div>"
        )
    languages = [(lang["language"], lang["share"], f"{lang['share']:.1%}") for lang in report.languages]
    panels.append(f"<div class='panel'><h3>Languages</h3>{svg_bars(languages, label='languages', share=True)}</div>")
    return "<h2>Labels and languages</h2><div class='grid'>" + "".join(panels) + "</div>"


def _columns_section(report: StudyReport) -> str:
    missing = [
        (c["name"], c["missing"]["share"], f"{c['missing']['total']:,} ({c['missing']['share']:.0%})")
        for c in report.columns
        if c["missing"]["total"]
    ]
    rows = []
    for c in report.columns:
        types = ", ".join(f"{t} {s:.0%}" for t, s in c["types"].items())
        distinct = "many" if c["distinct"] is None else c["distinct"]
        rows.append(
            f"<tr><td>{escape(c['name'])}</td><td>{escape(str(c['type']))}</td><td>{escape(types)}</td>"
            f"<td>{c['missing']['share']:.0%}</td><td>{distinct}</td><td>{c['mean_chars']:g}</td></tr>"
        )
    head = "<tr><th>Column</th><th>Type</th><th>Types</th><th>Missing</th><th>Distinct</th><th>Mean chars</th></tr>"
    bars = svg_bars(missing, label="missing values", share=True) if missing else "<p>No missing values.</p>"
    return (
        "<h2>Columns</h2><div class='grid'><div class='panel'><h3>Missing values</h3>" + bars + "</div></div>"
        f"<table>{head}{''.join(rows)}</table>"
    )


# ---------------------------------------------------------------- terminal


def render_study_terminal(report: StudyReport, console: Any) -> None:
    """A rich summary for `forge study`: counts, findings by severity, labels, token statistics."""
    from rich.markup import escape as esc
    from rich.panel import Panel
    from rich.table import Table

    tokens = report.lengths["tokens"]
    head = [f"[bold]{report.rows:,}[/] rows", f"{len(report.columns)} columns"]
    if report.unreadable["rows"]:
        head.append(f"[red]{report.unreadable['rows']:,} unreadable[/]")
    if report.examples is not None:
        head.append(f"{report.examples['made']:,} examples, {report.examples['rejected']['rows']:,} rejected")
    counts = " ".join(
        f"[{_COLORS[s]}]{len(report.by_severity(s))} {_PLURAL[s]}[/]" for s in ("error", "warning", "info")
    )
    body = " · ".join(head) + "\n" + counts
    if report.sample_note:
        body += f"\n[dim]{esc(report.sample_note)}[/]"
    console.print(Panel(body, title="forge study", expand=False))

    if report.findings:
        table = Table(show_lines=False, header_style="bold")
        for column in ("severity", "finding", "fix", "rows"):
            table.add_column(column, overflow="fold")
        for f in sorted(report.findings, key=lambda f: SEVERITY_ORDER[f.severity]):
            table.add_row(f"[{_COLORS[f.severity]}]{f.severity}[/]", esc(f.title), esc(f.fix), f"{f.count:,}")
        console.print(table)

    if report.label_column and report.label_column in report.labels:
        label = report.labels[report.label_column]
        total = sum(label["counts"].values())
        top = esc(", ".join(f"{k} {v / total:.0%}" for k, v in list(label["counts"].items())[:6]))
        console.print(f"[bold]Labels[/] ({esc(report.label_column)}, imbalance {label['imbalance_ratio']:g}x): {top}")
    if tokens["count"]:
        line = (
            f"[bold]Tokens[/] ({esc(report.token_counter)}): p50 {tokens['p50']:g} · p90 {tokens['p90']:g} · "
            f"p99 {tokens['p99']:g} · max {tokens['max']}"
        )
        if report.truncation:
            t = report.truncation
            line += f" · {t['examples_share']:.1%} of examples over max_length {t['max_length']}"
        console.print(line)
    if report.text_stats:
        reason = esc(report.text_stats["reason"])
        console.print(f"[bold]Totals[/]: {esc(text_totals(report.text_stats))} [dim]({reason})[/]")
