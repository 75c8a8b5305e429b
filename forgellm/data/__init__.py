"""Data: streamed readers, format detection and recipes, quality study, and model-aware preparation."""
