"""Thin typer commands: parse, call one library function, render the result with rich."""
