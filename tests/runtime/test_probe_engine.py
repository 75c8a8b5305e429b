"""`forge docker probe` and `forge plan` on its figures against a real Docker engine and Forge's CPU image
(``forge_image``); the failures (no engine, no image) through the installed console script. GPU passthrough
cannot run here (no GPU, no NVIDIA toolkit): tests/runtime/test_probe_rules.py checks the GPU rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from stage_support import planned

from forgellm.advisor.rules import RulesAdvisor
from forgellm.errors import ErrorCode, ForgeError
from forgellm.planning import make_plan
from forgellm.runtime.images import IMAGE_ENV
from forgellm.runtime.probe_record import ContainerProbe, check_image_for_gpus, probe_path, require_image_serves
from forgellm.runtime.probe_run import checked_probe, probe_image

PROBES = Path(__file__).parent / "probes"


def forge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The console script as a user runs it (its entry point, in a subprocess)."""
    code = "from forgellm.cli.main import run; run()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {}), "COLUMNS": "200"})  # fmt: skip


@pytest.mark.slow
def test_probe_of_the_cpu_image_sees_torch_cpu_no_gpus_and_its_limits(forge_image):
    probe = probe_image(forge_image, mem_limit="1g", nano_cpus=1_000_000_000)
    assert probe.torch["version"] == "2.13.0+cpu" and probe.torch["cuda"] is None
    assert probe.torch["arch_flags"] == [] and probe.gpus == [] and not probe.gpus_requested
    assert probe.hardware["cpu_logical_cores"] >= 1 and probe.hardware["ram_total_bytes"] > 1 << 30
    assert probe.limits["memory_bytes"] == 1 << 30 and probe.limits["cpus"] == 1.0
    assert probe.image_id.startswith("sha256:") and probe.made_at
    assert ContainerProbe.load(probe_path(forge_image)) == probe  # saved under FORGE_HOME
    assert _probe_containers() == []  # removed after


@pytest.mark.slow
def test_probe_command_prints_what_the_container_sees(forge_image):
    done = forge("docker", "probe", "--image", forge_image)
    assert done.returncode == 0, done.stderr
    assert "2.13.0+cpu (CPU build); arch flags: none" in done.stdout and "GPUs     none" in done.stdout
    as_json = forge("docker", "probe", "--image", forge_image, "--json")
    record = json.loads(as_json.stdout)
    assert record["problems"] == [] and record["tag"] == forge_image and record["container"]["torch"]["cuda"] is None


class _OneH100:
    """NVML as a host with one H100 answers it (no GPU here): what probe_image decides from the host's GPUs."""

    def __getattr__(self, name):
        answers = {"nvmlSystemGetDriverVersion": "570.124.06", "nvmlSystemGetCudaDriverVersion": 12080,
                   "nvmlDeviceGetCount": 1, "nvmlDeviceGetHandleByIndex": 0, "nvmlDeviceGetName": "NVIDIA H100",
                   "nvmlDeviceGetMemoryInfo": SimpleNamespace(total=80 << 30, free=79 << 30),
                   "nvmlDeviceGetCudaComputeCapability": (9, 0)}  # fmt: skip
        return lambda *args: answers.get(name)


def test_an_engine_without_the_nvidia_toolkit_is_said_and_found(forge_image, tmp_path):
    from forgellm.hardware.probe import probe_hardware

    host = probe_hardware(tmp_path, nvml=_OneH100())
    probe = probe_image(forge_image, host=host, save=False)
    assert not probe.gpus_requested and "no NVIDIA runtime" in probe.gpu_note and "nvidia-ctk" in probe.gpu_note
    assert probe.host_gpus == [{"index": 0, "name": "NVIDIA H100", "compute_capability": "9.0"}]
    problems = check_image_for_gpus(probe)
    assert problems and "1 NVIDIA GPU(s) but the container sees none" in problems[0]
    with pytest.raises(ForgeError) as raised:
        require_image_serves(probe)
    assert raised.value.code == ErrorCode.DOCKER_GPU_UNAVAILABLE and "nvidia-container-toolkit" in raised.value.fix


