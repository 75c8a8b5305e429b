"""Every test gets its own FORGE_HOME, model cache and Hugging Face cache: no test sees the user's state."""

from __future__ import annotations

import pytest
from tiny_project_support import _support_csv, tiny_causal_lm_dir, tiny_train_project  # noqa: F401

_FORGE_VARS_KEPT = {"FORGE_TEST_MODEL_CACHE"}


@pytest.fixture(autouse=True)
def isolated_forge_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("forge-home")
    for name in list(__import__("os").environ):
        if (name.startswith("FORGE_") and name not in _FORGE_VARS_KEPT) or name in (
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "OPENAI_API_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FORGE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    return home


@pytest.fixture(scope="session")
def _bundled_model_cache(tmp_path_factory):
    """Convert the bundled SmolLM2 GGUF once per test session (~30 s) into a shared cache."""
    import os

    from forgellm.models.resolve import materialize, resolve_model

    cache = tmp_path_factory.mktemp("model-cache")
    previous = os.environ.get("FORGE_CACHE_DIR")
    os.environ["FORGE_CACHE_DIR"] = str(cache)
    try:
        folder = materialize(resolve_model("smollm2-135m"))
    finally:
        if previous is None:
            os.environ.pop("FORGE_CACHE_DIR", None)
        else:
            os.environ["FORGE_CACHE_DIR"] = previous
    return cache, folder


@pytest.fixture
def bundled_model_dir(_bundled_model_cache, monkeypatch):
    """The converted SmolLM2-135M-Instruct folder; FORGE_CACHE_DIR points at its cache for this test."""
    cache, folder = _bundled_model_cache
    monkeypatch.setenv("FORGE_CACHE_DIR", str(cache))
    return folder
