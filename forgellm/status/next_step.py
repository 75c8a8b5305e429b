"""The one command a newcomer should run next, read off a status report, with the reason in plain words."""

from __future__ import annotations

import shlex
from typing import Any

_RETRY_AFTER_FIX = ("config", "data")  # failures that resuming cannot heal: fix the cause, start again


def _goal(report: dict[str, Any]) -> str:
    goal = (report.get("plan") or {}).get("goal")
    return shlex.quote(goal) if goal else '"GOAL"'


def _file(report: dict[str, Any]) -> str:
    """The data file as the user types it (from forge.yaml's data.source when it exists), else FILE."""
    data = report.get("data") or {}
    if data.get("source_exists"):
        return data["prepare_command"].removeprefix("forge prepare ")
    return "FILE"


def _step(command: str, reason: str, *alternatives: str) -> dict[str, Any]:
    return {"command": command, "reason": reason, "alternatives": list(alternatives)}


def next_step(report: dict[str, Any]) -> dict[str, Any]:
    """{command, reason, alternatives}: the first stage still to do, in the order of the workflow."""
    if not report["found"]:
        return _step(
            "forge init",
            "There is no Forge project here (no forge.yaml in this folder or above).",
            'forge ignite FILE "GOAL"',
        )
    plan = report["plan"]
    if not plan["valid"]:
        count = len(plan["problems"])
        return _step("forge config validate", f"forge.yaml has {count} problem{'s' * (count != 1)}; fix them first.")
    model = report["model"]
    if not model["ok"]:
        return _step("forge models", f"model.ref '{model['ref']}' cannot be used: {model['problem']}")
    runs = report["runs"]
    running = [run for run in runs if run["state"] == "running"]
    if running or report.get("training_now"):
        run = running[-1] if running else {"id": "(starting)", "pid": report["training_now"].get("pid")}
        return _step(
            "forge status",
            f"Run {run['id']} is training now (process {run['pid']}); check again when it ends, or stop it with "
            "Ctrl-C in its terminal (`forge train --resume` continues it).",
        )
    return _before_training(report) or _after_data(report)


def _before_training(report: dict[str, Any]) -> dict[str, Any] | None:
    plan, data = report["plan"], report["data"]
    key = (report.get("advisor") or {}).get("key")
    needs_key = key is not None and not key.get("available")
    provider = (report.get("advisor") or {}).get("provider")
    login = _step(
        f"forge login --provider {provider}",
        f"The {provider} advisor needs an API key to plan (or choose the offline one: `forge plan --advisor rules`).",
    )
    fresh = not plan["planned"] and data["state"] == "none" and not report["runs"] and not report["exports"]
    file, goal = _file(report), _goal(report)
    if fresh:
        if needs_key:
            return login
        return _step(
            f"forge ignite {file} {goal}",
            "Nothing is done yet: ignite plans, prepares, trains, evaluates and exports in one go.",
            f"forge plan {goal} --data {file}",
        )
    missing = data["source"] and data["source_exists"] is False
    lost = f" (data.source {data['source']} is not there: give the file's path)" if missing else ""
    if data["state"] == "none":
        if not plan["planned"]:
            return login if needs_key else _step(f"forge plan {goal} --data {file}", "There is no plan yet." + lost)
        return _step(f"forge prepare {file}", "The data is not prepared for training yet." + lost)
    if data["state"] == "interrupted":
        return _step(f"forge prepare {file}", "A preparation was interrupted; the same command resumes it." + lost)
    if data["state"] == "stale":
        return _step(f"forge prepare {file}", "stale: " + "; ".join(data["stale_reasons"]) + "." + lost)
    return None


def _after_data(report: dict[str, Any]) -> dict[str, Any]:
    runs = report["runs"]
    if not runs:
        return _step("forge train", "The data is prepared; no training run yet.")
    last = runs[-1]
    if last["state"] in ("interrupted", "incomplete", "damaged", "failed"):
        return _unfinished(last)
    completed = [run for run in runs if run["state"] == "completed"]
    newest = completed[-1]
    if newest["on_current_data"] is False:
        return _step("forge train", f"The data was prepared again after run {newest['id']}; train on the new data.")
    exported = [e for e in report["exports"] if e["complete"] and e["run_id"] == newest["id"]]
    evaluation = report.get("eval") or {}
    if not exported and evaluation.get("run_id") != newest["id"]:
        return _step("forge eval", f"Run {newest['id']} is trained; compare it with the base model.", "forge export")
    if not exported:
        return _step("forge export", f"Run {newest['id']} is evaluated; make GGUF files and an Ollama model.")
    export = exported[0]
    also = []
    ollama = export["ollama"]
    if ollama["registered"] and ollama["model"]:
        also.append(f"ollama run {ollama['model']}")
    elif ollama["command"]:
        also.append(ollama["command"])
    return _step("forge inference", f"Export {export['name']} is ready; chat with it.", *also)


def _unfinished(run: dict[str, Any]) -> dict[str, Any]:
    where = f"step {run['steps']}" + (f" of {run['total_steps']}" if run["total_steps"] else "") if run["steps"] else ""
    if run["state"] == "failed":
        why = f"Run {run['id']} failed ({run['reason'] or 'unknown cause'}): {run['message'] or 'see its logs/'}."
        if run["resumable"] and run["reason"] not in _RETRY_AFTER_FIX:
            return _step(f"forge train --resume {run['id']}", why, "forge train")
        return _step("forge train", why + " Fix the cause, then start a new run.")
    stopped = {"interrupted": "was interrupted", "incomplete": "stopped without finishing"}.get(
        run["state"], "has damaged records"
    )
    if run["resumable"]:
        at = f" at {where}" if where else ""
        return _step(
            f"forge train --resume {run['id']}",
            f"Run {run['id']} {stopped}{at}; resume it from its last checkpoint (step {run['last_checkpoint_step']}).",
            "forge train",
        )
    return _step("forge train", f"Run {run['id']} {stopped} before its first checkpoint; start a new run.")
