"""The SkyPilot task `forge cloud launch --dry-run` builds and writes, checked by SkyPilot's own parser,
for every provider; secrets stay out of it; a provider's catalog says which GPUs it has."""

from __future__ import annotations

import json

import pytest
import yaml
from cloud_support import forge, make_project, sky_python, with_runpod_catalog

PROVIDERS = ("runpod", "lambda", "aws", "gcp", "azure", "kubernetes")


def _dry_run(home, project, *args, secrets=None):
    done = forge(home, project, "cloud", "launch", "--dry-run", "--json", *args, secrets=secrets)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_task_of_every_provider_is_valid_by_skypilots_parser(tmp_path, sky_home):
    project = make_project(tmp_path / "proj", model="qwen2.5-7b", method="full")
    # One process builds the six tasks (as `forge cloud launch --dry-run` does) and parses each written file
    # again with SkyPilot, as `sky launch FILE` reads it.
    code = (
        "import json, sky\n"
        "from sky.utils import common_utils\n"
        "from forgellm.cloud.launch import plan_launch\n"
        "from forgellm.project import load_project\n"
        f"layout, config = load_project({str(project)!r})\n"
        "out = {}\n"
        f"for p in {PROVIDERS!r}:\n"
        "    plan = plan_launch(layout, config, provider=p, gpu=None, name='t-' + p)\n"
        "    t = sky.Task.from_yaml_config(common_utils.read_yaml(str(plan.task.path)))\n"
        "    (r,) = t.resources\n"
        "    out[p] = [str(r.cloud).lower(), r.accelerators, r.disk_size, t.num_nodes, t.workdir, t.run]\n"
        "print(json.dumps(out))\n"
    )
    parsed = sky_python(sky_home, code)
    for provider in PROVIDERS:
        cloud, accelerators, disk, nodes, workdir, run = parsed[provider]
        assert cloud == provider
        assert accelerators == {"H100": 4}  # 7B full fine-tune: sharded over 4 x 80 GB (the estimate)
        assert disk >= 100 and nodes == 1 and workdir == str(project.resolve())
        assert "forge train --gpus 4" in run
    assert sorted(p.name for p in (project / ".forge" / "cloud").glob("*.yaml")) == sorted(
        f"t-{p}.yaml" for p in PROVIDERS
    )


def test_a_small_lora_asks_for_one_gpu_with_pip_setup_and_skyignore(tmp_path, sky_home):
    project = make_project(tmp_path / "small")
    summary = _dry_run(sky_home, project, "--provider", "lambda", "--gpu", "L4")
    task = yaml.safe_load(open(summary["task_file"]))
    assert task["resources"] == {"accelerators": "L4:1", "disk_size": 100, "cloud": "lambda"}
    assert task["setup"].startswith("pip install forgellm==")
    assert task["name"] == "forge-small" and summary["task_file"].endswith(".forge/cloud/forge-small.yaml")
    assert "runs/" in (project / ".skyignore").read_text()  # outputs stay home
    with_image = _dry_run(sky_home, project, "--provider", "lambda", "--gpu", "L4", "--image", "ghcr.io/me/forge:ada")
    task = yaml.safe_load(open(with_image["task_file"]))
    assert task["resources"]["image_id"] == "docker:ghcr.io/me/forge:ada" and "setup" not in task


def test_multi_node_task_has_num_nodes_and_node_environment(tmp_path, sky_home):
    project = make_project(tmp_path / "multi", model="qwen2.5-7b", method="full")
    summary = _dry_run(sky_home, project, "--provider", "gcp", "--gpu", "H100:8", "--nodes", "2")
    task = yaml.safe_load(open(summary["task_file"]))
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"] == "H100:8"
    assert '--node-rank "$SKYPILOT_NODE_RANK"' in task["run"] and "SKYPILOT_NODE_IPS" in task["run"]


def test_data_outside_the_project_is_mounted_at_its_own_path(tmp_path, sky_home):
    outside = tmp_path / "elsewhere" / "rows.jsonl"
    outside.parent.mkdir()
    outside.write_text('{"prompt": "a", "response": "b"}\n')
    project = make_project(tmp_path / "proj")
    config = (project / "forge.yaml").read_text().replace("data/train.jsonl", str(outside))
    (project / "forge.yaml").write_text(config)
    task = yaml.safe_load(open(_dry_run(sky_home, project, "--provider", "aws")["task_file"]))
    assert task["file_mounts"] == {str(outside): str(outside)}


