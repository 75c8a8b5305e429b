"""`forge cloud launch|status|logs|down` where no cloud can be reached and no credential exists: each goes
through SkyPilot's real code (its credential checks, its cluster table) and ends in a clear ForgeError."""

from __future__ import annotations

import json

from cloud_support import forge, make_project


def _error(done) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and "Internal error" not in done.stderr
    return done.stderr


def test_launch_without_credentials_names_the_provider_and_sky_check(tmp_path, sky_home):
    project = make_project(tmp_path / "proj")
    err = _error(forge(sky_home, project, "cloud", "launch", "--provider", "lambda", "--gpu", "A10G", "--yes"))
    assert "Error [cloud-no-access]: SkyPilot cannot use lambda:" in err
    assert "lambda_keys" in err  # SkyPilot's own reason: where Lambda's API key goes
    assert "`sky check lambda`" in err
    assert not (project / ".forge" / "cloud" / "state.json").exists()  # nothing launched, nothing recorded
    assert (project / ".forge" / "cloud" / "forge-proj.yaml").is_file()  # the task is there to read


def test_launch_with_no_cloud_set_up_points_to_sky_check(tmp_path, sky_home):
    err = _error(forge(sky_home, make_project(tmp_path / "proj"), "cloud", "launch", "--gpu", "L4", "--yes"))
    assert "Error [cloud-no-access]: No cloud is set up for SkyPilot" in err and "sky check" in err


def test_launch_with_a_key_file_but_no_network_says_skypilot_could_not_verify(tmp_path, sky_home):
    # Lambda's credential is an API key file; SkyPilot's check then asks Lambda's API, which is unreachable here.
    key = sky_home / ".lambda_cloud" / "lambda_keys"
    key.parent.mkdir()
    key.write_text("api_key = not-a-real-key\n")
    err = _error(
        forge(sky_home, make_project(tmp_path / "proj"), "cloud", "launch", "--provider", "lambda", "--gpu", "A10G")
    )
    assert "Error [cloud-no-access]: SkyPilot cannot use lambda: Failed to verify Lambda Cloud credentials." in err
    assert "network" in err and "`sky check lambda`" in err


def test_status_logs_down_before_any_launch(tmp_path, sky_home):
    project = make_project(tmp_path / "proj")
    for command in ("status", "logs", "down"):
        err = _error(forge(sky_home, project, "cloud", command))
        assert "Error [cloud-no-cluster]: No cloud machine was launched from this project." in err
        assert "forge cloud launch" in err


def test_status_logs_down_of_a_machine_skypilot_does_not_know(tmp_path, sky_home):
    project = make_project(tmp_path / "proj")
    state = {"cluster": "forge-gone", "provider": "runpod", "accelerators": "H100:1", "nodes": 1,
             "task_file": "x", "launched_at": "2026-01-01T00:00:00+00:00", "job_id": 1, "version": 1}  # fmt: skip
    (project / ".forge" / "cloud").mkdir(parents=True)
    (project / ".forge" / "cloud" / "state.json").write_text(json.dumps(state))
    err = _error(forge(sky_home, project, "cloud", "status"))
    assert "Error [cloud-no-cluster]: SkyPilot knows no cloud machine named 'forge-gone'" in err
    err = _error(forge(sky_home, project, "cloud", "logs", "--follow"))
    assert "Error [cloud-no-cluster]: The cloud machine 'forge-gone' is not up" in err
    err = _error(forge(sky_home, project, "cloud", "down"))
    assert "Error [cloud-no-cluster]" in err and "forge-gone" in err


def test_without_skypilot_the_fix_is_the_cloud_extra(tmp_path, sky_home):
    hidden = tmp_path / "no-sky"
    hidden.mkdir()
    # A `sky` that fails to import, first on the path: what Python does when SkyPilot is not installed.
    (hidden / "sky.py").write_text("raise ImportError('No module named sky')\n")
    err = _error(forge(sky_home, make_project(tmp_path / "proj"), "cloud", "launch", "--dry-run", path=str(hidden)))
    assert "Error [dependency-missing]: Cloud GPUs need SkyPilot, which is not installed." in err
    assert "pip install 'forgellm[cloud]'" in err


def test_help_speaks_to_a_person(tmp_path, sky_home):
    done = forge(sky_home, tmp_path, "cloud", "--help")
    assert done.returncode == 0
    for words in ("Train on rented cloud GPUs", "launch", "status", "logs", "down"):
        assert words in done.stdout
    done = forge(sky_home, tmp_path, "cloud", "launch", "--help")
    assert "sized from the memory estimate" in done.stdout and "--dry-run" in done.stdout
