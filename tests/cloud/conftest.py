from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sky_home(tmp_path) -> Path:
    """HOME of the SkyPilot subprocesses: an empty ~/.sky (no catalogs, no credentials, no clusters)."""
    home = tmp_path / "home"
    home.mkdir()
    return home