def test_probe_of_a_missing_image_offers_the_build_command(docker_host):
    done = forge("docker", "probe", "--image", "forge-missing:nothing")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "docker-image-missing" in done.stderr and "does not exist" in done.stderr
    assert "forge docker build --arch auto" in done.stderr
    done = forge("docker", "probe", "--arch", "ampere", env={"DOCKER_HOST": docker_host.host})
    assert done.returncode == 1 and "forge docker build --arch ampere" in done.stderr  # forge:ampere is not built


def test_probe_without_an_engine_says_so(tmp_path):
    done = forge("docker", "probe", "--arch", "cpu", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "docker-unavailable" in done.stderr and "no Docker engine answers" in done.stderr
    assert "Install Docker" in done.stderr


def _gpu_probe_of(image: str, image_id: str) -> ContainerProbe:
    """The H100 machine's record, as if made from ``image``: a GPU this host does not have."""
    probe = ContainerProbe.from_dict(json.loads((PROBES / "h100_torch_cu128.json").read_text()))
    probe.tag, probe.image_id = image, image_id
    probe.save()
    return probe


def _plan(root: Path):
    return make_plan(*planned(root), "Make a customer support bot", advisor=RulesAdvisor(), offline=False, dry_run=True)


def test_plan_uses_the_saved_probe_and_says_so(forge_image, tmp_path, monkeypatch):
    import docker

    image_id = docker.from_env().images.get(forge_image).id
    monkeypatch.setenv(IMAGE_ENV, forge_image)
    _gpu_probe_of(forge_image, image_id)
    hardware = _plan(tmp_path).config.hardware
    assert hardware.gpu_name == "NVIDIA H100 80GB HBM3" and hardware.gpu_arch == "hopper"
    assert hardware.vram_gb == 85.5
    source = f"Hardware from `forge docker probe` of {forge_image} (image {image_id[:19]}, 2026-12-07)"
    assert source in hardware.rationale


def test_plan_ignores_a_stale_probe_with_a_note(forge_image, tmp_path, monkeypatch):
    monkeypatch.setenv(IMAGE_ENV, forge_image)
    _gpu_probe_of(forge_image, "sha256:" + "0" * 64)  # made from an image the engine no longer has
    result = _plan(tmp_path)
    assert result.config.hardware.gpu_name is None and result.config.hardware.rationale.startswith("Probed:")
    assert any("was ignored" in w and "rebuilt" in w for w in result.warnings)


def test_plan_ignores_the_probe_when_no_engine_answers(tmp_path, monkeypatch):
    monkeypatch.setenv(IMAGE_ENV, "forge-probe:any")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    _gpu_probe_of("forge-probe:any", "sha256:" + "1" * 64)
    result = _plan(tmp_path / "project")
    assert result.config.hardware.gpu_name is None
    assert any("was not used" in w and "no Docker engine answers" in w for w in result.warnings)


@pytest.mark.slow
def test_checked_probe_reprobes_when_the_gpus_changed_and_stops_on_a_mismatch(forge_image):
    import docker

    client = docker.from_env()
    image_id = client.images.get(forge_image).id
    _gpu_probe_of(forge_image, image_id)  # made on an H100 machine: this one has no GPU, so probe again
    probe = checked_probe(forge_image, client)
    assert probe.host_gpus == [] and probe.gpus == [] and probe.made_at != "2026-12-07T02:00:00+00:00"
    assert ContainerProbe.load(probe_path(forge_image)) == probe
    probe.made_at = "saved"
    probe.save()
    assert checked_probe(forge_image, client).made_at == "saved"  # image and GPUs unchanged: the saved one

    mismatch = ContainerProbe.from_dict(json.loads((PROBES / "rtx5090_torch_cu124.json").read_text()))
    mismatch.tag, mismatch.image_id, mismatch.host_gpus = forge_image, image_id, []
    mismatch.save()
    with pytest.raises(ForgeError) as raised:
        checked_probe(forge_image, client)
    assert raised.value.code == ErrorCode.DOCKER_ARCH_MISMATCH and "--arch blackwell" in raised.value.fix


def _probe_containers() -> list:
    import docker

    return docker.from_env().containers.list(all=True, filters={"label": "forge.role=probe"})
