"""`forge inference`: chat with the fine-tuned model in the terminal, or answer one --prompt."""

from __future__ import annotations

import contextlib
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from forgellm.cli.app import app
from forgellm.cli.output import console, err_console, progress_steps

if TYPE_CHECKING:
    from forgellm.config.schema import ForgeConfig
    from forgellm.inference.chat_session import ChatSession
    from forgellm.inference.engines import Generation, InferenceEngine


class EngineChoice(StrEnum):
    auto = "auto"
    transformers = "transformers"
    llama_cpp = "llama.cpp"


@app.command()
def inference(
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="export | run | base | PATH (model folder, LoRA adapter, export folder or .gguf). "
        "Default: the newest export, else the newest training run, else the base model.",
    ),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Answer this one message, print it and exit."),
    system: str | None = typer.Option(None, "--system", help="System prompt (default: the one forge.yaml sets)."),
    compare: bool = typer.Option(False, "--compare", help="Show the base model's answer beside the fine-tuned one."),
    engine: EngineChoice = typer.Option(
        EngineChoice.auto, "--engine", help="auto: transformers for model folders, llama.cpp for a .gguf."
    ),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest answer, in tokens."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy: the same answer each time."),
    project: Path = typer.Option(Path("."), "--project", "-C", help="The project folder (holds forge.yaml)."),
) -> None:
    """Talk to your model: an interactive chat (/help inside), or one answer with --prompt."""
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.inference.chat_session import session_for
    from forgellm.inference.model_choice import choose_model, open_compare_engines, open_engine
    from forgellm.project import find_project

    if prompt is not None and not prompt.strip():
        raise ForgeError(
            "--prompt is empty.", fix='Give the message to answer, e.g. --prompt "Hello".', code=ErrorCode.USAGE_INVALID
        )
    root = find_project(project)
    config = _project_config(root, model)  # read once, handed to the model choice
    with progress_steps() as step:
        choice = choose_model(root, model, engine=engine.value, progress=step, config=config)
        engines = (
            list(open_compare_engines(root, choice, engine.value, step, config=config))
            if compare
            else [open_engine(choice, engine.value, step)]
        )
    if choice.note:
        err_console.print(f"[dim]{escape(choice.note)}[/]", soft_wrap=True)
    for label, loaded in zip(("Base", "Fine-tuned") if compare else ("Model",), engines, strict=False):
        err_console.print(f"{label}: [bold]{escape(loaded.label)}[/]", soft_wrap=True)
    session = session_for(engines, system)
    limits = (max_new_tokens, temperature)
    if prompt is not None:
        _answer(engines, session.messages, prompt, limits, prefix="")  # stdout: the answer alone
        return
    _chat(engines, session, limits)


def _project_config(root: Path | None, model: str | None) -> ForgeConfig | None:
    """forge.yaml, when the model choice may need it: with --model naming weights (a .gguf, a folder), an
    invalid forge.yaml is no reason to refuse; the choice reads it itself if that model needs it."""
    from forgellm.errors import ForgeError
    from forgellm.project import load_project

    if root is None:
        return None
    try:
        return load_project(root)[1]
    except ForgeError:
        if model is None:
            raise
        return None


def _chat(engines: list[InferenceEngine], session: ChatSession, limits: tuple[int, float]) -> None:
    from forgellm.cli.failure import error_label
    from forgellm.errors import ForgeError

    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    err_console.print("[dim]Type a message. /help for commands; /exit or Ctrl-D to leave.[/]")
    while True:
        try:
            line = input("You> ")
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt: leave quietly
            console.print("\nBye.")
            return
        result = session.command(line)
        if result is not None:
            console.print(result.message, markup=False, soft_wrap=True)
            if result.exit:
                return
            continue
        text = session.message_text(line)
        if not text:
            continue
        try:
            answers = _answer(engines, session.messages, text, limits)
        except ForgeError as exc:  # e.g. a conversation longer than the context: say so, keep chatting
            err_console.print(f"{error_label(exc)} {escape(exc.message)}", soft_wrap=True)
            if exc.fix:
                err_console.print(f"[bold]Fix:[/] {escape(exc.fix)}", soft_wrap=True)
            continue
        except KeyboardInterrupt:  # Ctrl-C while answering stops the answer, not the chat
            err_console.print("\n[yellow]Stopped.[/] The unfinished answer is not kept.")
            continue
        session.record(text, answers)


def _answer(
    engines: list[InferenceEngine],
    messages: Any,
    text: str,
    limits: tuple[int, float],
    prefix: str = "[bold]Model>[/] ",
) -> list[str]:
    """One answer per engine: streamed after `Model> ` for one model, side by side for --compare."""
    max_new_tokens, temperature = limits
    if len(engines) == 1:
        engine = engines[0]
        if prefix:
            console.print(prefix, end="")
        for piece in engine.stream(messages(text, 0), max_new_tokens, temperature):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        record = engine.last
        assert record is not None, "a finished stream leaves its record"
        err_console.print(_footer(record), soft_wrap=True)
        return [record.text]
    from forgellm.inference.engines import generate

    records = []
    for lane, engine in enumerate(engines):
        with err_console.status(f"{engine.label} is answering …"):
            records.append(generate(engine, messages(text, lane), max_new_tokens, temperature))
    _side_by_side(engines, records)
    return [record.text for record in records]


def _footer(record: Generation) -> str:
    line = f"[dim]{record.tokens} tokens · {record.tokens_per_second:.1f} tokens/s · {record.seconds:.1f} s[/]"
    if not record.stopped_at_end_of_turn:
        line += "  [yellow]stopped at the token limit (no end-of-turn); --max-new-tokens raises it[/]"
    return line


def _side_by_side(engines: list[InferenceEngine], records: list[Generation]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_lines=True, expand=True)
    for title, engine in zip(("Base", "Fine-tuned"), engines, strict=True):
        table.add_column(Text(f"{title}: {engine.label}", style="bold"), ratio=1, overflow="fold")
    table.add_row(*(Text(record.text.strip() or "(no text)") for record in records))
    table.add_row(*(Text.from_markup(_footer(record)) for record in records))
    console.print(table)
