from __future__ import annotations

import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest

from advisor.llm_server import LocalLLMServer, why_no_server
from advisor.sandbox_support import make_job


@pytest.fixture
def job(tmp_path):
    """A fresh working folder, one CSV input, and a function running a script text on them."""
    return make_job(tmp_path)


# The Docker variants are `slow` together (~40 s: an engine, an image, a container per script):
# `make test` runs them, `make test-fast` does not.
DOCKER = pytest.param("docker", marks=pytest.mark.slow)


@pytest.fixture(params=["bubblewrap", DOCKER])
def sandbox_job(request, tmp_path):
    """``job`` in each sandbox: bubblewrap, and Docker with a real engine (see ``docker_engine``)."""
    if request.param == "bubblewrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (`bwrap`) is not installed: `apt-get install bubblewrap`")
    if request.param == "docker":
        from docker_support import use_docker_host

        use_docker_host(request.getfixturevalue("monkeypatch"), request.getfixturevalue("docker_engine").host)
    return make_job(tmp_path, runtime=request.param)


@pytest.fixture(scope="session")
def docker_engine(docker_host):
    """The session's Docker engine (``docker_host``) with Forge's sandbox image built by Forge itself,
    as for a user whose engine has never seen it."""
    from docker_support import engine_env

    from forgellm.advisor import sandbox_image

    with engine_env(docker_host.host):
        tag = sandbox_image.image_tag()
        before = subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
        started = time.monotonic()
        image = sandbox_image.ensure_image()
        built = None if before else time.monotonic() - started
    yield SimpleNamespace(host=docker_host.host, image=image, built=built)


@pytest.fixture(scope="session")
def llm_server():
    """A real llama.cpp OpenAI-compatible server (xllamacpp) with the bundled SmolLM2-135M GGUF on
    127.0.0.1, for the session: 4,096 tokens of context, answers capped at 256 tokens, two threads."""
    why = why_no_server()
    if why is not None:
        pytest.skip(why)
    with LocalLLMServer(context=4096, max_tokens=256, threads=2) as server:
        yield server
