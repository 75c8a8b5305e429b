"""Where an API key may go: a stored or environment key belongs to its provider's own host over https,
to this machine (loopback), or to an address the user allowed with `forge login --base-url URL`. A
forge.yaml (shared, downloaded) or a FORGE_ADVISOR__BASE_URL that names any other address gets no key.

The allowed addresses live beside the credentials, under FORGE_HOME (0600): user state, never a project's.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from urllib.parse import urlsplit

from forgellm.config.settings import forge_home

# The providers' own API hosts: their keys go there over https without asking.
PROVIDER_HOSTS: dict[str, tuple[str, ...]] = {
    "gemini": ("generativelanguage.googleapis.com",),
    "openai": ("api.openai.com",),
}


def allowed_path() -> Path:
    return forge_home() / "key-hosts.json"


def origin(url: str) -> str:
    """scheme://host[:port], lower-cased: what an allowance names (a path on the same server is the same)."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{parts.port}" if parts.port else "")


def allowed_origins(provider: str) -> list[str]:
    try:
        data = json.loads(allowed_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    origins = data.get(provider, []) if isinstance(data, dict) else []
    return [o for o in origins if isinstance(o, str)]


def allow_origin(provider: str, url: str) -> str:
    """Let `provider`'s key go to `url`'s origin from now on (`forge login --base-url URL`)."""
    from forgellm.files import atomic_write_text

    path = allowed_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    wanted = origin(url)
    known = data.get(provider) if isinstance(data.get(provider), list) else []
    data[provider] = sorted({*(o for o in known if isinstance(o, str)), wanted})
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)
    return wanted


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_refusal(provider: str, url: str | None) -> str | None:
    """Why `provider`'s key must not be sent to `url`, or None when it may (None url: the provider's own)."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    if _is_loopback(host) or origin(url) in allowed_origins(provider):
        return None
    if parts.scheme.lower() == "https" and host in PROVIDER_HOSTS.get(provider, ()):
        return None
    own = ", ".join(f"https://{h}" for h in PROVIDER_HOSTS.get(provider, ()))
    return (
        f"{origin(url)} is not {provider}'s own API ({own}), this machine, or an address you allowed"
        + (" (and it is plain http: anyone on the way could read the key)" if parts.scheme.lower() == "http" else "")
    )
