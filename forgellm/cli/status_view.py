"""The human view of `forge status`: compact rich panels and tables over the report's JSON data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from forgellm.units import human_bytes

_STATE_STYLE = {
    "running": "bold cyan",
    "completed": "green",
    "current": "green",
    "interrupted": "yellow",
    "incomplete": "yellow",
    "stale": "yellow",
    "failed": "red",
    "damaged": "red",
    "unknown": "dim",
}
RUNS_SHOWN = 5  # the newest few; `forge status --json` lists them all


def when(iso: str | None, now: datetime | None = None) -> str:
    """ "2026-11-22 14:03 (2 h ago)" from an ISO time."""
    if not iso:
        return "–"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    seconds = max(0.0, ((now or datetime.now()) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{moment:%Y-%m-%d %H:%M} ({int(seconds // size)} {unit} ago)"
    return f"{moment:%Y-%m-%d %H:%M} (just now)"


def ago(iso: str | None, now: datetime | None = None) -> str:
    """ "13 h ago" for tables, where the full time would crowd the columns (the JSON has it)."""
    full = when(iso, now)
    return full[full.index("(") + 1 : -1] if full.endswith(")") else full


def _num(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def plan_panel(report: dict[str, Any]) -> Panel:
    plan, model = report["plan"], report["model"]
    grid = _grid()
    if not plan["valid"]:
        problems = Text("\n".join(f"• {p}" for p in plan["problems"]), style="red")
        grid.add_row("forge.yaml", Text("invalid", style="bold red"))
        grid.add_row("", problems)
        return Panel(grid, title="Plan", title_align="left", box=box.ROUNDED)
    planned = f"planned {when(plan['modified_at'])}" if plan["planned"] else "defaults of `forge init`, not planned yet"
    grid.add_row("forge.yaml", f"valid · {planned}")
    grid.add_row("Goal", Text(plan["goal"]) if plan["goal"] else Text("not set", style="dim"))
    if model["ok"]:
        ready = "[green]ready[/]" if model["ready"] else "[yellow]not in the cache yet[/] (fetched on first use)"
        grid.add_row("Model", f"{escape(model['ref'])} ({model['kind']}) · {ready}")
    else:
        grid.add_row("Model", Text(f"{model['ref']}: {model['problem']}", style="red"))
    length = f"{plan['max_steps']} steps" if plan["max_steps"] else f"{plan['epochs']:g} epochs"
    batch = f"batch {plan['batch_size']} ({plan['micro_batch_size']}×{plan['gradient_accumulation']})"
    grid.add_row(
        "Training",
        f"{plan['method']} {plan['stage']} · max_length {plan['max_length']} · {length} · {batch} · "
        f"lr {plan['learning_rate']:.0e}",
    )
    return Panel(grid, title="Plan", title_align="left", box=box.ROUNDED)


def data_panel(data: dict[str, Any], plan_valid: bool = True) -> Panel:
    grid = _grid()
    unset = "[dim]not set (data.source)[/]" if plan_valid else "[dim]unknown (forge.yaml is invalid)[/]"
    grid.add_row("Source", escape(data["source"]) if data["source"] else unset)
    if not data["prepared"]:
        grid.add_row("Prepared", "[dim]nothing yet[/]")
    for entry in data["prepared"][:3]:
        counts = " · ".join(f"{count:,} {split}" for split, count in entry["examples"].items() if count is not None)
        line = Text.assemble(
            _state(entry["state"]), f"  {counts or 'no counts'} · prepared {ago(entry['prepared_at'])}"
        )
        grid.add_row(Text(entry["name"]), line)
        if entry.get("sources"):  # a mixture: the training examples each source gave
            used = ", ".join(f"{name} {count:,}" for name, count in entry["sources"].items())
            grid.add_row("", Text(f"↳ mixture (examples used, all splits): {used}", style="dim"))
        for reason in entry["reasons"]:
            grid.add_row("", Text(f"↳ {reason}", style="yellow"))
    if len(data["prepared"]) > 3:
        grid.add_row("", f"[dim]… {len(data['prepared']) - 3} older[/]")
    for entry in data["interrupted"]:
        grid.add_row(Text(entry["name"]), Text(f"interrupted after {entry['chunks_done']} chunks", style="yellow"))
    if data["state"] in ("stale", "interrupted"):
        grid.add_row("", Text(f"{data['state']}: run {data['prepare_command']}", style="bold yellow"))
    return Panel(grid, title="Data", title_align="left", box=box.ROUNDED)


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="Runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("best val", justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True)
    for run in reversed(runs[-RUNS_SHOWN:]):
        steps = f"{run['steps'] if run['steps'] is not None else '–'}/{run['total_steps'] or '?'}"
        state = _state(run["state"])
        if run["state"] == "failed" and run["reason"]:
            state.append(f" ({run['reason']})", style="dim")
        table.add_row(Text(run["id"]), state, steps, _num(run["best_val_loss"]), ago(run["started_at"]))
    if len(runs) > RUNS_SHOWN:
        table.caption = f"{len(runs) - RUNS_SHOWN} older runs: forge status --json"
    return table


def exports_table(exports: list[dict[str, Any]]) -> Group:
    """The table, then one line per export that is not in Ollama: the command, or Ollama's refusal."""
    table = Table(title="Exports", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("export", overflow="fold")
    table.add_column("run", overflow="fold")
    table.add_column("files", overflow="fold")
    table.add_column("Ollama", no_wrap=True)
    lines: list[Text] = []
    for export in exports:
        files = [
            f"{escape(g['quant'])} {human_bytes(g['bytes']) if g['bytes'] else '[red]missing[/]'}"
            for g in export["gguf"]
        ]
        files += [Path(export["modelfile"]).name] if export["modelfile"] else []
        ollama = export["ollama"]
        if not export["complete"]:
            registered = "[red]incomplete[/]"
        elif ollama["registered"]:
            registered = f"[green]registered[/] as {escape(str(ollama['model']))}"
        elif ollama["error"]:
            registered = "[red]refused[/]"
            lines.append(Text(f"  {export['name']}: Ollama refused it: {ollama['error']}", style="red"))
        else:
            registered = "not registered"
            if ollama["command"]:
                lines.append(Text(f"  {export['name']}: {ollama['command']}"))
        table.add_row(Text(export["name"]), Text(str(export["run_id"] or "–")), ", ".join(files) or "–", registered)
    return Group(table, *lines)


def eval_table(evaluation: dict[str, Any]) -> Group | Text:
    if evaluation["damaged"]:
        return Text("Eval      reports/eval.json is damaged: `forge eval` writes it again", style="red")
    title = f"Eval of run {evaluation['run_id'] or '?'} ({ago(evaluation['evaluated_at'])})"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("", "base", "fine-tuned"):
        table.add_column(column, justify="right" if column else "left", no_wrap=True)
    base, tuned = evaluation["base"], evaluation["tuned"]
    for key, label, spec in (
        ("loss", "loss", ".3f"),
        ("perplexity", "perplexity", ".2f"),
        ("stop_rate", "stop rate", ".0%"),
    ):
        if base.get(key) is not None or tuned.get(key) is not None:
            table.add_row(label, _num(base.get(key), spec), _num(tuned.get(key), spec))
    return Group(Text(title, style="italic"), table)


def machine_line(hardware: dict[str, Any], advisor: dict[str, Any] | None) -> Text:
    if "error" in hardware:
        machine = f"not probed ({hardware['error']})"
    else:
        machine = (
            f"{hardware['cpu_physical_cores']} cores · {human_bytes(hardware['ram_total_bytes'])} RAM "
            f"({human_bytes(hardware['ram_available_bytes'])} free) · {hardware['accelerator']} · "
            f"disk {human_bytes(hardware['disk_free_bytes'])} free"
        )
    text = Text(f"Machine   {machine}")
    if advisor is not None:
        text.append(f"\nAdvisor   {advisor['provider']}" + (f" ({advisor['model']})" if advisor["model"] else ""))
        key = advisor["key"]
        if advisor["provider"] == "rules":
            text.append(" · offline, no key needed", style="dim")
        elif key and key["available"]:
            text.append(f" · key from {key['source']}")
        else:
            text.append(f" · no API key: forge login --provider {advisor['provider']}", style="yellow")
    return text


def _cwd() -> Path | None:
    try:
        return Path.cwd().resolve()
    except OSError:  # the folder was deleted under the shell
        return None


def next_block(step: dict[str, Any]) -> Group:
    lines = [Text.assemble(("Next ", "bold"), ("➜ ", "bold green"), (step["command"], "bold"))]
    lines.append(Text(f"     {step['reason']}", style="dim"))
    lines.extend(Text(f"     or: {alternative}", style="dim") for alternative in step["alternatives"])
    if Path(step["run_in"]) != _cwd():
        lines.append(Text(f"     (in {step['run_in']})", style="dim"))
    return Group(*lines)


def pipeline_panel(pipeline: dict[str, Any]) -> Panel:
    """The stages of a `forge pipeline` project: each run, the CPT perplexity, the forgetting figure."""
    grid = Table.grid(padding=(0, 2))
    for stage in pipeline["stages"]:
        state = stage["state"]
        grid.add_row(stage["name"], stage["run_id"] or "–", Text(state, style=_STATE_STYLE.get(state, "")))
    ppl = pipeline.get("cpt_perplexity")
    if ppl and ppl.get("before") is not None and ppl.get("after") is not None:
        grid.add_row(
            "cpt", "held-out perplexity", f"{ppl['before']:.2f} -> {ppl['after']:.2f} ({ppl['examples']} chunks)"
        )
    forgetting = pipeline.get("forgetting")
    if forgetting and forgetting.get("message"):
        grid.add_row(
            "general", "forgetting", Text(forgetting["message"], style="yellow" if forgetting.get("forgot") else "")
        )
    if pipeline.get("step"):
        grid.add_row("next", "step", pipeline["step"])
    return Panel(grid, title="Pipeline (stages)", title_align="left", box=box.ROUNDED)


def render_status(report: dict[str, Any], console: Console) -> None:
    if not report["found"]:
        console.print(next_block(report["next"]), soft_wrap=True)
        return
    console.print(
        Text.assemble(("Forge project ", "bold"), (report["project"]["name"], "bold"), f"  {report['project_dir']}")
    )
    console.print(plan_panel(report))
    console.print(data_panel(report["data"], report["plan"]["valid"]))
    if report["runs"]:
        console.print(runs_table(report["runs"]))
    if report["exports"]:
        console.print(exports_table(report["exports"]))
    if report["eval"]:
        console.print(eval_table(report["eval"]))
    if report.get("pipeline"):
        console.print(pipeline_panel(report["pipeline"]))
    console.print(machine_line(report["hardware"], report["advisor"]))
    for note in report["notes"]:
        console.print(Text(f"note  {note}", style="yellow"))
    console.print(next_block(report["next"]), soft_wrap=True)
