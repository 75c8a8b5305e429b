"""`--runtime` of the CLI: the choice said in one line, explicit docker's errors, and stages run in a
container of a real engine (prepare's data, Ctrl-C of `forge train`, API keys as environment only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docker_support import NO_DOCKER, containers_named
from typer.testing import CliRunner

from forgellm.cli.main import app

runner = CliRunner()
_CODE = "from forgellm.cli.main import run; run()"


def _forge(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CODE, *args], text=True, **popen)


def test_auto_without_an_engine_trains_locally_and_says_why(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project(max_steps=1, save_every_steps=1, eval_every_steps=1)
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    result = runner.invoke(app, ["train", "-C", str(root)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "Runtime: local — auto: no Docker engine answers" in result.output
    (run_dir,) = (root / "runs").iterdir()
    recorded = json.loads((run_dir / "runtime.json").read_text())
    assert recorded["name"] == "local" and "no Docker engine answers" in recorded["reason"]


def test_explicit_docker_without_an_engine_is_a_clear_error(tiny_train_project, monkeypatch):
    root, _ = tiny_train_project()
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    for command in (["train"], ["export"], ["prepare", str(root / "forge.yaml")]):
        result = runner.invoke(app, [*command, "-C", str(root), "--runtime", "docker"])
        assert result.exit_code == 1, result.output
        assert "docker-unavailable" in result.output and "needs an engine" in result.output
        assert "Install Docker" in result.output and "Traceback" not in result.output
    assert not (root / "runs").exists()


def test_runtime_in_forge_yaml_and_the_flag_over_it(tiny_train_project, monkeypatch):
    from forgellm.config.schema import ForgeConfig

    assert ForgeConfig().runtime == "auto"
    root, _ = tiny_train_project(max_steps=1)
    text = (root / "forge.yaml").read_text()
    assert "\nruntime: auto" in text  # written with its description, like every key
    (root / "forge.yaml").write_text(text.replace("\nruntime: auto", "\nruntime: docker"))
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    refused = runner.invoke(app, ["train", "-C", str(root)])
    assert refused.exit_code == 1 and "docker-unavailable" in refused.output
    local = runner.invoke(app, ["train", "-C", str(root), "--runtime", "local"])
    assert local.exit_code == 0 and "Runtime: local — runtime: local was asked for" in local.output


@pytest.mark.slow
def test_a_missing_image_offers_forge_docker_build(tiny_train_project, docker_host, monkeypatch):
    root, _ = tiny_train_project()
    monkeypatch.setenv("FORGE_DOCKER_IMAGE", "forge-test-missing:none")
    result = runner.invoke(app, ["train", "-C", str(root), "--runtime", "docker"])
    assert result.exit_code == 1, result.output
    assert "docker-image-missing" in result.output and "forge docker build --arch cpu" in result.output
    auto = runner.invoke(app, ["train", "-C", str(root), "--max-steps", "1"])
    assert auto.exit_code == 0, auto.output
    assert "Runtime: local — auto: the image forge-test-missing:none is not built" in auto.output


@pytest.mark.slow
def test_prepare_in_docker_publishes_the_same_data_as_local(tiny_train_project, _support_csv, docker_host, forge_image):
    root, prepared = tiny_train_project()
    fingerprint = prepared.name
    import shutil

    shutil.rmtree(prepared.parent)
    env = {**os.environ, "FORGE_DOCKER_IMAGE": forge_image, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", _CODE, "prepare", str(_support_csv), "-C", str(root), "--runtime", "docker"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Runtime: docker" in done.stderr
    assert (prepared.parent / fingerprint).is_dir(), list(prepared.parent.iterdir())
    for path in prepared.parent.rglob("*"):
        assert path.stat().st_uid == os.getuid(), path
    assert not containers_named(f"forge-{root.name}-prepare")
    # The forge inside failed: its own message, once, and its exit code; no traceback.
    missing = subprocess.run(
        [sys.executable, "-c", _CODE, "prepare", str(root / "absent.csv"), "-C", str(root), "--runtime", "docker"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    output = missing.stdout + missing.stderr
    assert missing.returncode == 1 and output.count("Error [") == 1 and "Traceback" not in output, output


@pytest.mark.slow
def test_ctrl_c_stops_the_container_and_leaves_none(tiny_train_project, docker_host, forge_image):
    from forgellm.training.runs import list_runs
    from forgellm.training.summary import read_metrics

    root, _ = tiny_train_project(max_steps=200, save_every_steps=50, eval_every_steps=50)
    env = {**os.environ, "FORGE_DOCKER_IMAGE": forge_image, "PYTHONPATH": os.getcwd()}
    process = _forge("train", "-C", str(root), "--runtime", "docker", env=env, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        runs = list_runs(root)
        if runs and any(r["event"] == "step" for r in read_metrics(runs[0])):
            break
        time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError("no step came: " + process.communicate()[1][-3000:])
    (run_dir,) = runs
    assert containers_named(f"forge-{run_dir.name}-a1")
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    records = read_metrics(run_dir)
    assert any(r["event"] == "checkpoint" and r.get("reason") == "signal" for r in records), records[-3:]
    assert not containers_named(f"forge-{run_dir.name}")


@pytest.mark.slow
def test_keys_are_the_containers_environment_only(tmp_path, docker_host, forge_image, monkeypatch, capfd):
    from forgellm.config.settings import credentials_path
    from forgellm.runtime.choice import choose_runtime

    secret = "forge-test-secret-0123456789"
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret + "-hf")
    monkeypatch.setenv("FORGE_DOCKER_IMAGE", forge_image)
    credentials = credentials_path()
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text('{"gemini": "stored-key"}')
    project = tmp_path / "project"
    project.mkdir()
    choice = choose_runtime("docker", purpose="Testing", gpu_work=False)
    probe = (
        "import os, pathlib; print('KEYS', os.environ.get('GEMINI_API_KEY'), os.environ.get('HF_TOKEN'), "
        f"os.environ.get('OPENAI_API_KEY'), pathlib.Path({str(credentials)!r}).exists()); "
        "pathlib.Path('out.txt').write_text('written inside')"
    )
    code = choice.runner().run_command("forge-test-keys", ["python", "-c", probe], project, project_dir=project)
    assert code == 0
    out = capfd.readouterr().out
    assert f"KEYS {secret} {secret}-hf None False" in out  # unset keys are not passed; no credentials file
    assert (project / "out.txt").read_text() == "written inside"
    attrs = choice.client.images.get(forge_image).attrs
    assert secret not in json.dumps(attrs)
    for path in Path(project).rglob("*"):
        assert secret not in path.read_text(errors="replace")
    assert not containers_named("forge-test-keys")


@pytest.mark.slow
def test_ignite_in_docker_plans_here_and_runs_prepare_train_export_incontainers_named(
    tmp_path, tiny_causal_lm_dir, _support_csv, docker_host, forge_image, monkeypatch
):
    monkeypatch.setenv("FORGE_DOCKER_IMAGE", forge_image)
    monkeypatch.setenv("FORGE_TRAINING__SAVE_EVERY_STEPS", "2")
    project = tmp_path / "bot"
    args = ["ignite", str(_support_csv), "Make a customer support bot", "--model", str(tiny_causal_lm_dir),
            "--max-steps", "2", "--yes", "-C", str(project), "--runtime", "docker"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-4000:]
    assert "Runtime: docker (image " + forge_image in result.output
    state = json.loads((project / ".forge" / "ignite.json").read_text())
    assert set(state["done"]) == {"init", "study", "plan", "prepare", "train", "eval", "export"}
    (run_dir,) = (project / "runs").iterdir()
    assert json.loads((run_dir / "runtime.json").read_text())["name"] == "docker"
    assert (project / "exports" / "bot" / "metadata.json").is_file()
    assert not containers_named("forge-")
