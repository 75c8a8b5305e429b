"""Every test gets its own FORGE_HOME, model cache and Hugging Face cache: no test sees the user's state.

Every test also sees the same CPU features, whatever machine runs it: the planner decides precision (and so
the learning rate) from the CPU's bf16 instructions, so a suite that read the host's would pass on one
machine and fail on the next. FORGE_TEST_CPU picks the CPU the suite sees: `emulated-bf16` (default: AVX2,
no bf16 instructions, the common laptop and CI runner), `native-bf16` (AVX512-BF16) or `host` (this
machine's /proc/cpuinfo). `make test-cpus` runs the planning and pipeline tests under both fixed CPUs. A
test about the host itself carries the `host_cpu` marker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from tiny_project_support import _support_csv, tiny_causal_lm_dir, tiny_train_project  # noqa: F401

# FORGE_TEST_DOCKER_HOST: a running engine the Docker tests use instead of starting their own (development).
_FORGE_VARS_KEPT = {"FORGE_TEST_MODEL_CACHE", "FORGE_TEST_CPU", "FORGE_TEST_DOCKER_HOST", "FORGE_TEST_FORGE_IMAGE"}
_TEST_CPU = os.environ.get("FORGE_TEST_CPU", "emulated-bf16")
# Docker: only the tests that ask for an engine (these fixtures) see one; for every other test no engine
# answers, so `runtime: auto` cannot quietly move its work into a container of whatever image is there.
_DOCKER_FIXTURES = {"docker_host", "docker_engine", "forge_image"}
_REAL_DOCKER_HOST = os.environ.get("DOCKER_HOST")
_CPUINFO = None if _TEST_CPU == "host" else Path(__file__).parent / "cpus" / f"{_TEST_CPU}.cpuinfo"
if _CPUINFO is not None and not _CPUINFO.is_file():
    raise pytest.UsageError(f"FORGE_TEST_CPU={_TEST_CPU}: use emulated-bf16, native-bf16 or host")
# A shell starts a background job (`make test &`, nohup) with Ctrl-C ignored, and every process it starts
# inherits that: the tests that press Ctrl-C on a `forge` command would then wait for a process that cannot
# hear it. Python's own handler here resets to the default in each child, as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def isolated_forge_home(tmp_path_factory, monkeypatch, request):
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
    if _CPUINFO is not None and request.node.get_closest_marker("host_cpu") is None:
        monkeypatch.setenv("FORGE_CPUINFO", str(_CPUINFO))
    if _DOCKER_FIXTURES.intersection(request.fixturenames):
        from docker_support import use_docker_host

        use_docker_host(monkeypatch, request.getfixturevalue("docker_host").host)
    else:
        from docker_support import NO_DOCKER

        monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
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


@pytest.fixture(scope="session")
def docker_host():
    """A real Docker engine for the session: a private one started here (docker_support.PrivateEngine), or
    the engine named by FORGE_TEST_DOCKER_HOST, or the user's own. Skipped, with the reason, where none can
    be had. Tests that ask for it get DOCKER_HOST pointing at it (isolated_forge_home); session fixtures
    working with it set it for their own work (docker_support.engine_env)."""
    import shutil
    from types import SimpleNamespace

    from docker_support import PrivateEngine, engine_env, why_no_private_engine

    given = os.environ.get("FORGE_TEST_DOCKER_HOST")
    if given:
        yield SimpleNamespace(host=given)
        return
    why = why_no_private_engine()
    if why is not None:
        from forgellm.runtime.engine import engine_problem

        with engine_env(_REAL_DOCKER_HOST):
            usable = shutil.which("docker") is not None and engine_problem() is None
        if usable:  # the user's own engine
            yield SimpleNamespace(host=_REAL_DOCKER_HOST)
            return
        pytest.skip(why)
    engine = PrivateEngine(tmpfs_bytes=12 << 30)
    try:
        engine.start()
    except RuntimeError as exc:
        engine.stop()
        pytest.skip(f"dockerd is installed but cannot run here: {exc}")
    try:
        yield SimpleNamespace(host=engine.host)
    finally:
        engine.stop()
