"""What a container gets (names, mounts, environment), decided without an engine."""

from __future__ import annotations

import signal

from forgellm.runtime.container import (
    CONTAINER_HOME,
    container_name,
    environment,
    local_model,
    plan_mounts,
)
from forgellm.runtime.runner import ContainerProcess


def test_container_names_follow_dockers_rules():
    assert container_name("20261207-0243-my-model", "a1") == "forge-20261207-0243-my-model-a1"
    assert container_name("run with spaces/and:colons", "a2") == "forge-run-with-spaces-and-colons-a2"
    assert len(container_name("x" * 300)) == 128


def test_mounts_project_read_write_inputs_read_only_never_forge_home(tmp_path, isolated_forge_home):
    project, data, model = tmp_path / "project", tmp_path / "data.csv", tmp_path / "model"
    project.mkdir()
    model.mkdir()
    data.write_text("a,b\n")
    (project / "inside").mkdir()
    (isolated_forge_home / "credentials.json").write_text("{}")
    cache = isolated_forge_home / "models"
    cache.mkdir()
    mounts = plan_mounts(
        project,
        read_only=[data, model, project / "inside", tmp_path / "absent", isolated_forge_home],
        writable=[cache],
    )
    assert {(m.path, m.writable) for m in mounts} == {
        (project, True), (cache, True), (data, False), (model, False)
    }  # fmt: skip
    assert all(m.volume()[1]["bind"] == str(m.path) for m in mounts)  # the same path on both sides


def test_environment_passes_keys_only_when_set_and_never_forge_home():
    host = {
        "GEMINI_API_KEY": "g-key", "OPENAI_API_KEY": "", "HF_TOKEN": "hf-key", "FORGE_FAULT": "kill@3",
        "FORGE_HOME": "/root/.forge", "FORGE_WORKER_MEMORY_LIMIT": "1000", "PATH": "/usr/bin", "SECRET_OTHER": "x",
        "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    env = environment(source=host)
    assert env["GEMINI_API_KEY"] == "g-key" and env["HF_TOKEN"] == "hf-key"
    assert "OPENAI_API_KEY" not in env and "GOOGLE_API_KEY" not in env
    assert env["FORGE_FAULT"] == "kill@3" and env["HF_HUB_OFFLINE"] == "1"
    assert env["FORGE_HOME"] == CONTAINER_HOME  # the credentials file under the host's is never read
    assert "FORGE_WORKER_MEMORY_LIMIT" not in env and "PATH" not in env and "SECRET_OTHER" not in env


def test_a_local_model_is_mounted_a_hub_id_is_not(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert local_model("models/mine", tmp_path) == [tmp_path / "models" / "mine"]
    assert local_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == []


def test_container_exit_states_map_to_what_healing_reads():
    process = ContainerProcess.__new__(ContainerProcess)
    process.oom_killed = False
    assert process._code({"ExitCode": 137, "OOMKilled": False}) == -signal.SIGKILL  # `docker kill`: killed
    assert process._code({"ExitCode": 130}) == 130  # the worker's own "interrupted, checkpoint saved"
    assert process._code({"ExitCode": 0}) == 0
    assert process._code({"ExitCode": 137, "OOMKilled": True}) == 3 and process.oom_killed  # ExitCode.OOM
