"""`forge prepare --script`: the advisor writes a Python script for a transformation a recipe cannot
express; Forge saves it where the user can read it, runs it in a sandbox, keeps only valid output.

The script gets a sample of the data (cut and PII-masked like any advisor request), never the file.
Its output must be JSONL conversations; valid lines are published atomically under
``data/scripted/<input-stem>.jsonl``, which `forge prepare` then processes like any other input.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgellm.advisor.sandbox import Runtime, SandboxLimits, SandboxResult, run_sandboxed
from forgellm.errors import ErrorCode, ForgeError
from forgellm.files import atomic_write_text
from forgellm.project.layout import ProjectLayout

if TYPE_CHECKING:
    from forgellm.advisor.protocol import Advisor
    from forgellm.config.schema import ForgeConfig
    from forgellm.data.prepare.run import PrepareHooks, PrepareResult

OUTPUT_NAME = "output.jsonl"
MAX_INVALID_SHARE = 0.1  # more bad lines than this means the script misunderstood the data
MAX_LISTED_PROBLEMS = 10
_ROLES = ("system", "user", "assistant")


@dataclass
class ScriptRun:
    output_path: Path  # data/scripted/<input-stem>.jsonl, valid conversations only
    script_path: Path  # .forge/scripts/<hash>.py, for the user to read
    explanation: str
    rows_written: int
    invalid_lines: int
    problems: list[str]  # "line N: why", the first few
    sandbox: SandboxResult
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the advisor's: what was sent where, fallbacks

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_path": str(self.output_path),
            "script_path": str(self.script_path),
            "explanation": self.explanation,
            "rows_written": self.rows_written,
            "invalid_lines": self.invalid_lines,
            "problems": self.problems,
            "runtime": self.sandbox.runtime,
            "seconds": round(self.sandbox.duration, 2),
            "warnings": self.warnings,
            "notes": self.notes,
        }


def prepare_with_script(
    layout: ProjectLayout,
    config: ForgeConfig,
    input_path: Path,
    instructions: str,
    *,
    allow_unsandboxed: bool = False,
    restart: bool = False,
    chunk_rows: int | None = None,
    hooks: PrepareHooks | None = None,
) -> tuple[ScriptRun, PrepareResult]:
    """What `forge prepare FILE --script TEXT` does: advisor script, sandboxed run, normal prepare."""
    from forgellm.advisor.select import make_advisor
    from forgellm.data.prepare.run import prepare_dataset

    project_dir = layout.root.resolve()
    advisor = make_advisor(config.advisor, project_dir)
    run = run_advisor_script(
        project_dir,
        input_path,
        instructions,
        advisor,
        allow_unsandboxed=allow_unsandboxed,
        runtime=config.advisor.sandbox,
        sample_rows=config.advisor.sample_rows,
        redact_pii=config.advisor.redact_pii,
    )
    if config.data.format not in ("auto", "messages"):
        # forge.yaml's recipe describes the raw input; the script's output is conversations: prepare detects
        # them again, and writes the detection into forge.yaml only once the output prepared successfully.
        run.warnings.append(
            f"forge.yaml said data.format: {config.data.format}; the script writes conversations, "
            "so data.format and data.recipe were detected again from its output."
        )
        config = config.model_copy(deep=True)
        config.data.format = "auto"
    result = prepare_dataset(layout, config, run.output_path, restart=restart, chunk_rows=chunk_rows, hooks=hooks)
    return run, result


def run_advisor_script(
    project_dir: Path,
    input_path: Path,
    instructions: str,
    advisor: Advisor,
    *,
    allow_unsandboxed: bool = False,
    runtime: Runtime = "auto",
    limits: SandboxLimits | None = None,
    sample_rows: int = 5,
    redact_pii: bool = True,
) -> ScriptRun:
    """Ask ``advisor`` for a script, run it sandboxed on ``input_path``, validate and publish its output."""
    from forgellm.advisor.sandbox import choose_runtime

    project_dir, input_path = project_dir.resolve(), input_path.resolve()
    if not instructions.strip():
        raise ForgeError(
            "--script needs instructions in plain words.",
            fix='e.g. --script "Make each thread a chat".',
            code=ErrorCode.USAGE_INVALID,
        )
    # Refuse before asking a remote advisor: no point paying for a script that cannot run.
    choose_runtime(runtime, allow_unsandboxed=allow_unsandboxed)
    proposal = advisor.write_script(_script_request(input_path, instructions, sample_rows, redact_pii))
    script_path = _save_script(project_dir, proposal.code, instructions, proposal.explanation, advisor.name)
    runs = ProjectLayout(project_dir).script_runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{script_path.stem}-", dir=runs))
    result = run_sandboxed(
        script_path, workdir, [input_path], runtime=runtime, limits=limits, allow_unsandboxed=allow_unsandboxed
    )
    _check_finished(result, workdir, script_path)
    target = ProjectLayout(project_dir).scripted_data(input_path.stem)
    written, invalid, problems = publish_conversations(workdir / OUTPUT_NAME, target, script_path)
    shutil.rmtree(workdir, ignore_errors=True)
    return ScriptRun(
        target,
        script_path,
        proposal.explanation,
        written,
        invalid,
        problems,
        result,
        warnings=list(result.warnings),
        notes=list(advisor.notes),
    )


def _script_request(input_path: Path, instructions: str, sample_rows: int, redact_pii: bool):
    from forgellm.advisor.sampling import build_data_request
    from forgellm.advisor.schemas import ScriptRequest
    from forgellm.data.read.readers import open_dataset, sample_records

    dataset = open_dataset(input_path)
    # The script must handle every row, so it sees at least a few even when the settings say 0.
    wanted = max(sample_rows, 3)
    data = build_data_request(
        sample_records(dataset, 1000),
        file_name=input_path.name,
        kind=dataset.info.kind,
        goal=instructions,
        hint=None,
        sample_rows=wanted,
        redact_pii=redact_pii,
    )
    return ScriptRequest(
        instructions=instructions,
        input_name=input_path.name,
        kind=dataset.info.kind,
        rows=data.rows,
        output_name=OUTPUT_NAME,
    )


def _save_script(project_dir: Path, code: str, instructions: str, explanation: str, advisor_name: str) -> Path:
    """The script under .forge/scripts/<hash>.py (same code, same name) with what it was asked for."""
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()[:12]
    folder = ProjectLayout(project_dir).scripts_dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.py"
    atomic_write_text(path, code)
    about = {"instructions": instructions, "explanation": explanation, "advisor": advisor_name}
    atomic_write_text(folder / f"{digest}.json", json.dumps(about, indent=2, ensure_ascii=False) + "\n")
    return path


def _check_finished(result: SandboxResult, workdir: Path, script_path: Path) -> None:
    output = workdir / OUTPUT_NAME
    if output.is_symlink():  # a link could make Forge read a file the sandbox kept from the script
        raise ForgeError(
            f"The advisor's script made {OUTPUT_NAME} a link instead of writing it; it was not read.",
            fix=f"Read the script at {script_path}; it must write {OUTPUT_NAME} in its own folder.",
            code=ErrorCode.SCRIPT_FAILED,
        )
    if result.ok and output.is_file() and output.stat().st_size > 0:
        return
    if result.killed_reason:
        what = f"The advisor's script was stopped: {result.killed_reason}."
    elif result.returncode != 0:
        what = f"The advisor's script failed (exit status {result.returncode})."
    else:
        what = f"The advisor's script finished but wrote no {OUTPUT_NAME}."
    tail = [f"stderr: {line}" for line in result.stderr_tail.strip().splitlines()[-8:]]
    tail = tail or [f"stdout: {line}" for line in result.stdout_tail.strip().splitlines()[-4:]]
    raise ForgeError(
        what,
        details=tail,
        fix=f"Read the script at {script_path} (its working folder is kept at {workdir}); describe the "
        "transformation more precisely in --script and run the command again.",
        code=ErrorCode.SCRIPT_FAILED,
    )


def publish_conversations(source: Path, target: Path, script_path: Path) -> tuple[int, int, list[str]]:
    """Copy the valid conversations of ``source`` to ``target`` (atomically); count and list the rest.
    Raises ForgeError when none is valid or too many are not."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = invalid = 0
    problems: list[str] = []
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", suffix=".partial", delete=False
    ) as out:
        partial = Path(out.name)
        with source.open("r", encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                messages, why = conversation_of(line)
                if messages is None:
                    invalid += 1
                    if len(problems) < MAX_LISTED_PROBLEMS:
                        problems.append(f"line {number}: {why}")
                    continue
                out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")
                written += 1
    total = written + invalid
    if written == 0 or invalid > MAX_INVALID_SHARE * total:
        partial.unlink(missing_ok=True)
        raise ForgeError(
            f"The advisor's script wrote {invalid:,} invalid lines out of {total:,} "
            f"(at most {MAX_INVALID_SHARE:.0%} may be invalid); nothing was kept.",
            details=problems,
            fix=f"Read the script at {script_path}: each line of {OUTPUT_NAME} must be "
            '{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}. '
            "Describe the output more precisely in --script and run again.",
            code=ErrorCode.SCRIPT_FAILED,
        )
    partial.replace(target)
    return written, invalid, problems


def conversation_of(line: str) -> tuple[list[dict[str, str]] | None, str]:
    """The messages of one output line, or None and why the line is not a usable conversation."""
    try:
        value = json.loads(line)
    except ValueError as exc:
        return None, f"not JSON ({exc.msg})"
    if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
        return None, 'not an object with a "messages" list'
    messages = []
    for position, message in enumerate(value["messages"], start=1):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            return None, f"message {position} has no role among {', '.join(_ROLES)}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return None, f"message {position} has no text content"
        messages.append({"role": message["role"], "content": content})
    roles = {m["role"] for m in messages}
    if "user" not in roles or "assistant" not in roles:
        return None, "needs at least one user and one assistant message"
    # Then the checks prepare applies to every conversation (order of turns, system turns, cleaning), so
    # a line kept here is one prepare will train on.
    from forgellm.config.schema import RecipeSection
    from forgellm.data.prepare.recipe import to_example
    from forgellm.data.read.records import RecipeError, Record

    try:
        to_example(Record(line=0, fields={"messages": messages}), "messages", RecipeSection())
    except RecipeError as exc:
        return None, str(exc)
    return messages, ""
