"""The docker runner against a real engine and a real Forge image (fixtures docker_host, forge_image):
training in containers, streamed events, the container's name and removal, healing after a container
killed from outside or by the kernel's OOM killer."""

from __future__ import annotations

import json
import os
import threading

import pytest
from docker_support import containers_named

from forgellm.runtime.choice import choose_runtime
from forgellm.training.supervisor import run_training

pytestmark = pytest.mark.slow


@pytest.fixture
def docker_runtime(docker_host, forge_image, monkeypatch):
    monkeypatch.setenv("FORGE_DOCKER_IMAGE", forge_image)
    choice = choose_runtime("docker", purpose="Training", gpu_work=True)
    assert choice.name == "docker" and choice.image == forge_image
    return choice


def _train(root, choice, on_event=None):
    from forgellm.project import load_project

    layout, config = load_project(root)
    return run_training(layout, config, on_event=on_event, runner=choice.runner(), runtime=choice.record())


def test_training_runs_in_a_named_container_and_streams_its_events(tiny_train_project, docker_runtime):
    root, _prepared = tiny_train_project(max_steps=6, save_every_steps=3, eval_every_steps=3)
    seen: list[dict] = []
    running: list[str] = []

    def on_event(event: dict) -> None:
        seen.append(event)
        if event["event"] == "step" and not running:  # the container is alive while its events arrive
            running.extend(c.name for c in containers_named(f"forge-{event_run[0]}"))

    event_run: list[str] = []

    def remember(event: dict) -> None:
        if event["event"] == "run":
            event_run.append(event["run_id"])
        on_event(event)

    result = _train(root, docker_runtime, remember)
    assert result.status == "completed", result
    run_id = result.run_id
    assert running == [f"forge-{run_id}-a1"]
    assert not containers_named(f"forge-{run_id}")  # removed after it ended
    kinds = [e["event"] for e in seen]
    assert kinds.count("step") == 6 and "start" in kinds and "end" in kinds
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if m["event"] == "step"] == list(range(1, 7))
    assert (result.run_dir / "checkpoints" / "step-6").is_dir()
    for path in result.run_dir.rglob("*"):
        assert path.stat().st_uid == os.getuid() and path.stat().st_gid == os.getgid(), path
    runtime = json.loads((result.run_dir / "runtime.json").read_text())
    assert runtime["name"] == "docker" and runtime["image"] == docker_runtime.image
    log = (result.run_dir / "logs" / "worker-1.log").read_text()
    assert f"container forge-{run_id}-a1" in log


def test_a_container_killed_from_outside_resumes_from_its_checkpoint(tiny_train_project, docker_runtime):
    root, _prepared = tiny_train_project(max_steps=8, save_every_steps=2, eval_every_steps=4)
    killed = threading.Event()

    def on_event(event: dict) -> None:
        if event["event"] == "checkpoint" and event.get("step") == 2 and not killed.is_set():
            killed.set()
            (container,) = containers_named(f"forge-{run_id[0]}-a1")
            container.kill()  # `docker kill`: from outside, mid-run
        if event["event"] == "run":
            run_id.append(event["run_id"])

    run_id: list[str] = []
    result = _train(root, docker_runtime, on_event)
    assert killed.is_set()
    assert result.status == "completed", result
    (recovery,) = result.recoveries
    assert recovery["kind"] == "killed" and "/checkpoints/step-" in recovery["resume_from"]
    assert result.summary.attempts == 2
    assert not containers_named(f"forge-{result.run_id}")


def test_an_oom_killed_container_is_an_out_of_memory_failure(tiny_train_project, docker_runtime, monkeypatch):
    from forgellm.errors import ErrorCode, ForgeError
    from forgellm.training.protocol import MEMORY_LIMIT_ENV

    root, _prepared = tiny_train_project(max_steps=4, max_recoveries=0)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(64 << 20))  # the container's cgroup: far below torch's import
    with pytest.raises(ForgeError) as caught:
        _train(root, docker_runtime)
    error = caught.value
    assert error.code == ErrorCode.TRAIN_OUT_OF_MEMORY, error
    assert "ran out of memory" in error.message and "OOM killer" in error.message
    assert not containers_named("forge-")
