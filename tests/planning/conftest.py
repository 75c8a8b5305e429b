"""Fixtures of the planning tests: machines, network mode, shared data, the advisor test double."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from planning_support import SHARED_DATA, ScriptedAdvisor, make_gpu, make_hardware

from forgellm.hardware.probe import HardwareInfo


@pytest.fixture
def cpu_machine() -> HardwareInfo:
    """Like the development machines: 2 cores, no GPU, fp32."""
    return make_hardware()


@pytest.fixture
def ampere_24gb() -> HardwareInfo:
    return make_hardware((make_gpu("NVIDIA GeForce RTX 3090", 24, (8, 6)),), cores=8)


@pytest.fixture
def turing_4gb() -> HardwareInfo:
    return make_hardware((make_gpu("NVIDIA GeForce GTX 1650", 4, (7, 5)),), cores=4)


@pytest.fixture
def online(monkeypatch):
    """Planning as with a network: hub models are candidates (nothing is downloaded by planning)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FORGE_OFFLINE", raising=False)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data sets are not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def scripted() -> Callable[..., ScriptedAdvisor]:
    return ScriptedAdvisor
