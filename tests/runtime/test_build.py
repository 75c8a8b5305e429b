"""`forge docker build|status` against a real Docker engine (tests/docker_support.py): Forge's CPU image
built from the project's Dockerfile on a base made here, what it holds, and builds that fail or are
interrupted leaving no tag behind. The GPU variants cannot be built here (no registry for torch's CUDA
wheels, no GPU): their Dockerfile and arch rule are checked in test_images.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker_support import PrivateEngine, why_no_private_engine

from forgellm.errors import ErrorCode, ForgeError
from forgellm.runtime.context import forge_version, source_fingerprint
from runtime.image_support import BUILT

pytestmark = pytest.mark.slow


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout.strip()


FORGE = str(Path(sys.executable).with_name("forge"))  # the console script, as a user runs it


def forge_cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([FORGE, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})  # fmt: skip


def test_the_cpu_image_is_forge_from_this_source_pinned_non_root_and_without_secrets(forge_image):
    attrs = json.loads(docker("image", "inspect", forge_image))[0]
    labels, config = attrs["Config"]["Labels"], attrs["Config"]
    if os.environ.get("FORGE_TEST_FORGE_IMAGE") is None:  # built by this session, from this source
        assert labels["io.forgellm.source"] == source_fingerprint()
        assert labels["io.forgellm.built-from"].startswith("wheelhouse ")
        assert labels["io.forgellm.base-image"].startswith("forge-base:bookworm-")
        assert BUILT["result"].tags == ["forge:cpu"]
        print(f"\nforge:cpu built in {BUILT['seconds']:.0f} s")
    assert labels["io.forgellm.variant"] == "cpu"
    assert config["User"] == "forge" and config["Healthcheck"]["Test"][-1] == "forgellm.runtime.health"
    assert not any(name.split("=")[0].endswith(("_KEY", "_TOKEN")) for name in config["Env"])
    assert "HF_HOME=/cache/huggingface" in config["Env"]
    inside = docker("run", "--rm", "--network", "none", forge_image, "sh", "-c",
                    "id -u; forge --version; python -m forgellm.runtime.archcheck; "
                    "python -c 'import llama_cpp, peft, transformers; print(llama_cpp.__version__)'")  # fmt: skip
    uid, version, torch_line, llama = inside.splitlines()[-4:]
    assert uid == "1000"
    assert version == f"forge {forge_version()}"
    assert torch_line.startswith("torch 2.13.0+cpu, CUDA none")
    from importlib.metadata import version as installed

    assert llama == installed("llama_cpp_python")  # llama.cpp's quantizer, from the builder stage


def test_forge_docker_status_lists_the_image_and_what_it_was_built_from(forge_image):
    shown = forge_cli("docker", "status")
    assert shown.returncode == 0, shown.stderr
    assert "forge:cpu" in shown.stdout and "This machine runs forge:cpu" in shown.stdout
    report = json.loads(forge_cli("docker", "status", "--json").stdout)
    assert report["machine_arch"] == "cpu" and report["engine"]
    mine = next(image for image in report["images"] if "forge:cpu" in image["tags"])
    assert mine["variant"] == "cpu" and mine["forge_version"] == forge_version()


def test_a_base_the_engine_cannot_pull_stops_before_building_with_the_local_base_fix(docker_host, tmp_path):
    from forgellm.runtime.build import build_image
    from forgellm.runtime.images import ARCHES

    with pytest.raises(ForgeError) as failure:
        build_image(ARCHES["cpu"], base_image="forge-tests/no-such-base:1", log_dir=tmp_path)
    assert failure.value.code == ErrorCode.DOCKER_BUILD_FAILED
    assert "cannot be pulled" in failure.value.message and "--local-base" in failure.value.fix


def test_an_interrupted_build_tags_nothing_and_leaves_no_container(forge_image, tmp_path):
    wheels = BUILT.get("wheels")
    if wheels is None:
        pytest.skip("needs the session's own build (FORGE_TEST_FORGE_IMAGE names a ready image)")
    before_id = docker("image", "inspect", "--format", "{{.Id}}", "forge:cpu")
    containers_before = set(docker("ps", "-aq").split())
    # Output to files, not pipes: the test waits for the process itself, never for a pipe some other process
    # might hold open. PYTHONFAULTHANDLER: if the build ever hangs after Ctrl-C, SIGABRT prints every thread's
    # stack into err.txt, and the failure shows where it hung.
    out_path, err_path = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        build = subprocess.Popen(
            [FORGE, "docker", "build", "--arch", "cpu", "--local-base",
             "--wheels", str(wheels), "--no-cache"],
            stdout=out_file, stderr=err_file, text=True,
            env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
        )  # fmt: skip

    def output() -> str:
        return f"{out_path.read_text()[-2000:]}\n{err_path.read_text()[-6000:]}"

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and build.poll() is None:
        if set(docker("ps", "-q").split()) - containers_before:
            break  # the build runs a step in a container of its own
        time.sleep(0.2)
    if build.poll() is not None or time.monotonic() >= deadline:
        build.kill()
        build.wait()
        pytest.fail(f"the build never ran a step (exit {build.returncode}):\n{output()}")
    build.send_signal(signal.SIGINT)
    try:
        build.wait(timeout=60)
    except subprocess.TimeoutExpired:
        build.send_signal(signal.SIGABRT)  # faulthandler writes the stacks, then the process dies
        build.wait(timeout=30)
        pytest.fail(f"the build did not stop within 60 s of Ctrl-C; its output and stacks:\n{output()}")
    out, err = out_path.read_text(), err_path.read_text()
    assert build.returncode == 130, out + err
    assert "no image was tagged" in err and "Traceback" not in err
    assert docker("image", "inspect", "--format", "{{.Id}}", "forge:cpu") == before_id
    deadline = time.monotonic() + 60  # the engine cancels the build and removes its step's container
    while time.monotonic() < deadline and set(docker("ps", "-aq").split()) - containers_before:
        time.sleep(0.5)
    assert not set(docker("ps", "-aq").split()) - containers_before


@pytest.mark.skipif(why_no_private_engine() is not None, reason=str(why_no_private_engine()))
def test_a_build_on_a_full_disk_says_so_and_tags_nothing(tmp_path, monkeypatch):
    """An engine whose data root is a 64 MiB tmpfs receives a 200 MB context: ENOSPC during the build."""
    from forgellm.runtime.build import build_image
    from forgellm.runtime.images import ARCHES

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with (wheels / "big-1.0-py3-none-any.whl").open("wb") as big:
        big.write(os.urandom(1 << 20) * 200)
    engine = PrivateEngine(tmpfs_bytes=64 << 20)
    try:
        engine.start()
        monkeypatch.setenv("DOCKER_HOST", engine.host)
        subprocess.run(["docker", "-H", engine.host, "import", "-", "forge-tests/tiny-base:1"], input=b"\0" * 1024,
                       capture_output=True)  # fmt: skip
        # The smallest base there is: an empty image (a tar of two zero blocks), so the disk fills with the context.
        with pytest.raises(ForgeError) as failure:
            build_image(ARCHES["cpu"], base_image="forge-tests/tiny-base:1", wheels=wheels, log_dir=tmp_path / "logs")
        images = subprocess.run(["docker", "-H", engine.host, "images", "-q", "forge"], capture_output=True, text=True)
    finally:
        engine.stop()
    assert failure.value.code == ErrorCode.DISK_FULL, failure.value.message
    assert "ran out of disk space" in failure.value.message and "prune" in failure.value.fix
    assert images.stdout.strip() == ""


def test_the_build_log_keeps_the_whole_output(forge_image):
    result = BUILT.get("result")
    if result is None:
        pytest.skip("needs the session's own build")
    log = Path(result.log_path).read_text()
    assert "Step 1/" in log and "Successfully built" in log
    check = log[log.index("forgellm.runtime.archcheck") :]  # the arch check is a step of the build
    assert "torch 2.13.0+cpu, CUDA none" in check or "Using cache" in check.split("Step ")[1]
