"""The image matrix, the arch-flag rule and the Dockerfile, without an engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest

from forgellm.runtime import context
from forgellm.runtime.images import (
    ARCHES,
    CPU,
    CU128,
    arch_for_capability,
    arch_for_machine,
    arches_of,
    serves,
    unserved,
)

# torch.cuda.get_arch_list() of real builds (torch 2.7+ cu128, and cu124 as LLaMA-Factory's image had it).
CU128_FLAGS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU124_FLAGS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


@pytest.mark.parametrize(
    ("flags", "capability", "runs"),
    [
        (CU128_FLAGS, "8.9", True),  # Ada runs sm_86 code: same major, higher minor
        (CU128_FLAGS, "12.0", True),  # RTX 5090
        (CU124_FLAGS, "12.0", False),  # LLaMA-Factory's cu12.4 image on an RTX 5090: the users' complaint
        (CU124_FLAGS, "10.0", False),  # B200
        (["sm_100"], "12.0", False),  # data-centre Blackwell code does not run on consumer Blackwell
        (["sm_90a"], "9.0", True),  # arch-specific code: exactly that GPU ...
        (["sm_90a"], "10.0", False),  # ... and no other
        (["compute_90"], "12.0", True),  # PTX is compiled by the driver for any newer GPU
        (["compute_90"], "8.9", False),  # but not for an older one
        (["sm_86"], "8.0", False),  # SASS never runs on a lower minor
        ([], "8.0", False),  # a CPU build serves no GPU
    ],
)
def test_serves_follows_cuda_binary_compatibility(flags, capability, runs):
    assert serves(flags, capability) is runs


def test_one_cuda_build_serves_the_four_gpu_tags_and_asserts_their_capabilities():
    gpu_tags = {arch.name for arch in arches_of(CU128)}
    assert gpu_tags == {"blackwell", "hopper", "ada", "ampere"}
    assert [arch.name for arch in arches_of(CPU)] == ["cpu"]
    for name in gpu_tags:  # the build's assertion covers every capability of every tag it serves
        assert set(ARCHES[name].capabilities) <= set(CU128.capabilities) | {"8.7"}
        assert not unserved(CU128_FLAGS, ARCHES[name].capabilities)
    assert unserved(CU124_FLAGS, CU128.capabilities) == ["10.0", "12.0"]
    assert CU128.cuda == "12.8"  # the first CUDA with sm_100/sm_120


@pytest.mark.parametrize(
    ("capability", "tag"),
    [("8.0", "ampere"), ("8.6", "ampere"), ("8.7", "ampere"), ("8.9", "ada"), ("9.0", "hopper"),
     ("10.0", "blackwell"), ("10.3", "blackwell"), ("12.0", "blackwell"), ("7.5", None), ("11.0", None)],
)  # fmt: skip
def test_a_gpu_maps_to_the_tag_of_its_family(capability, tag):
    arch = arch_for_capability(capability)
    assert (arch.name if arch else None) == tag


def test_a_machine_without_a_served_gpu_runs_the_cpu_image():
    assert arch_for_machine([]).name == "cpu"
    assert arch_for_machine(["7.5"]).name == "cpu"  # a T4: older than the images' GPUs
    assert arch_for_machine(["9.0", "9.0"]).tag == "forge:hopper"


# ---------------------------------------------------------------- the Dockerfile, checked as hadolint would
# (hadolint's binary is on no registry this machine reaches; these are the rules that matter here)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


@pytest.fixture(scope="module")
def dockerfile():
    return instructions(context.DOCKERFILE.read_text())


def stages(parsed):
    current: list = []
    result = [current]
    for keyword, rest in parsed:
        if keyword == "FROM":
            current = []
            result.append(current)
        current.append((keyword, rest))
    return result[1:]


def test_dockerfile_is_multi_stage_on_a_base_image_argument(dockerfile):
    assert dockerfile[0] == ("ARG", "BASE_IMAGE=python:3.11-slim-bookworm")
    froms = [rest for keyword, rest in dockerfile if keyword == "FROM"]
    assert len(froms) >= 3 and froms[0].startswith("${BASE_IMAGE}")
    assert not any(":latest" in rest for rest in froms)
    assert any("AS llama-build" in rest for rest in froms)  # llama.cpp's quantizer in a builder stage


def test_dockerfile_final_stage_runs_as_a_user_with_healthcheck_and_entrypoint(dockerfile):
    final = stages(dockerfile)[-1]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(keyword == "HEALTHCHECK" for keyword, _ in final)
    assert any(keyword == "ENTRYPOINT" and "forgellm.runtime.entrypoint" in rest for keyword, rest in final)
    assert any("forgellm.runtime.archcheck" in rest for keyword, rest in final if keyword == "RUN")


def test_dockerfile_pins_every_install_and_bakes_no_secret_or_cache(dockerfile):
    for keyword, rest in dockerfile:
        if keyword == "RUN" and "pip install" in rest:
            for command in re.findall(r"pip install[^;&]*", rest):
                assert "-c /build/constraints.txt" in command or "--no-deps" in command, command
        if keyword == "RUN" and "apt-get install" in rest:
            assert "--no-install-recommends" in rest
        if keyword in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)\s*=", rest, re.I), rest
        if keyword in ("ENV", "ARG") and "PIP_NO_CACHE_DIR" not in rest:
            assert "cache" not in rest.lower() or "/cache" in rest  # caches live in the mounted /cache
    assert not any(keyword == "VOLUME" for keyword, _ in dockerfile)  # an anonymous volume per run


def test_the_context_pins_this_install_and_adds_gpu_libraries_only_to_cuda_images():
    pins = context.constraints()
    assert all(re.fullmatch(r"[a-z0-9-]+==[^+\s]+", pin) for pin in pins)  # torch's +cpu label dropped
    assert any(pin.startswith("torch==") for pin in pins)
    assert not any(pin.startswith("forgellm==") for pin in pins)
    assert any(r.startswith("bitsandbytes") for r in context.requirements(CU128))
    assert not any(r.startswith("bitsandbytes") for r in context.requirements(CPU))
    assert not any("extra ==" in r for r in context.requirements(CPU))
    project = tomllib.loads(context.project_file("1.2.3"))
    assert project["project"]["scripts"]["forge"] == "forgellm.cli.main:run"
    names = {name for name, _ in context.package_files()}
    assert "runtime/docker/Dockerfile" in names and "cli/main.py" in names
    assert not any("__pycache__" in name for name in names)


def _module(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", name, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)  # fmt: skip


def test_archcheck_fails_a_build_whose_torch_cannot_run_the_tags_gpus():
    # This machine's torch is a CPU build: fine for forge:cpu, and no GPU tag may be built with it.
    fine = _module("forgellm.runtime.archcheck", env={"FORGE_REQUIRE_GPU_CAPABILITIES": ""})
    assert fine.returncode == 0, fine.stderr
    refused = _module("forgellm.runtime.archcheck", env={"FORGE_REQUIRE_GPU_CAPABILITIES": "9.0"})
    assert refused.returncode == 1
    assert "cannot run on compute capabilities 9.0" in refused.stderr


def test_a_gpu_image_without_a_visible_gpu_stops_at_the_entrypoint_with_the_fix():
    gpu_image = {"FORGE_REQUIRE_GPU_CAPABILITIES": "8.0 9.0", "FORGE_ALLOW_NO_GPU": ""}
    stopped = _module("forgellm.runtime.entrypoint", "echo", "trained", env=gpu_image)
    assert stopped.returncode == 3 and "trained" not in stopped.stdout
    assert "sees no NVIDIA GPU" in stopped.stderr and "--gpus all" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    allowed = _module("forgellm.runtime.entrypoint", "echo", "probed", env={**gpu_image, "FORGE_ALLOW_NO_GPU": "1"})
    assert allowed.returncode == 0 and allowed.stdout.strip() == "probed"
    cpu = _module("forgellm.runtime.entrypoint", "echo", "cpu", env={"FORGE_REQUIRE_GPU_CAPABILITIES": ""})
    assert cpu.stdout.strip() == "cpu"
    missing = _module("forgellm.runtime.entrypoint", "no-such-program", env={"FORGE_REQUIRE_GPU_CAPABILITIES": ""})
    assert missing.returncode == 127 and "cannot run 'no-such-program'" in missing.stderr