def test_no_secret_value_reaches_the_written_task(tmp_path, sky_home):
    secrets = {
        "HF_TOKEN": "hf_SECRET_hub_1234567890",
        "WANDB_API_KEY": "wandb_SECRET_0987654321",
        "OPENAI_API_KEY": "sk-SECRET-openai-abcdef",
    }
    project = make_project(tmp_path / "proj")
    # The Gemini key only in Forge's credentials file, as `forge config set-key` stores it.
    forge_home = tmp_path / "forge-home"
    forge_home.mkdir()
    (forge_home / "credentials.json").write_text(json.dumps({"gemini": "AIza-SECRET-gemini-key"}))
    (forge_home / "credentials.json").chmod(0o600)
    summary = _dry_run(sky_home, project, "--provider", "runpod", secrets={**secrets, "FORGE_HOME": str(forge_home)})
    assert sorted(summary["secrets"]) == ["GEMINI_API_KEY", "HF_TOKEN", "OPENAI_API_KEY", "WANDB_API_KEY"]
    written = "\n".join(p.read_text() for p in (project / ".forge").rglob("*") if p.is_file())
    assert "forge train" in written
    for value in [*secrets.values(), "AIza-SECRET-gemini-key"]:
        assert value not in written
    assert "SECRET" not in written and "envs" not in written


def test_a_provider_without_the_gpu_lists_what_it_has(tmp_path, sky_home):
    with_runpod_catalog(sky_home)
    project = make_project(tmp_path / "proj")
    done = forge(sky_home, project, "cloud", "launch", "--dry-run", "--provider", "runpod", "--gpu", "A100-80GB")
    assert done.returncode == 1
    assert "Error [cloud-gpu-unavailable]: runpod does not offer A100-80GB GPUs." in done.stderr
    assert "H100, L4" in done.stderr and "Traceback" not in done.stderr
    done = forge(sky_home, project, "cloud", "launch", "--dry-run", "--provider", "runpod", "--gpu", "H100:8")
    assert "runpod has no machine with 8 x H100; it has 1, 2, 4 per machine." in done.stderr


def test_cost_comes_from_the_catalog_and_is_unknown_without_one(tmp_path, sky_home):
    project = make_project(tmp_path / "proj", model="qwen2.5-7b", method="full")
    done = forge(sky_home, project, "cloud", "launch", "--dry-run", "--provider", "runpod")
    assert "cost       unknown offline" in done.stdout, done.stderr
    assert "is checked at launch" in done.stdout
    with_runpod_catalog(sky_home)
    summary = _dry_run(sky_home, project, "--provider", "runpod")
    assert (summary["cost_per_hour"], summary["instance_type"]) == (11.96, "4x_H100_SECURE")
    assert summary["catalog_checked"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "H100:three"], "--gpu 'H100:three' is not of the form TYPE or TYPE:COUNT"),
        (["--gpu", "TPU9"], "Forge does not know the GPU 'TPU9'."),
        (["--provider", "oracle"], "Unknown provider 'oracle'."),
        (["--name", "Bad_Name"], "--name 'Bad_Name' is not a cloud machine name."),
    ],
)
def test_bad_launch_options_are_usage_errors(tmp_path, sky_home, args, message):
    done = forge(sky_home, make_project(tmp_path / "proj"), "cloud", "launch", "--dry-run", *args)
    assert done.returncode == 1
    assert "Error [usage-invalid]" in done.stderr and message in done.stderr and "Fix:" in done.stderr
    assert not (tmp_path / "proj" / ".forge" / "cloud").exists() or not any(
        (tmp_path / "proj" / ".forge" / "cloud").glob("*.yaml")
    )


def test_secrets_reach_skypilots_task_in_memory_only(tmp_path, sky_home):
    """What `forge cloud launch` hands sky.launch: the written task plus the secrets as envs; the file on
    disk is the same before and after."""
    project = make_project(tmp_path / "proj")
    code = (
        "import json\n"
        "from forgellm.cloud import sky_api\n"
        "from forgellm.cloud.keys import cloud_secrets\n"
        "from forgellm.cloud.launch import plan_launch\n"
        "from forgellm.project import load_project\n"
        f"layout, config = load_project({str(project)!r})\n"
        "plan = plan_launch(layout, config, provider='runpod', gpu='H100:1')\n"
        "before = plan.task.path.read_text()\n"
        "task = sky_api.sky_task(plan.task, cloud_secrets())\n"
        "print(json.dumps([task.envs, before == plan.task.path.read_text(), before]))\n"
    )
    env_secrets = {"HF_TOKEN": "hf_SECRET_in_memory", "WANDB_API_KEY": "wandb_SECRET_in_memory"}
    envs, unchanged, written = sky_python(sky_home, code, env_secrets)
    assert envs == env_secrets and unchanged
    assert "SECRET" not in written
