"""runtime: auto|docker against a real engine: an image holding another Forge, and a GPU machine whose
engine cannot pass GPUs (NVML answers as a host with one H100 would; no GPU here)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile

import pytest

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.choice import choose_runtime
from forgellm.runtime.images import IMAGE_ENV
from runtime.test_probe_engine import _OneH100

pytestmark = pytest.mark.slow


def _relabelled(base: str, tag: str, source: str) -> str:
    """``base`` with another io.forgellm.source label: an image built from another Forge."""
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        text = f'FROM {base}\nLABEL io.forgellm.source="{source}" org.opencontainers.image.version="0.0.9"\n'.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(text)
        tar.addfile(info, io.BytesIO(text))
    built = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=context.getvalue(), capture_output=True)
    assert built.returncode == 0, built.stderr.decode()
    return tag


def test_an_image_holding_another_forge_is_not_used(forge_image, monkeypatch):
    monkeypatch.setenv(IMAGE_ENV, _relabelled(forge_image, "forge-tests:older-forge", "0123456789abcdef"))
    auto = choose_runtime("auto", purpose="Training")
    assert auto.name == "local" and "Forge 0.0.9 built from other source" in auto.reason
    assert "forge docker build --arch cpu" in auto.reason
    with pytest.raises(ForgeError) as refused:
        choose_runtime("docker", purpose="Training")
    assert refused.value.code == ErrorCode.DOCKER_IMAGE_STALE and "forge docker build --arch cpu" in refused.value.fix
    monkeypatch.setenv(IMAGE_ENV, forge_image)  # the image this session built from this source is used
    assert choose_runtime("auto", purpose="Training").name == "docker"


def test_gpu_work_on_a_gpu_machine_needs_the_toolkit_and_cpu_work_does_not(forge_image, monkeypatch, tmp_path):
    import forgellm.hardware.probe as probe

    real = probe.probe_hardware
    monkeypatch.setattr(probe, "probe_hardware", lambda *args, **kwargs: real(tmp_path, nvml=_OneH100()))
    monkeypatch.setenv(IMAGE_ENV, forge_image)
    auto = choose_runtime("auto", purpose="Training")
    assert auto.name == "local" and "NVIDIA runtime" in auto.reason
    with pytest.raises(ForgeError) as refused:
        choose_runtime("docker", purpose="Training")
    assert refused.value.code == ErrorCode.DOCKER_GPU_UNAVAILABLE and "nvidia-ctk" in refused.value.fix
    preparing = choose_runtime("docker", purpose="Preparing the data", gpu_work=False)
    assert preparing.name == "docker" and not preparing.gpus
    monkeypatch.delenv(IMAGE_ENV)
    missing = choose_runtime("auto", purpose="Training")  # this machine's tag, forge:hopper, is not built
    assert missing.name == "local" and "forge:hopper" in missing.reason and "--arch hopper" in missing.reason
    assert json.dumps(missing.record())  # what runtime.json keeps
