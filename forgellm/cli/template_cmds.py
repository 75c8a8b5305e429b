"""`forge template`: see exactly how a conversation is rendered and which tokens carry the loss."""

from __future__ import annotations

from pathlib import Path

import typer

from forgellm.cli.app import app
from forgellm.cli.output import console, print_json, progress_steps

SAMPLE = [
    {"role": "user", "content": "My order hasn't arrived yet. What can I do?"},
    {
        "role": "assistant",
        "content": "I'm sorry about the delay! Please share your order number and I'll check it.",
    },
]


@app.command()
def template(
    model: str | None = typer.Option(
        None, help="Model reference (default: model.ref of forge.yaml, else smollm2-135m)."
    ),
    name: str | None = typer.Option(
        None, "--template", help="Template: auto, tokenizer, chatml, llama3, ... (default: forge.yaml)."
    ),
    messages: Path | None = typer.Option(
        None, help='A .jsonl file of {"messages": [...]} rows, or a .json conversation.'
    ),
    row: int = typer.Option(1, min=1, help="Which row of a .jsonl file (1-based)."),
    system: str | None = typer.Option(None, help="System prompt to use when the conversation has none."),
    as_json: bool = typer.Option(False, "--json", help="Print text, ids and labels as JSON."),
) -> None:
    """Render a conversation with the model's chat template and highlight the tokens it learns from."""
    from forgellm.config.schema import ChatTemplateSection
    from forgellm.models.loading import chat_setup
    from forgellm.project import find_project
    from forgellm.templates.preview import preview_conversation, read_conversation

    project = find_project(".")
    settings, ref = ChatTemplateSection(), "smollm2-135m"
    if project is not None:
        from forgellm.config.io import load_config

        config = load_config(project).config
        settings, ref = config.model.chat_template, config.model.ref
    overrides = {k: v for k, v in (("name", name), ("system_prompt", system)) if v is not None}
    settings = ChatTemplateSection.model_validate({**settings.model_dump(), **overrides})
    with progress_steps(enabled=not as_json) as progress:
        setup = chat_setup(model or ref, settings, base_dir=project or Path("."), progress=progress)
    conversation = read_conversation(messages, row) if messages else SAMPLE
    preview = preview_conversation(setup.chat_format, setup.tokenizer, conversation)
    if as_json:
        print_json(
            {
                "model": model or ref,
                "model_dir": str(setup.model_dir),
                **preview.to_dict(),
                "warnings": setup.warnings,
            }
        )
        return
    _render(preview, model or ref, setup.warnings)


def _render(preview, ref: str, warnings: list[str]) -> None:
    from rich.panel import Panel
    from rich.text import Text

    text = Text()
    cursor = 0
    for start, end in preview.trained_spans:
        text.append(preview.text[cursor:start], style="dim")
        text.append(preview.text[start:end], style="bold green")
        cursor = end
    text.append(preview.text[cursor:], style="dim")
    console.print(Panel(text, title=f"{ref} — template '{preview.template}'", subtitle="green = trained (loss)"))
    console.print(
        f"Tokens: {len(preview.input_ids)} in all, {preview.trained_tokens} trained "
        "(assistant answers and their end-of-turn token)."
    )
    console.print(f"Stops at: {', '.join(repr(s) for s in preview.stop_strings)}")
    console.print("Generation prompt (what the model sees at inference):")
    console.print(Text(preview.generation_prompt, style="cyan"))
    for warning in warnings:
        console.print(f"[yellow]warning[/] {warning}")
