from __future__ import annotations

import json
import stat

import pytest

from forgellm.config import settings
from forgellm.errors import ForgeError


def test_forge_home_from_env(isolated_forge_home):
    assert settings.forge_home() == isolated_forge_home
    assert settings.credentials_path().parent == isolated_forge_home
    assert settings.model_cache_dir() == isolated_forge_home / "models"


def test_cache_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("FORGE_CACHE_DIR", str(tmp_path / "c"))
    assert settings.model_cache_dir() == tmp_path / "c"


def test_store_key_mode_0600_and_lookup():
    path = settings.store_api_key("gemini", "  AIza-test-123  ")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"gemini": "AIza-test-123"}
    assert settings.api_key("gemini") == "AIza-test-123"
    assert settings.key_status("gemini").to_dict() == {
        "provider": "gemini",
        "available": True,
        "source": "credentials file",
    }
    assert settings.key_status("openai").available is False


def test_environment_wins_over_file(monkeypatch):
    settings.store_api_key("openai", "sk-file")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert settings.api_key("openai") == "sk-env"
    assert settings.key_status("openai").source == "OPENAI_API_KEY"


def test_status_never_contains_the_key():
    settings.store_api_key("gemini", "AIza-very-secret")
    assert "AIza-very-secret" not in json.dumps(settings.key_status("gemini").to_dict())


def test_remove_key_keeps_others():
    settings.store_api_key("gemini", "g")
    settings.store_api_key("openai", "o")
    assert settings.remove_api_key("gemini") is True
    assert settings.remove_api_key("gemini") is False
    assert settings.api_key("gemini") is None and settings.api_key("openai") == "o"


def test_loose_permissions_are_tightened():
    path = settings.store_api_key("gemini", "g")
    path.chmod(0o644)
    assert settings.api_key("gemini") == "g"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["", "   ", "two words"])
def test_bad_keys_refused(bad):
    with pytest.raises(ForgeError):
        settings.store_api_key("gemini", bad)
    assert not settings.credentials_path().exists()


def test_unknown_provider():
    with pytest.raises(ForgeError, match="Unknown provider"):
        settings.store_api_key("anthropic", "k")


def test_corrupt_credentials_file_gives_fix():
    path = settings.credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.raises(ForgeError) as caught:
        settings.api_key("gemini")
    assert "forge login" in caught.value.fix


def test_offline_mode(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert settings.offline_mode() is False
    monkeypatch.setenv("FORGE_OFFLINE", "1")
    assert settings.offline_mode() is True
