"""User-wide state outside any project: FORGE_HOME, the model cache, and API credentials.

Keys come from the environment first, then from the credentials file (mode 0600 under FORGE_HOME).
They are never written into a project, forge.yaml, a log or a report.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forgellm.errors import ErrorCode, ForgeError

Provider = Literal["gemini", "openai"]
PROVIDERS: tuple[str, ...] = ("gemini", "openai")
KEY_ENV_VARS: dict[str, tuple[str, ...]] = {
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    "openai": ("OPENAI_API_KEY",),
}
_TRUE = {"1", "true", "yes", "on"}


def forge_home() -> Path:
    """FORGE_HOME, else the platform's user data folder for Forge."""
    configured = os.environ.get("FORGE_HOME")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("forge", appauthor=False))


def model_cache_dir() -> Path:
    """Where converted and downloaded models live: FORGE_CACHE_DIR, else FORGE_HOME/models."""
    configured = os.environ.get("FORGE_CACHE_DIR")
    return Path(configured).expanduser() if configured else forge_home() / "models"


def offline_mode() -> bool:
    """True when the user asked for no network (FORGE_OFFLINE or the hub's own HF_HUB_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("FORGE_OFFLINE", "HF_HUB_OFFLINE"))


def credentials_path() -> Path:
    return forge_home() / "credentials.json"


def _check_provider(provider: str) -> None:
    if provider not in PROVIDERS:
        raise ForgeError(
            f"Unknown provider '{provider}'.",
            fix=f"Use one of: {', '.join(PROVIDERS)}.",
            code=ErrorCode.ADVISOR_UNKNOWN,
        )


def _read_credentials() -> dict[str, str]:
    path = credentials_path()
    if not path.exists():
        return {}
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Someone loosened the permissions: tighten them rather than keep a readable secret around.
        path.chmod(0o600)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ForgeError(
            f"The credentials file {path} is unreadable ({exc}).",
            fix=f"Delete it and store your key again with `forge login`: rm {path}",
            code=ErrorCode.CREDENTIALS_INVALID,
        ) from None
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _write_credentials(data: dict[str, str]) -> Path:
    from forgellm.files import atomic_write_text

    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)
    return path


def store_api_key(provider: str, key: str) -> Path:
    """Save a key for `provider` in the credentials file (0600). Returns the file's path."""
    _check_provider(provider)
    key = key.strip()
    if not key:
        raise ForgeError(
            "The API key is empty.",
            fix="Paste the whole key when asked, or pass --api-key KEY.",
            code=ErrorCode.CREDENTIALS_INVALID,
        )
    if any(ch.isspace() for ch in key):
        raise ForgeError(
            "The API key contains spaces or line breaks.",
            fix="Copy the key again, without spaces.",
            code=ErrorCode.CREDENTIALS_INVALID,
        )
    data = _read_credentials()
    data[provider] = key
    return _write_credentials(data)


def remove_api_key(provider: str) -> bool:
    """Forget the stored key of `provider`; True when there was one."""
    _check_provider(provider)
    data = _read_credentials()
    if provider not in data:
        return False
    del data[provider]
    _write_credentials(data)
    return True


@dataclass(frozen=True)
class KeyStatus:
    """Whether a key is available and from where — never the key itself."""

    provider: str
    available: bool
    source: str | None  # the environment variable's name, or "credentials file"

    def to_dict(self) -> dict[str, object]:
        return {"provider": self.provider, "available": self.available, "source": self.source}


def api_key(provider: str) -> str | None:
    """The key to use for `provider`: environment first, then the credentials file."""
    _check_provider(provider)
    for variable in KEY_ENV_VARS[provider]:
        if os.environ.get(variable, "").strip():
            return os.environ[variable].strip()
    return _read_credentials().get(provider)


def key_status(provider: str) -> KeyStatus:
    _check_provider(provider)
    for variable in KEY_ENV_VARS[provider]:
        if os.environ.get(variable, "").strip():
            return KeyStatus(provider, True, variable)
    if provider in _read_credentials():
        return KeyStatus(provider, True, "credentials file")
    return KeyStatus(provider, False, None)
