"""Forge: fine-tune a language model from your own data and a goal in plain words."""

__version__ = "0.1.0"
