"""The probe's checks and record without an engine: GPU machines' probe records (probes/*.json, in the format
runtime/probe.py prints, written from the figures of those GPUs and torch builds: no GPU runs here), the
in-container probe as a real subprocess, cgroup limits, and the container's figures as the plan sees them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.probe import cgroup_limits
from forgellm.runtime.probe_plan import container_hardware, project_runtime
from forgellm.runtime.probe_record import ContainerProbe, check_image_for_gpus, probe_path, require_image_serves

PROBES = Path(__file__).parent / "probes"


def recorded(name: str) -> ContainerProbe:
    return ContainerProbe.from_dict(json.loads((PROBES / f"{name}.json").read_text()))


def test_rtx5090_against_a_cu124_torch_is_a_mismatch_naming_blackwell():
    probe = recorded("rtx5090_torch_cu124")
    problems = check_image_for_gpus(probe)
    assert len(problems) == 1
    assert "RTX 5090" in problems[0] and "12.0" in problems[0] and "--arch blackwell" in problems[0]
    with pytest.raises(ForgeError) as raised:
        require_image_serves(probe)
    assert raised.value.code == ErrorCode.DOCKER_ARCH_MISMATCH
    assert raised.value.data["arch"] == "blackwell" and raised.value.data["capability"] == "12.0"
    assert "forge docker build --arch blackwell" in raised.value.fix


def test_h100_against_cu128_flags_is_fine():
    probe = recorded("h100_torch_cu128")
    assert check_image_for_gpus(probe) == []
    require_image_serves(probe)  # no error


def test_driver_cuda_older_than_torch_cuda_says_update_the_driver():
    probe = recorded("rtx4090_driver_cuda124_torch_cu128")
    problems = check_image_for_gpus(probe)
    assert len(problems) == 1 and "CUDA 12.4" in problems[0] and "CUDA 12.8" in problems[0]
    assert "update the NVIDIA driver (at least 570.26" in problems[0]
    with pytest.raises(ForgeError) as raised:
        require_image_serves(probe)
    assert raised.value.fix.startswith("Update the NVIDIA driver")


def test_gpus_the_container_does_not_see_and_a_cpu_torch_are_findings():
    probe = recorded("h100_torch_cu128")
    probe.container["hardware"]["gpus"], probe.container["torch"]["devices"] = [], []
    probe.gpu_note = "the Docker engine has no NVIDIA runtime"
    assert "the container sees none: the Docker engine has no NVIDIA runtime" in check_image_for_gpus(probe)[0]

    cpu_torch = recorded("h100_torch_cu128")
    cpu_torch.container["torch"].update(version="2.13.0+cpu", cuda=None, arch_flags=[], cuda_available=False)
    assert "forge:hopper (`forge docker build --arch hopper`)" in check_image_for_gpus(cpu_torch)[0]


def test_a_pre_ampere_gpu_is_sent_to_the_local_runtime():
    probe = recorded("h100_torch_cu128")
    probe.container["hardware"]["gpus"][0].update(name="NVIDIA GeForce GTX 1080", compute_capability="6.1")
    problems = check_image_for_gpus(probe)
    assert "GTX 1080" in problems[0] and "runtime: local" in problems[0]


def test_record_round_trip_under_forge_home(isolated_forge_home):
    probe = recorded("h100_torch_cu128")
    path = probe.save()
    assert path == probe_path("forge:probe-test") == isolated_forge_home / "docker/probes/forge_probe-test.json"
    assert ContainerProbe.load(path) == probe
    path.write_text('{"tag": "forge:probe-te')  # cut off
    assert ContainerProbe.load(path) is None


def test_in_container_probe_without_torch_prints_json_with_a_note():
    # torch made unimportable in the same interpreter: the probe still answers, exit 0, no traceback.
    code = (
        "import sys, runpy; sys.modules['torch'] = None; "
        "runpy.run_module('forgellm.runtime.probe', run_name='__main__')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    answer = json.loads(done.stdout)
    assert answer["torch"] is None and any("torch is not importable" in n for n in answer["notes"])
    assert answer["hardware"]["cpu_logical_cores"] >= 1 and answer["limits"]["cpu_affinity"] >= 1


def test_cgroup_limits_v2_and_v1(tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    limits = cgroup_limits(tmp_path)
    assert limits["memory_bytes"] == 1 << 30 and limits["cpus"] == 1.5
    (tmp_path / "memory.max").write_text("max\n")
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_limits(tmp_path)["memory_bytes"] is None and cgroup_limits(tmp_path)["cpus"] is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "cpu").mkdir()
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(9223372036854771712))  # v1's "no limit"
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_limits(v1)["memory_bytes"] is None and cgroup_limits(v1)["cpus"] == 2.0


def test_container_figures_take_its_gpus_and_limits(tmp_path):
    from forgellm.hardware.probe import probe_hardware

    cpu_machine = probe_hardware(tmp_path, nvml=_NoNvml())
    probe = recorded("h100_torch_cu128")
    probe.container["limits"] = {"memory_bytes": 16 << 30, "cpus": 3.5, "cpu_affinity": 32}
    seen = container_hardware(probe, cpu_machine)
    assert [g.name for g in seen.gpus] == ["NVIDIA H100 80GB HBM3"] and seen.gpus[0].arch == "hopper"
    assert seen.ram_total_bytes == 16 << 30 and seen.cpu_logical_cores == 4 and seen.bf16.gpu
    assert seen.disk_path == cpu_machine.disk_path and seen.driver_version == "570.124.06"
    assert seen.source.startswith("`forge docker probe` of forge:probe-test (image sha256:abab")


class _NoNvml:
    def nvmlInit(self):
        raise RuntimeError("no driver")


def test_runtime_of_a_config_without_the_field_is_auto():
    class WithRuntime:
        runtime = "local"

    assert project_runtime(object()) == "auto" and project_runtime(WithRuntime()) == "local"
